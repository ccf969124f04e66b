"""Checking an upload as ingest will: at the size of the model the job runs on, read from its config; and
cheaply first, so that a large upload from an account that cannot pay is refused before it is decoded."""

import io
import zlib
from pathlib import Path

import pytest
from PIL import Image

from contracts.params import GenerationParams, Resolution
from contracts.pricing import price_points
from pipeline.image import ImageRejected, fit_resolution, prepare_image
from pipeline.image import check_image as check_upload
from services.gateway.errors import ApiError
from services.gateway.model_sizes import ModelSizes, model_size_from_config
from services.gateway.submission import check_image, header_size
from tests.pipeline.bad_images import bad_image_corpus, png_bytes
from tests.services.gateway.conftest import RunningGateway
from tests.services.gateway.test_api import submit


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (30, 60, 90)).save(out, format="PNG")
    return out.getvalue()


def svd_folder(root: Path) -> Path:
    """A model folder with the config files a real checkpoint has (no weights: none are read)."""
    (root / "unet").mkdir(parents=True)
    (root / "model_index.json").write_text("{}")
    (root / "unet" / "config.json").write_text('{"num_frames": 25}')
    return root


def test_the_image_is_fitted_to_the_jobs_model_not_the_tiny_one(tmp_path: Path) -> None:
    sizes = ModelSizes(model_size_from_config)
    folder = str(svd_folder(tmp_path / "svd-xt"))
    image = png(640, 480)
    real = check_image(image, GenerationParams(model=folder), sizes, 25 * 2**20)
    tiny = check_image(image, GenerationParams(model="tiny"), sizes, 25 * 2**20)
    assert real == fit_resolution(640, 480, (1024, 576), None) and real[0] * real[1] > 500_000
    assert tiny == fit_resolution(640, 480, (256, 192), None)
    asked = check_image(
        image, GenerationParams(model=folder, resolution=Resolution(width=512, height=384)), sizes, 1 << 25
    )
    assert asked == (512, 384)


def test_a_model_missing_on_this_host_is_refused_as_ingest_would(tmp_path: Path) -> None:
    calls: list[str] = []

    def lookup(model: str) -> tuple[int, int]:
        calls.append(model)
        return model_size_from_config(model)

    sizes = ModelSizes(lookup)
    missing = str(tmp_path / "nothing-here")
    with pytest.raises(ApiError) as caught:
        check_image(png(64, 64), GenerationParams(model=missing), sizes, 1 << 20)
    assert (caught.value.status, caught.value.body.code, caught.value.body.field) == (422, "model_not_found", "model")
    # Once found it is remembered; until then it is looked for again (it may be installed meanwhile).
    svd_folder(Path(missing))
    for _ in range(3):
        check_image(png(64, 64), GenerationParams(model=missing), sizes, 1 << 20)
    assert calls == [missing, missing]


def test_the_gateways_check_refuses_what_ingest_refuses_and_sizes_what_it_accepts() -> None:
    for name, (data, expected) in bad_image_corpus().items():
        for requested in (None, (512, 384)):
            try:
                size = check_upload(data, model_size=(256, 192), requested=requested)
            except ImageRejected as exc:
                assert exc.code == expected, name
                with pytest.raises(ImageRejected) as ingest:
                    prepare_image(data, model_size=(256, 192), requested=requested)
                assert (ingest.value.code, ingest.value.message) == (exc.code, exc.message), name
            else:
                assert expected is None, name
                prepared = prepare_image(data, model_size=(256, 192), requested=requested)
                assert size == (prepared.width, prepared.height), name


def big_broken_png() -> bytes:
    """A 6320x6320 RGBA header (just under 40 megapixels) over data that does not decode."""
    return png_bytes(6320, 6320, bit_depth=8, color_type=6, idat=zlib.compress(b"\x00" * 4096))


async def test_an_account_that_cannot_pay_is_refused_before_its_upload_is_decoded(gateway: RunningGateway) -> None:
    _, broke_key = gateway.account(0)
    _, busy_key = gateway.account(1000)
    async with gateway.client(broke_key) as broke, gateway.client(busy_key) as busy:
        # Decoding would call the file corrupt (422); the balance, checked first, says 402.
        response = await broke.post("/v1/jobs", files={"image": ("big.png", big_broken_png(), "image/png")})
        assert response.status_code == 402, response.text
        assert response.json()["error"]["code"] == "insufficient_points"
        # At the limit of unfinished jobs (2 in these tests): 429 before the decode too.
        assert [(await submit(busy)).status_code for _ in range(2)] == [202, 202]
        response = await busy.post("/v1/jobs", files={"image": ("big.png", big_broken_png(), "image/png")})
        assert response.status_code == 429, response.text


async def test_the_balance_is_checked_against_the_price_at_the_size_the_header_gives(gateway: RunningGateway) -> None:
    _, key = gateway.account(10_000)
    wide = io.BytesIO()
    Image.new("RGB", (1200, 300), (1, 2, 3)).save(wide, format="PNG")
    params = GenerationParams(duration=2, fps=8, steps=2)
    size = header_size(wide.getvalue(), params, (256, 192))
    assert size == fit_resolution(1200, 300, (256, 192), None) and size != (256, 192)
    async with gateway.client(key) as client:
        job = await client.post(
            "/v1/jobs",
            files={"image": ("w.png", wide.getvalue(), "image/png")},
            data={"duration": "2", "fps": "8", "steps": "2"},
        )
        assert job.status_code == 202, job.text
        assert job.json()["price"] == price_points(params, *size)
    # A header that cannot be read prices the model's size; the decode then says what is wrong.
    assert header_size(b"not an image", params, (256, 192)) == (256, 192)
    asked = GenerationParams(resolution=Resolution(width=512, height=384))
    assert header_size(wide.getvalue(), asked, (256, 192)) == (512, 384)
