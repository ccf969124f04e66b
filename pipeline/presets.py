"""Presets: the knobs a picture calls for, chosen from what it shows, with a reason for each.

A preset (``portrait``, ``landscape``, ``product``, or ``auto`` to pick one) fills only the parameters the
user left unset: a parameter given explicitly always wins. The cues are read with OpenCV from a small
copy of the picture (about 70 ms of CPU, most of it the face cascades):

* a face: the largest face box OpenCV's Haar cascades find (frontal, also turned 20 degrees either way
  for a tilted head, and profile facing either side) whose middle is mostly skin-toned: the skin check cuts the
  cascades' hits on cars, walls and cartoon fur. The cascades ship in the opencv-python-headless 4 wheel;
  5.0 dropped ``CascadeClassifier`` and the cascade files from it;
* sky (blue, or bright and grey, and smooth) in the upper half; water (blue, any texture) in the lower
  half; greenery (green and textured: leaves, grass) anywhere;
* a plain background: the share of the border band within a small colour distance of its median.

Submission resolves a preset before the job is priced, so the price is that of the values it chose; the
job records the preset applied (``auto`` is recorded as the one it picked) and those values.
"""

import io
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from cv2.data import haarcascades
from numpy.typing import NDArray
from PIL import Image

from contracts.params import MAX_VIDEO_PIXELS, GenerationParams, check_video_size

Picture = NDArray[np.uint8]
"""RGB, (height, width, 3)."""
Chosen = Literal["portrait", "landscape", "product"]

CUE_SIDE = 256
"""Longest side the cues are read at: statistics of regions, not detail, so a small copy says as much."""
FACE_MIN_SHARE = 0.02
"""Smallest share of the picture a face box must cover to make it a portrait (a face far off in a
landscape does not); also the smallest face the cascades look for."""
FACE_SKIN_SHARE = 0.4
"""Share of a face box's middle that must be skin-toned for the box to count as a face."""
PLAIN_BORDER_SHARE = 0.85
"""Share of the border that must be one colour for a plain (studio) background."""
SKY_SHARE, WATER_SHARE, GREENERY_SHARE = 0.25, 0.25, 0.20
"""Shares of the upper half (sky), the lower half (water) and the whole picture (greenery) past which
the landscape preset counts that cue as present."""
_BORDER_FRACTION = 0.08
_PLAIN_DISTANCE = 12.0
"""CIELAB distance (in OpenCV's 8-bit scale) within which a border pixel counts as the border's colour:
about what JPEG noise and a soft studio gradient move a plain backdrop."""
_MIN_FPS = 4
"""The lowest fps GenerationParams takes."""
_SMOOTH, _TEXTURED = 6.0, 4.0
_FACE_TILTS = (0.0, 20.0, -20.0)
"""Angles the frontal cascade also reads the picture at: it misses heads tilted by more than about 15
degrees (the carphone clip's second half)."""
_FACE_NEIGHBOURS = 5
"""Overlapping hits a cascade needs to report a face: 3 lets street scenes through, 8 loses tilted faces."""
"""Local standard deviation of grey (7x7) below which sky is smooth, above which greenery is foliage."""

PORTRAIT: dict[str, Any] = {"motion_bucket_id": 60, "augmentation_level": 0.1, "cfg_scale": 2.0}
LANDSCAPE_TIMING: dict[str, Any] = {"duration": 6, "fps": 12}
LANDSCAPE_MOTION = {"water": 100, "greenery": 85, "sky": 70}
"""Motion by the liveliest cue seen: waves move most, leaves less, clouds drift; 70 when none is seen."""
PRODUCT: dict[str, Any] = {
    "motion_bucket_id": 150,
    "duration": 8,
    "fps": 24,
    "loop": "pingpong",
    "augmentation_level": 0.3,
}


@dataclass(frozen=True)
class Cues:
    """What the picture shows, each as a share from 0 to 1."""

    face: float
    """Share of the picture the largest face box (Haar cascades, skin-toned in its middle) covers; 0 when none."""
    sky: float
    """Share of the upper half that is sky: blue, or bright and grey, and smooth."""
    water: float
    """Share of the lower half that is blue: water (or sky reaching down)."""
    greenery: float
    """Share of the picture that is green and textured: trees, bushes, grass."""
    plain_border: float
    """Share of the border band (8 % of the short side) within a small colour distance of its median."""


@dataclass(frozen=True)
class Suggestion:
    """A preset resolved against a picture: the params to use, and what the preset set and why."""

    preset: Chosen
    params: GenerationParams
    values: dict[str, Any]
    """The parameters the preset set (those the user gave are not here: they win)."""
    reasons: dict[str, str]
    """One line per parameter in ``values``, and ``preset`` for why this preset."""
    cues: Cues
    kept: list[str] = field(default_factory=list)
    """Parameters the preset would have set but the user gave."""

    def as_json(self) -> dict[str, Any]:
        """The suggestion as ``POST /v1/suggest`` and ``i2v suggest --json`` answer it."""
        return {
            "preset": self.preset,
            "params": dict(self.values),
            "reasons": dict(self.reasons),
            "kept": list(self.kept),
            "cues": {name: round(share, 3) for name, share in asdict(self.cues).items()},
        }


def small_picture(data: bytes) -> Picture:
    """The upload as RGB, upright, transparency on white as ingest makes it, at most
    :data:`CUE_SIDE` on its longest side. Call it on an upload already checked
    (``pipeline.image.check_image``); a JPEG decodes at a reduced scale."""
    # Ingest's own steps (orientation, 16-bit, alpha, colour profile), so the cues see what the model will.
    from pipeline.image import _to_rgb, _upright

    with Image.open(io.BytesIO(data), formats=["JPEG", "PNG", "WEBP"]) as img:
        img.draft("RGB", (CUE_SIDE, CUE_SIDE))
        rgb = _to_rgb(_upright(img))
        rgb.thumbnail((CUE_SIDE, CUE_SIDE), Image.Resampling.BOX)
        return np.asarray(rgb, dtype=np.uint8).copy()


def picture_cues(picture: Picture) -> Cues:
    """The cues of an RGB picture (any size; read at most :data:`CUE_SIDE` on its longest side)."""
    if picture.ndim != 3 or picture.shape[2] != 3 or picture.dtype != np.uint8:
        raise ValueError(f"picture must be uint8 RGB (height, width, 3), got {picture.dtype} {picture.shape}")
    if min(picture.shape[:2]) < 8:
        raise ValueError(f"picture must be at least 8x8 pixels, got {picture.shape[1]}x{picture.shape[0]}")
    rgb = _at_most(picture, CUE_SIDE)
    height = rgb.shape[0]
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hue = hsv[..., 0].astype(np.int16)  # OpenCV's hue is degrees / 2: 0-179
    saturation, value = hsv[..., 1] / 255.0, hsv[..., 2] / 255.0
    texture = _local_deviation(np.asarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), dtype=np.uint8))
    blue = (hue >= 90) & (hue <= 130)
    sky = ((blue & (saturation > 0.15) & (value > 0.35)) | ((saturation < 0.12) & (value > 0.75))) & (texture < _SMOOTH)
    water = blue & (saturation > 0.2) & (value > 0.15) & (value < 0.9)
    greenery = (hue >= 30) & (hue <= 85) & (saturation > 0.25) & (value > 0.15) & (texture > _TEXTURED)
    upper, lower = slice(0, height // 2), slice(height // 2, height)
    return Cues(
        face=_face_share(rgb),
        sky=float(sky[upper].mean()),
        water=float(water[lower].mean()),
        greenery=float(greenery.mean()),
        plain_border=_plain_border(rgb),
    )


def resolve_preset(picture: Picture, params: GenerationParams, video_size: tuple[int, int]) -> Suggestion:
    """Apply ``params.preset`` to the picture: the parameters the user did not set
    (``params.model_fields_set``) take the preset's values. ``video_size`` is the (width, height) the
    video will be made at; a preset's duration and fps are lowered to fit
    :data:`~contracts.params.MAX_VIDEO_PIXELS` there, with a reason."""
    if not params.preset:
        raise ValueError("params.preset is empty: there is no preset to resolve")
    cues = picture_cues(picture)
    reasons: dict[str, str] = {}
    if params.preset == "auto":
        chosen, reasons["preset"] = _pick(cues)
    else:
        chosen = params.preset
        reasons["preset"] = f"asked for {chosen}"
    proposed = _proposal(chosen, cues)
    given = params.model_fields_set
    values = {name: value for name, (value, _why) in proposed.items() if name not in given}
    reasons.update({name: why for name, (_value, why) in proposed.items() if name not in given})
    _keep_ramp_rising(params, values, reasons)
    _fit_video_size(params, values, reasons, video_size)
    resolved = GenerationParams.model_validate({**params.model_dump(), **values, "preset": chosen})
    kept = [name for name in proposed if name in given]
    return Suggestion(preset=chosen, params=resolved, values=values, reasons=reasons, cues=cues, kept=kept)


def _pick(cues: Cues) -> tuple[Chosen, str]:
    if cues.face >= FACE_MIN_SHARE:
        return "portrait", f"a face (OpenCV's Haar face cascades) covers {cues.face:.0%} of the picture"
    if cues.plain_border >= PLAIN_BORDER_SHARE:
        return "product", f"the background is plain: {cues.plain_border:.0%} of the border is one colour"
    seen = _landscape_cues(cues)
    if seen:
        return "landscape", "no face and no plain background; the picture shows " + ", ".join(seen)
    return "landscape", "no face and no plain background: a scene, moved as gently as landscapes are"


def _landscape_cues(cues: Cues) -> list[str]:
    seen = []
    if cues.water >= WATER_SHARE:
        seen.append(f"water ({cues.water:.0%} of the lower half)")
    if cues.greenery >= GREENERY_SHARE:
        seen.append(f"trees or grass ({cues.greenery:.0%} of the picture)")
    if cues.sky >= SKY_SHARE:
        seen.append(f"sky ({cues.sky:.0%} of the upper half)")
    return seen


def _proposal(chosen: Chosen, cues: Cues) -> dict[str, tuple[Any, str]]:
    """Each parameter the preset sets, with its value and reason."""
    if chosen == "portrait":
        return {
            "motion_bucket_id": (60, "portrait: gentle motion (60) so the face moves without warping"),
            "augmentation_level": (0.1, "portrait: a little noise (0.1) frees the pose while the face stays its own"),
            "cfg_scale": (2.0, "portrait: lower guidance (2.0) keeps skin and features from over-sharpening"),
        }
    if chosen == "product":
        return {
            "motion_bucket_id": (150, "product: strong motion (150) so the object turns and shows its sides"),
            "duration": (8, "product: 8 s, the longest clip, for a showcase"),
            "fps": (24, "product: 24 fps, the smoothest playback"),
            "loop": (
                "pingpong",
                "product: pingpong loops by playing the motion back, so every frame is a real one; crossfade"
                " would blend the end into the start and show a sharp object's edges twice",
            ),
            "augmentation_level": (0.3, "product: more noise (0.3) lets the object move off the picture's pose"),
        }
    return {
        "motion_bucket_id": _landscape_motion(cues),
        "duration": (6, "landscape: 6 s, long enough for a slow scene to unfold"),
        "fps": (12, "landscape: 12 fps, smooth for slow motion at half the frames of 24"),
    }


def _landscape_motion(cues: Cues) -> tuple[int, str]:
    if cues.water >= WATER_SHARE:
        return LANDSCAPE_MOTION["water"], f"landscape: water covers {cues.water:.0%} of the lower half; waves move most"
    if cues.greenery >= GREENERY_SHARE:
        return LANDSCAPE_MOTION["greenery"], f"landscape: trees or grass cover {cues.greenery:.0%}; leaves sway"
    if cues.sky >= SKY_SHARE:
        return LANDSCAPE_MOTION["sky"], f"landscape: sky fills {cues.sky:.0%} of the upper half; clouds drift slowly"
    return LANDSCAPE_MOTION["sky"], "landscape: no water, trees or sky seen; the gentlest landscape motion"


def _keep_ramp_rising(params: GenerationParams, values: dict[str, Any], reasons: dict[str, str]) -> None:
    """A preset's guidance never falls below a ``min_cfg`` the user gave: the ramp must rise to it."""
    cfg = values.get("cfg_scale")
    if cfg is not None and "min_cfg" in params.model_fields_set and params.min_cfg > cfg:
        values["cfg_scale"] = params.min_cfg
        reasons["cfg_scale"] = f"the preset's {cfg:g} raised to the min_cfg given ({params.min_cfg:g}): the ramp rises"


def _fit_video_size(
    params: GenerationParams, values: dict[str, Any], reasons: dict[str, str], video_size: tuple[int, int]
) -> None:
    """Lower the preset's fps (else its duration) until the video fits :data:`MAX_VIDEO_PIXELS`."""
    width, height = video_size
    duration, fps = values.get("duration", params.duration), values.get("fps", params.fps)
    most = MAX_VIDEO_PIXELS // (width * height)
    if duration * fps <= most:
        return
    too_many = f"{duration} s at {fps} fps is {duration * fps} frames, more than the {most} a {width}x{height} video"
    if "fps" in values and most // duration >= _MIN_FPS:
        values["fps"] = most // duration
        reasons["fps"] = f"{too_many} may have: {values['fps']} fps"
    elif "duration" in values and most // fps >= 1:
        values["duration"] = most // fps
        reasons["duration"] = f"{too_many} may have: {values['duration']} s"
    else:
        return  # what the user gave does not fit: the params' own check says so
    check_video_size(width, height, values.get("duration", duration) * values.get("fps", fps))


def _at_most(picture: Picture, side: int) -> Picture:
    height, width = picture.shape[:2]
    scale = side / max(height, width)
    if scale >= 1:
        return picture
    size = (max(8, round(width * scale)), max(8, round(height * scale)))
    return np.asarray(cv2.resize(picture, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)


def _local_deviation(gray: NDArray[np.uint8]) -> NDArray[np.float32]:
    """Standard deviation of grey in each pixel's 7x7 neighbourhood: how textured the area is."""
    values = gray.astype(np.float32)
    mean = cv2.blur(values, (7, 7))
    mean_of_squares = cv2.blur(values * values, (7, 7))
    return np.sqrt(np.maximum(mean_of_squares - mean * mean, 0.0)).astype(np.float32)


class _Cascade:
    """One of the Haar cascades the OpenCV wheel ships, loaded on first use. A ``CascadeClassifier``
    keeps the picture it scans in itself, so one lock guards both the load and each scan."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._classifier: cv2.CascadeClassifier | None = None

    def boxes(self, gray: NDArray[np.uint8], side: int) -> list[tuple[int, int, int, int]]:
        """(left, top, width, height) of each face at least ``side`` pixels wide in ``gray``."""
        with self._lock:
            if self._classifier is None:
                path = str(Path(haarcascades) / self._name)
                classifier = cv2.CascadeClassifier(path)
                if classifier.empty():
                    raise RuntimeError(
                        f"cannot load OpenCV's face cascade {path}: is opencv-python-headless 4 installed?"
                    )
                self._classifier = classifier
            found = self._classifier.detectMultiScale(
                gray, scaleFactor=1.1, minNeighbors=_FACE_NEIGHBOURS, minSize=(side, side)
            )
        return [(int(x), int(y), int(w), int(h)) for x, y, w, h in found]


_FRONTAL = _Cascade("haarcascade_frontalface_default.xml")
_PROFILE = _Cascade("haarcascade_profileface.xml")


def _face_share(rgb: Picture) -> float:
    """Share of the picture covered by the largest face box whose middle is skin-toned, 0 when none is."""
    height, width = rgb.shape[:2]
    gray = np.asarray(cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)), dtype=np.uint8)
    skin = _skin(rgb)
    side = max(20, round((FACE_MIN_SHARE * width * height) ** 0.5))  # no smaller face could make a portrait
    # Each view of the picture with the cascade that reads it; a box's skin is read in the same view.
    views = [(_FRONTAL, _turned(gray, angle), _turned(skin, angle)) for angle in _FACE_TILTS]
    # The profile cascade knows faces looking one way; the mirror image finds those looking the other.
    views += [(_PROFILE, gray, skin), (_PROFILE, np.ascontiguousarray(gray[:, ::-1]), skin[:, ::-1])]
    best = 0.0
    for cascade, view, view_skin in views:
        for left, top, box_w, box_h in cascade.boxes(view, side):
            middle = view_skin[top + box_h // 5 : top + box_h * 4 // 5, left + box_w // 5 : left + box_w * 4 // 5]
            if middle.mean() >= FACE_SKIN_SHARE:
                best = max(best, box_w * box_h / (width * height))
    return best


def _skin(rgb: Picture) -> NDArray[np.uint8]:
    """1 where a pixel is skin-toned: skin of every complexion falls in one chroma box (Chai and Ngan's
    Cr 133-173, Cb 77-127); luma only leaves out the darkest shadows, whose chroma says nothing."""
    ycc = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    luma, cr, cb = ycc[..., 0], ycc[..., 1], ycc[..., 2]
    return ((cr >= 133) & (cr <= 173) & (cb >= 77) & (cb <= 127) & (luma > 50)).astype(np.uint8)


def _turned(plane: NDArray[np.uint8], angle: float) -> NDArray[np.uint8]:
    """``plane`` turned ``angle`` degrees anticlockwise about its centre, its corners filled from its edges."""
    if angle == 0:
        return plane
    height, width = plane.shape
    turn = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
    turned = cv2.warpAffine(plane, turn, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(turned, dtype=np.uint8)


def _plain_border(rgb: Picture) -> float:
    height, width = rgb.shape[:2]
    band = max(2, round(_BORDER_FRACTION * min(height, width)))
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    border = np.concatenate(
        [
            lab[:band].reshape(-1, 3),
            lab[-band:].reshape(-1, 3),
            lab[band:-band, :band].reshape(-1, 3),
            lab[band:-band, -band:].reshape(-1, 3),
        ]
    )
    distance = np.linalg.norm(border - np.median(border, axis=0), axis=1)
    return float((distance < _PLAIN_DISTANCE).mean())
