"""All runtime configuration in one frozen object, read once from ``SHOPCAST_*`` variables.

A ``.env`` file in the working directory is read too (the environment wins).
A bad value fails at start with a message that names the variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_BUNDLE = Path(__file__).parent / "default_bundle"
ENV_PREFIX = "SHOPCAST_"


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the environment variable."""


class Settings(BaseSettings):
    """shopcast's configuration. Every field is set by ``SHOPCAST_<FIELD NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", frozen=True,
        extra="ignore",
    )

    # Kafka connection
    bootstrap_servers: str = Field("127.0.0.1:9092", min_length=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True

    # Topics
    app_id: str = Field("shopcast", min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    events_topic: str = "shop.events"
    predictions_topic: str = "shop.predictions"
    dlq_topic: str = "shop.events.dlq"
    erasure_topic: str = "shop.erasure"
    audit_topic: str = "shop.erasure.audit"
    partitions: int = Field(6, ge=1, le=10_000)
    replication_factor: int = Field(1, ge=1, le=32)

    # Windows and scoring
    # None means the bundle's own max_len (50 for the default bundle).
    window_length: int | None = Field(None, ge=1, le=255)
    window_ttl_seconds: int = Field(30 * 24 * 3600, ge=5)
    # Older records kept beyond the scored window so that a redelivery after a crash is
    # scored on its original window even when its user made this many newer events since
    # (see streams/pipeline.py). 20 bytes per record per user; 0 keeps a 50-event window
    # within 1 KB.
    redelivery_margin: int = Field(0, ge=0, le=200)
    # How often idle windows are looked for and deleted (tombstoned); at most this much
    # later than the TTL. Short values are for tests and the soak benchmark.
    window_sweep_seconds: int = Field(60, ge=1, le=3600)
    bundle_path: Path = DEFAULT_BUNDLE
    # How often to look for a new bundle at bundle_path, served without a restart (0: never).
    bundle_watch_seconds: int = Field(10, ge=0, le=3600)
    batch_size: int = Field(256, ge=1, le=10_000)
    # What one fetch brings is one batch (streams/bulk_consumer.py): a fetch waits for
    # batch_min_bytes of events, at most batch_max_wait_ms. Every batch has a fixed cost
    # (a fetch, a model call, a produce request: ~5-7 ms of CPU at a few events, measured
    # in benchmarks/README.md), so waiting to fill spends less CPU per event at moderate
    # rates, for up to batch_max_wait_ms of latency when traffic is light.
    batch_max_wait_ms: int = Field(10, ge=0, le=10_000)
    batch_min_bytes: int = Field(64 * 1024, ge=1, le=16 * 1024 * 1024)
    top_k: int = Field(10, ge=1, le=100)
    max_future_seconds: int = Field(24 * 3600, ge=0)
    inference_threads: int = Field(1, ge=1, le=64)
    # Users whose model state is held between their events, so that their next event runs
    # through the network alone (streams/user_states.py; ~24 KB each with the default
    # model). 0 scores every event on its whole window.
    state_users: int = Field(10_000, ge=0, le=10_000_000)

    # State and guarantees
    store: Literal["memory", "rocksdb"] = "memory"
    data_dir: Path = Path("./shopcast-data")
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    standby_replicas: int = Field(0, ge=0, le=8)
    pseudonym_secret: SecretStr | None = None

    # Operations
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9100, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> Settings:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                "SHOPCAST_SECURITY_PROTOCOL is SASL: set SHOPCAST_SASL_USERNAME and "
                "SHOPCAST_SASL_PASSWORD too")
        return self

    def to_environment(self) -> dict[str, str]:
        """These settings as ``SHOPCAST_*`` variables, for starting a worker process."""
        env = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
        return env

    @property
    def window_ttl_ms(self) -> int:
        """The window TTL (the retention period of a user's events) in milliseconds."""
        return self.window_ttl_seconds * 1000


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning validation errors into one message per bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            name = f"{ENV_PREFIX}{where.upper()}" if where else "settings"
            value = err.get("input")
            shown = "" if where == "" or "password" in where or "secret" in where \
                else f" (got {value!r})"
            lines.append(f"{name}: {err['msg']}{shown}")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None
