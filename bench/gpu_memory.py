"""Peak GPU memory of SVD-XT per resolution and frame count, and which GPUs (24, 48, 80 GB) run what.

ESTIMATED, not measured: the figures come from pipeline/memory.py's activation accounting on the meta
device (the real UNet and VAE built from SVD-XT's configs, run on inputs of the job's size without data,
every tensor storage's bytes added while it lives, attention counted as a fused SDPA kernel), plus the
weights, a 1 GiB CUDA context margin and 10% for the allocator. On a CUDA machine ``--measure`` also runs
one UNet step and one VAE chunk for real at each size and prints the measured peak beside the estimate.

    .venv/bin/python bench/gpu_memory.py                      # the table in docs/GPU.md (fp16, CFG)
    .venv/bin/python bench/gpu_memory.py --markdown           # the same as a Markdown table
    python bench/gpu_memory.py --measure                      # on CUDA: measured beside estimated
"""

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from pipeline.memory import (  # noqa: E402
    CONTEXT_BYTES,
    FRAGMENTATION,
    decode_memory,
    gib,
    largest_chunk,
    latent_memory,
    weight_bytes,
)

SIZES = ((1024, 576), (768, 448), (512, 320))
FRAMES = (14, 25)
CHUNK = 8
GPUS = {"24 GB": 24 * 10**9, "48 GB": 48 * 10**9, "80 GB": 80 * 10**9}
"""Nominal capacities in bytes as sold (24 GB is 22.4 GiB)."""


def meta_pipe(dtype: torch.dtype) -> Any:
    """SVD-XT's three models on the meta device: their configs and parameter shapes, no memory."""
    from types import SimpleNamespace

    from pipeline.svd_xt import svd_xt_image_encoder, svd_xt_unet, svd_xt_vae

    parts = {"unet": svd_xt_unet("meta"), "vae": svd_xt_vae("meta"), "image_encoder": svd_xt_image_encoder("meta")}
    for module in parts.values():
        torch.nn.Module.to(module, device="meta", dtype=dtype)
    return SimpleNamespace(**parts)


def fits(need: int) -> str:
    return ", ".join(name for name, capacity in GPUS.items() if need <= capacity) or "none"


def rows(dtype: torch.dtype) -> list[dict[str, Any]]:
    pipe = meta_pipe(dtype)
    out = []
    for width, height in SIZES:
        for frames in FRAMES:
            latent = latent_memory(pipe, width, height, frames)
            decode = decode_memory(pipe.vae, width, height, min(CHUNK, frames))
            both = latent.total + decode - (1 << 30)  # one CUDA context when both stages share the GPU
            resident = int(weight_bytes(pipe.vae) * FRAGMENTATION) + CONTEXT_BYTES
            chunks = {
                name: largest_chunk(pipe.vae, width, height, frames, capacity - resident)
                for name, capacity in GPUS.items()
            }
            out.append(
                {
                    "size": f"{width}x{height}",
                    "frames": frames,
                    "weights": latent.weights,
                    "unet_step": latent.unet_step,
                    "latent": latent.total,
                    "decode": decode,
                    "both": both,
                    "latent_fits": fits(latent.total),
                    "both_fit": fits(both),
                    "chunks": chunks,
                }
            )
    return out


def measured(width: int, height: int, frames: int, dtype: torch.dtype) -> tuple[float, float]:
    """(UNet step, VAE chunk) measured peaks in GiB on CUDA, each above the weights."""
    from pipeline.svd_xt import svd_xt_unet, svd_xt_vae

    device = torch.device("cuda")
    unet = svd_xt_unet(device)
    torch.nn.Module.to(unet.requires_grad_(False).eval(), device=device, dtype=dtype)
    sample = torch.randn(2, frames, 8, height // 8, width // 8, device=device, dtype=dtype)
    context = torch.randn(2, 1, 1024, device=device, dtype=dtype)
    time_ids = torch.randn(2, 3, device=device, dtype=dtype)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        unet(sample, torch.tensor(1.0, device=device), context, time_ids, return_dict=False)
    unet_peak = (torch.cuda.max_memory_allocated() - base) / 2**30
    del unet, sample
    torch.cuda.empty_cache()
    vae = svd_xt_vae(device)
    torch.nn.Module.to(vae.requires_grad_(False).eval(), device=device, dtype=dtype)
    chunk = min(CHUNK, frames)
    latents = torch.randn(chunk, 4, height // 8, width // 8, device=device, dtype=dtype)
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        vae.decode(latents, num_frames=chunk)
    vae_peak = (torch.cuda.max_memory_allocated() - base) / 2**30
    del vae
    torch.cuda.empty_cache()
    return unet_peak, vae_peak


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", choices=("fp16", "bf16"), default="fp16")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--measure", action="store_true", help="CUDA only: measured peaks beside the estimates")
    args = parser.parse_args(argv)
    dtype = torch.float16 if args.dtype == "fp16" else torch.bfloat16
    table = rows(dtype)
    head = (
        "| size | frames | UNet step activations | latent stage | decode stage (chunk 8) | both on one GPU "
        "| latent fits | both fit | largest decode chunk 24/48/80 GB |"
    )
    if args.markdown:
        print(head)
        print("|" + "---|" * 9)
    for row in table:
        chunks = "/".join(str(n) for n in row["chunks"].values())
        cells = [
            row["size"],
            str(row["frames"]),
            f"{gib(row['unet_step'])} GiB",
            f"{gib(row['latent'])} GiB",
            f"{gib(row['decode'])} GiB",
            f"{gib(row['both'])} GiB",
            row["latent_fits"],
            row["both_fit"],
            chunks,
        ]
        print("| " + " | ".join(cells) + " |" if args.markdown else "  ".join(f"{c:>12}" for c in cells))
    print(f"(estimated; weights {gib(table[0]['weights'])} GiB in {args.dtype}; CFG, batch 2)")
    if args.measure:
        if not torch.cuda.is_available():
            parser.error("--measure needs CUDA")
        for row in table:
            width, height = (int(v) for v in row["size"].split("x"))
            unet_peak, vae_peak = measured(width, height, row["frames"], dtype)
            print(
                f"{row['size']} x {row['frames']}: UNet step measured {unet_peak:.1f} GiB, estimated "
                f"{gib(row['unet_step'])} GiB; VAE chunk measured {vae_peak:.1f} GiB"
            )
    return table


if __name__ == "__main__":
    main()
