"""Decode: the SVD temporal VAE decodes latents into frames, interpolated to exactly duration x fps."""
