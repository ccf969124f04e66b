"""Latent: SVD image encoding and UNet denoising into latents (the GPU stage)."""
