"""The price of a job in points, exactly as the product shows it: a function of the work it asks for.

    price = 8 + ceil(width · height · frames · steps / 2,457,600)      frames = duration · fps

``width · height`` is the size the video is made at: ``--resolution`` when given, else the model's own
size (256x192 for ``tiny``, 1024x576 for SVD) fitted to the picture's aspect at about the same area.
One point buys 2,457,600 pixel-frame-steps: 50 steps of one 256x192 frame. A default job (4 s at
8 fps, 25 steps) costs 24 points on ``tiny`` and 200 at 1024x576. Billing charges this for the size
ingest prepared; the quote (``GET /v1/quote``) and the page's button price the requested resolution,
else the model's size; the gateway's balance check prices the size fitted from the upload's header,
which is what ingest will prepare.

The ``still`` model runs no diffusion: the formula stays, with ``steps`` counted as 1 whatever the job
says (the camera warp, interpolation and encoding of each frame are about one step's worth of work at
most), so a default 4 s, 8 fps still clip at 1024x576 costs 8 + ceil(589,824 · 32 / 2,457,600) = 16 points.
"""

import math

from contracts.params import GenerationParams

BASE_POINTS = 8
"""Every job pays this much whatever its size: the fixed work of intake, billing and the MP4."""
WORK_PER_POINT = 256 * 192 * 50
"""Pixel-frame-steps one point buys: 50 denoising steps of one 256x192 frame (2,457,600)."""

STILL_MODEL = "still"
"""The model without diffusion (``pipeline.model_catalog.STILL``): priced as one step per frame."""

PRICE_FORMULA = "8 + ceil(width · height · duration · fps · steps / 2,457,600) points"
"""The formula in words, for API descriptions and messages."""


def price_points(params: GenerationParams, width: int, height: int) -> int:
    """Points a job with ``params`` costs when its video is ``width`` x ``height``: see :data:`PRICE_FORMULA`."""
    if width <= 0 or height <= 0:
        raise ValueError(f"a video size is positive, got {width}x{height}")
    steps = 1 if params.model == STILL_MODEL else params.steps
    work = width * height * params.frame_count * steps
    return BASE_POINTS + math.ceil(work / WORK_PER_POINT)


def quoted_size(params: GenerationParams, model_size: tuple[int, int]) -> tuple[int, int]:
    """The size a quote prices before the picture is prepared: the requested resolution, else the model's."""
    if params.resolution is not None:
        return params.resolution.width, params.resolution.height
    return model_size
