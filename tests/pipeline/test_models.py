"""Model resolution, device choice, the tiny SVD's determinism, and loading real diffusers folders."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
    StableVideoDiffusionPipeline,
)

from pipeline.latents import generate_latents
from pipeline.models import (
    REAL_DEFAULT_RESOLUTION,
    TINY_DEFAULT_RESOLUTION,
    TINY_NATIVE_FRAMES,
    ModelDefaults,
    ModelNotFoundError,
    ResolvedModel,
    build_tiny_svd,
    load_pipeline,
    load_vae,
    model_defaults,
    pick_device,
    resolve_model,
)
from tests.pipeline.bad_images import noise

# diffusers' Euler scheduler calls np.array() on a torch tensor, which numpy 2.4 flags with torch 2.13.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

CPU = torch.device("cpu")
REPO_ROOT = Path(__file__).resolve().parents[2]

_WEIGHTS_DIGEST = """
import hashlib, sys, torch
torch.manual_seed(int(sys.argv[1]))
from pipeline.models import build_tiny_svd
pipe = build_tiny_svd()
digest = hashlib.sha256()
for module in (pipe.unet, pipe.vae, pipe.image_encoder):
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.contiguous().numpy().tobytes())
print(digest.hexdigest())
"""


def weights_digest(pipe: StableVideoDiffusionPipeline) -> str:
    digest = hashlib.sha256()
    for module in (pipe.unet, pipe.vae, pipe.image_encoder):
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def small_latents(pipe: StableVideoDiffusionPipeline) -> torch.Tensor:
    image = noise(64, 64, seed=3)
    return generate_latents(
        pipe,
        image,
        width=64,
        height=64,
        num_frames=3,
        steps=2,
        cfg_scale=2.0,
        motion_bucket_id=127,
        augmentation_level=0.02,
        fps_cond=2,
        seed=11,
    )


# --- build_tiny_svd ---------------------------------------------------------------------------------


def test_tiny_weights_ignore_and_keep_the_global_rng(pipe: StableVideoDiffusionPipeline) -> None:
    torch.manual_seed(999)
    before = torch.get_rng_state()
    again = build_tiny_svd()
    assert torch.equal(torch.get_rng_state(), before)
    assert weights_digest(again) == weights_digest(pipe)


def test_tiny_weights_are_identical_in_another_process(pipe: StableVideoDiffusionPipeline) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _WEIGHTS_DIGEST, "12345"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert result.stdout.strip() == weights_digest(pipe)


def test_tiny_weights_are_random_not_zero(pipe: StableVideoDiffusionPipeline) -> None:
    for module in (pipe.unet, pipe.vae, pipe.image_encoder):
        flat = torch.cat([p.detach().flatten() for p in module.parameters()])
        assert flat.std() > 0.01


def test_tiny_is_shaped_like_svd(pipe: StableVideoDiffusionPipeline) -> None:
    assert pipe.vae_scale_factor == 8
    assert pipe.unet.config.num_frames == TINY_NATIVE_FRAMES
    assert pipe.unet.config.in_channels == 2 * pipe.vae.config.latent_channels
    assert pipe.image_encoder.config.projection_dim == pipe.unet.config.cross_attention_dim
    scheduler = pipe.scheduler.config
    assert scheduler.prediction_type == "v_prediction"
    assert scheduler.use_karras_sigmas is True
    assert (scheduler.sigma_min, scheduler.sigma_max) == (0.002, 700.0)
    assert scheduler.timestep_type == "continuous"
    width, height = TINY_DEFAULT_RESOLUTION
    assert width % 64 == 0 and height % 64 == 0


# --- resolve_model ----------------------------------------------------------------------------------


def test_resolve_tiny() -> None:
    assert resolve_model("tiny") == ResolvedModel(name="tiny", kind="tiny", path=None)


def test_resolve_folder(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text("{}")
    assert resolve_model(str(tmp_path)) == ResolvedModel(name=str(tmp_path), kind="folder", path=tmp_path)


def test_folder_without_model_index_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"model_index\.json") as info:
        resolve_model(str(tmp_path))
    assert str(tmp_path) in str(info.value)
    assert "I2V_MODEL" in str(info.value)


def test_missing_path_names_the_setting() -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("/x/y")
    message = str(info.value)
    assert "'/x/y'" in message and "--model / I2V_MODEL" in message and "\n" not in message


def test_file_is_not_a_model(tmp_path: Path) -> None:
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="not a folder"):
        resolve_model(str(weights))


def fake_hub_cache(root: Path, repo_id: str) -> Path:
    """Lay out a Hugging Face cache entry the way huggingface_hub writes one."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    entry = root / ("models--" + repo_id.replace("/", "--"))
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(commit)
    snapshot = entry / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "model_index.json").write_text("{}")
    return snapshot


def test_resolve_hub_id_from_the_local_cache(tmp_path: Path) -> None:
    snapshot = fake_hub_cache(tmp_path, "acme/svd-mini")
    resolved = resolve_model("acme/svd-mini", hf_cache=tmp_path)
    assert resolved == ResolvedModel(name="acme/svd-mini", kind="hub", path=snapshot)


def test_hub_id_not_in_cache_is_not_found(tmp_path: Path) -> None:
    fake_hub_cache(tmp_path, "acme/svd-mini")
    with pytest.raises(ModelNotFoundError, match="Hugging Face cache"):
        resolve_model("acme/other", hf_cache=tmp_path)


# --- pick_device ------------------------------------------------------------------------------------


def test_pick_device_default_follows_cuda() -> None:
    expected = (torch.device("cuda"), torch.float16) if torch.cuda.is_available() else (CPU, torch.float32)
    assert pick_device() == expected


def test_pick_device_cpu_override() -> None:
    assert pick_device("cpu") == (CPU, torch.float32)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_pick_device_cuda_without_gpu_fails() -> None:
    with pytest.raises(ValueError, match="cuda"):
        pick_device("cuda")


def test_pick_device_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="'tpu'"):
        pick_device("tpu")


# --- loading ----------------------------------------------------------------------------------------


def test_load_pipeline_tiny_is_cached() -> None:
    first = load_pipeline("tiny", CPU, torch.float32)
    assert load_pipeline("tiny", CPU, torch.float32) is first
    assert first.unet.dtype == torch.float32


def test_saved_folder_loads_and_generates_the_same(pipe: StableVideoDiffusionPipeline, tmp_path: Path) -> None:
    pipe.save_pretrained(tmp_path)
    loaded = load_pipeline(str(tmp_path), CPU, torch.float32)
    assert loaded is not pipe
    assert weights_digest(loaded) == weights_digest(pipe)
    # Same weights, but safetensors leaves them at unaligned addresses, where BLAS takes other kernels:
    # ulp-level differences that denoising grows a little. A different model would be off by O(1).
    torch.testing.assert_close(small_latents(loaded), small_latents(pipe), rtol=1e-3, atol=1e-3)

    vae = load_vae(str(tmp_path), CPU, torch.float32)
    assert type(vae) is type(pipe.vae)
    reference = pipe.vae.state_dict()
    assert all(torch.equal(tensor, reference[name]) for name, tensor in vae.state_dict().items())


def test_fp16_only_folder_loads_its_fp16_variant(pipe: StableVideoDiffusionPipeline, tmp_path: Path) -> None:
    pipe.save_pretrained(tmp_path, variant="fp16")
    vae = load_vae(str(tmp_path), CPU, torch.float16)
    assert vae.dtype == torch.float16
    expected = pipe.vae.decoder.conv_out.weight.half()
    assert torch.equal(vae.decoder.conv_out.weight, expected)


def test_load_tiny_vae_matches_the_pipeline(pipe: StableVideoDiffusionPipeline) -> None:
    vae = load_vae("tiny", CPU, torch.float32)
    assert torch.equal(vae.decoder.conv_out.weight, pipe.vae.decoder.conv_out.weight)


def test_load_unknown_model_fails_before_loading() -> None:
    with pytest.raises(ModelNotFoundError):
        load_pipeline("/no/such/model", CPU, torch.float32)


# --- model_defaults ---------------------------------------------------------------------------------


def test_tiny_defaults() -> None:
    width, height = TINY_DEFAULT_RESOLUTION
    assert model_defaults("tiny") == ModelDefaults(width=width, height=height, native_frames=TINY_NATIVE_FRAMES)


def test_folder_defaults_read_the_unet_config_only(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text("{}")
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"num_frames": 25}))
    width, height = REAL_DEFAULT_RESOLUTION
    assert model_defaults(str(tmp_path)) == ModelDefaults(width=width, height=height, native_frames=25)


def test_folder_defaults_without_unet_config_fail(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match=r"unet/config\.json"):
        model_defaults(str(tmp_path))


def test_the_catalog_and_the_gateway_never_import_torch() -> None:
    # The gateway checks uploads at the model's size; that must not cost it torch's start-up and memory.
    code = (
        "import sys, pipeline.model_catalog as c, services.gateway.app\n"
        "assert c.model_defaults('tiny').width == 256\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_still_model_needs_no_weights_and_makes_the_real_size() -> None:
    from pipeline.model_catalog import STILL, STILL_NATIVE_FRAMES, is_still, model_defaults, resolve_model

    assert resolve_model(STILL).kind == "still" and resolve_model(STILL).path is None
    assert is_still("still") and not is_still("tiny")
    defaults = model_defaults(STILL)
    assert (defaults.width, defaults.height, defaults.native_frames) == (1024, 576, STILL_NATIVE_FRAMES)
