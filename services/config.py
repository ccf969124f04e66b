"""Settings every service reads from the environment (prefix ``I2V_``); one object per process."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars


class Settings(BaseSettings):
    """Where the bus, the object store and the ledger are, and how stages behave."""

    model_config = SettingsConfigDict(env_prefix="I2V_", extra="ignore")

    nats_url: str = Field(
        "",
        description="NATS server URL, e.g. nats://127.0.0.1:4222; for a cluster every node's, separated by commas",
    )
    nats_user: str = Field("", description="NATS user of this process (the embedded stack gives each service its own)")
    nats_password: str = Field("", repr=False, description="password of I2V_NATS_USER")
    nats_inbox_prefix: str = Field(
        "",
        description="prefix of its reply subjects; default _INBOX_<I2V_NATS_USER>, which its permissions allow",
    )
    stream_replicas: int = Field(
        1,
        ge=1,
        le=5,
        description="copies JetStream keeps of each stream and of the cancel bucket: 1 on one nats-server, "
        "3 on a cluster (the embedded stack sets it from --nats-nodes)",
    )
    s3_endpoint: str = Field("", description="S3 API endpoint, e.g. http://127.0.0.1:8333")
    s3_access_key: str = ""
    s3_secret_key: str = Field("", repr=False)
    s3_bucket: str = "i2v"
    ledger_dsn: str = Field("", description="postgresql://... or a SQLite file path; default state_dir/ledger.sqlite3")
    index_dsn: str = Field(
        "",
        description="the gateways' jobs index: postgresql://... (shared by several gateways) or a SQLite file path; "
        "default I2V_LEDGER_DSN when that is PostgreSQL, else state_dir/gateway.sqlite3 (one gateway)",
    )
    model: str = Field("tiny", description="tiny, a local diffusers SVD folder, or a hub id in the local cache")
    device: str | None = Field(None, description="cpu or cuda; default cuda when present")
    state_dir: Path = Path(".i2v")
    rife_weights: Path | None = Field(
        None,
        description="RIFE flownet.pkl (or its folder) for jobs asking interpolator 'rife'; unset refuses them",
    )
    decode_chunk_size: int = Field(8, ge=1, description="frames the VAE decodes at once; bounds memory")
    fast: str = Field(
        "",
        description="opt-in speed options of the latent and decode stages, comma separated: channels_last, "
        "compile, cuda_graphs, sdpa=flash|efficient|cudnn|math, fuse_qkv, dtype=fp16|bf16|fp32, fp8, "
        "step_cache=N, skip_cfg=F, auto_chunk (pipeline/accel.py, docs/GPU.md); empty is diffusers' own path",
    )
    gpu_memory_gb: float | None = Field(
        None,
        gt=0,
        description="GPU memory the latent stage may use (GiB); it refuses a size whose estimate exceeds it. "
        "Default: the GPU's total; on the CPU nothing is checked unless set",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads for compute on this host; default every CPU this process may use. A service "
        "alone takes them all; the embedded stack splits them among its services (services/threads.py)",
    )
    threads_ingest: int | None = Field(None, ge=1, description="ingest's threads; default 1 when sharing a host")
    threads_latent: int | None = Field(None, ge=1, description="latent's threads; default its share of I2V_THREADS")
    threads_decode: int | None = Field(None, ge=1, description="decode's threads; default its share of I2V_THREADS")
    threads_mux: int | None = Field(None, ge=1, description="mux's threads; default its share of I2V_THREADS")
    previews: bool = Field(True, description="the latent stage shows live previews of the denoising (StagePreview)")
    preview_interval_s: float = Field(
        1.0, ge=0, description="least wall time between two previews; the last denoising step always has one"
    )
    max_deliver: int = Field(5, ge=1, description="deliveries before a command is dead-lettered")
    ack_wait_s: float = Field(30.0, gt=0, description="redelivery deadline without a heartbeat")
    heartbeat_s: float = Field(5.0, gt=0, description="in_progress() interval while a stage works")
    retry_backoff_s: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0)
    event_max_deliver: int = Field(
        20,
        ge=1,
        description="deliveries of an event a service follows (billing's settlement) before it is dead-lettered; "
        "more than max_deliver because a settlement cannot be replayed",
    )
    trace_file: Path | None = Field(None, description="write finished spans as JSON lines here")
    default_account: str | None = Field(None, description="account billing creates at start if missing")
    default_account_points: int = Field(1000, ge=0)
    ready_file: Path | None = Field(None, description="touched once the service consumes; used by the stack")
    gateway_host: str = Field("127.0.0.1", description="address the gateway's HTTP server binds")
    gateway_port: int = Field(8080, ge=0, le=65535, description="port of the gateway's HTTP server")
    gateway_secret: str = Field("", description="HMAC key of session tokens; default generated into state_dir")
    gateway_max_active_jobs: int = Field(4, ge=1, description="unfinished jobs one account may have at once")
    billing_secret: str = Field(
        "",
        repr=False,
        description="HMAC key billing seals each reservation with and latent, decode and mux check before work; "
        "default generated into state_dir (give every host the same value in production)",
    )
    retention_days: int = Field(30, ge=0, description="days a job's upload and artifacts are kept; 0 keeps them")
    retention_sweep_s: float = Field(3600.0, gt=0, description="how often billing deletes what is past retention")
    log_file: Path | None = Field(
        None, description="a service writes its log here (stdout and stderr too), rotated at log_max_bytes"
    )
    log_max_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="size at which log_file is rotated")
    log_backups: int = Field(3, ge=1, description="rotated copies of log_file kept (log_file.1 ... .N)")
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="port of the process's /healthz, /readyz and Prometheus /metrics; unset serves none",
    )
    metrics_host: str = Field("127.0.0.1", description="address the metrics server binds (0.0.0.0 in a container)")
    webhook_allow_private: bool = Field(
        False, description="jobs' webhooks may go to loopback and private addresses (the embedded stack allows them)"
    )
    webhook_retry_hours: float = Field(24.0, gt=0, description="how long a webhook is retried, then dead-lettered")
    webhook_backoff_s: float = Field(5.0, gt=0, description="wait after a webhook's first failed attempt; then doubled")
    webhook_backoff_max_s: float = Field(3600.0, gt=0, description="longest wait between two attempts at a webhook")
    webhook_timeout_s: float = Field(10.0, gt=0, description="how long one webhook POST waits for its answer")

    def resolved_ledger_dsn(self) -> str:
        return self.ledger_dsn or str(self.state_dir / "ledger.sqlite3")

    def resolved_index_dsn(self) -> str:
        if self.index_dsn:
            return self.index_dsn
        if self.ledger_dsn.startswith(("postgresql://", "postgres://")):
            return self.ledger_dsn
        return str(self.state_dir / "gateway.sqlite3")

    def require_connections(self) -> None:
        """Raise a one-line ValueError naming the missing setting."""
        missing = [
            name
            for name, value in (
                ("I2V_NATS_URL", self.nats_url),
                ("I2V_S3_ENDPOINT", self.s3_endpoint),
            )
            if not value
        ]
        if missing:
            raise ValueError(f"missing setting(s): {', '.join(missing)} (or run `i2v stack up`)")


class _GivenEnvSource(EnvSettingsSource):
    """The environment source of pydantic-settings reading a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._given = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._given, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


def settings_from(environ: Mapping[str, str]) -> Settings:
    """Settings read from ``environ`` alone (``I2V_*`` keys, parsed as from the environment), ignoring
    ``os.environ``: what a process started with exactly ``environ`` would read."""
    values: dict[str, Any] = {
        name: field.get_default(call_default_factory=True) for name, field in Settings.model_fields.items()
    }
    values.update(_GivenEnvSource(Settings, environ)())
    return Settings(**values)
