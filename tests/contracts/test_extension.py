"""An extension's parameters: the parent's, the request's on top, what must match refused in one line."""

import pytest
from pydantic import ValidationError

from contracts.extension import ExtensionRefused, extension_params
from contracts.params import GenerationParams, Resolution

PARENT = GenerationParams(duration=2, fps=12, steps=5, seed=9, motion_bucket_id=90, format="webm", loop="pingpong")


def test_an_extension_takes_the_parents_parameters_with_the_changes_on_top() -> None:
    params = extension_params(PARENT, 256, 192, 24, {"duration": 3, "steps": 2})

    assert (params.duration, params.steps, params.fps, params.motion_bucket_id) == (3, 2, 12, 90)
    assert params.resolution == Resolution(width=256, height=192)
    assert (params.format, params.loop, params.seed) == ("webm", "none", -1)  # no loop; a fresh seed to draw
    assert extension_params(PARENT, 256, 192, 24, {"seed": 4}).seed == 4


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"fps": 24}, "fps", "fps: an extension keeps its parent's 12; leave fps out (got 24)"),
        ({"resolution": "512x384"}, "resolution", "resolution: an extension keeps its parent's '256x192'"),
        ({"loop": "crossfade"}, "loop", "loop: an extension keeps always 'none'"),
        ({"colour": "red"}, "colour", "colour: not a parameter of an extension"),
    ],
)
def test_what_must_match_the_parent_is_refused_naming_the_field(
    changes: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(ExtensionRefused) as refused:
        extension_params(PARENT, 256, 192, 24, changes)

    assert refused.value.field == field
    assert str(refused.value).startswith(message)


def test_the_parents_own_values_may_be_named() -> None:
    params = extension_params(PARENT, 256, 192, 24, {"fps": 12, "resolution": "256x192", "format": "webm"})

    assert params.fps == 12


def test_values_are_checked_strictly_as_json_is() -> None:
    with pytest.raises(ValidationError, match="duration"):
        extension_params(PARENT, 256, 192, 24, {"duration": "3"})


def test_the_whole_video_must_fit_the_pixel_limit() -> None:
    # 1280x704 holds 196 frames: 7 s at 24 fps leave room for 28 more, so 1 s but not 2.
    parent = GenerationParams(duration=7, fps=24)
    assert extension_params(parent, 1280, 704, 168, {"duration": 1}).duration == 1

    with pytest.raises(ExtensionRefused, match=r"the extended video would be 216 frames .* at most 28 more frames"):
        extension_params(parent, 1280, 704, 168, {"duration": 2})
