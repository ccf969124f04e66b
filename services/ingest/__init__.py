"""Ingest: decode and validate the upload, fit it to the model resolution, store it."""
