"""The pipeline's stages, in the order a job passes through them."""

from enum import StrEnum


class Stage(StrEnum):
    INGEST = "ingest"
    BILLING = "billing"
    LATENT = "latent"
    DECODE = "decode"
    MUX = "mux"


PIPELINE_ORDER: tuple[Stage, ...] = (Stage.INGEST, Stage.BILLING, Stage.LATENT, Stage.DECODE, Stage.MUX)
