"""The size each model generates at, which fits an upload as ingest will: read from config files only.

The gateway never loads weights and never imports torch: ``pipeline.model_catalog`` reads names and config
files only. A folder model's config is read from disk, so lookups run in a worker thread.
"""

import logging
import threading
from collections.abc import Callable

from contracts.failures import FailureCode
from services.gateway.errors import ApiError, status_of

log = logging.getLogger("i2v.gateway")

ModelSize = Callable[[str], tuple[int, int]]
"""Model name to the (width, height) it generates at; raises ApiError for a model this host lacks."""


def model_size_from_config(model: str) -> tuple[int, int]:
    """The model's native size from its config files, as ingest reads it; no weights are loaded.

    Blocking (it reads files): call it from a worker thread.
    """
    from pipeline.model_catalog import ModelNotFoundError, model_defaults

    try:
        defaults = model_defaults(model)
    except ModelNotFoundError as exc:
        log.error("the gateway cannot validate uploads for model %r: %s", model, exc)
        code = FailureCode.MODEL_NOT_FOUND
        raise ApiError(
            status_of(code), code, f"model: {model!r} is not available on this server", field="model"
        ) from None
    return defaults.width, defaults.height


class ModelSizes:
    """Each model's size, looked up once; safe to share between worker threads."""

    def __init__(self, lookup: ModelSize = model_size_from_config) -> None:
        self._lookup = lookup
        self._sizes: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def __call__(self, model: str) -> tuple[int, int]:
        with self._lock:
            known = self._sizes.get(model)
        if known is None:
            known = self._lookup(model)  # an unknown model is asked again next time: it may be installed since
            with self._lock:
                self._sizes[model] = known
        return known
