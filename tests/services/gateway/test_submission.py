"""Checking an upload as ingest will: at the size of the model the job runs on, read from its config."""

import io
from pathlib import Path

import pytest
from PIL import Image

from contracts.params import GenerationParams, Resolution
from pipeline.image import fit_resolution
from services.gateway.errors import ApiError
from services.gateway.model_sizes import ModelSizes, model_size_from_config
from services.gateway.submission import check_image


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
