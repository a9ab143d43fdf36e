"""Configuration from env vars (STORMWATCH_*, KAFKA_BOOTSTRAP_SERVERS) and an optional YAML file.

Precedence, highest first: explicit overrides (CLI flags), env vars, the YAML file named by
``--config`` or ``STORMWATCH_CONFIG``, then the defaults below. Nested options use ``__`` in env
var names, e.g. ``STORMWATCH_TOPICS__RAW=my.raw``. docs/configuration.md lists every option.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from stormwatch.schemas.limits import DEFAULT_LIMITS


class KafkaSettings(BaseModel):
    """How every client reaches the brokers."""

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="host:port list; KAFKA_BOOTSTRAP_SERVERS also sets it"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="How clients talk to the brokers"
    )
    sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] | None = Field(
        default=None, description="SASL mechanism with SASL_PLAINTEXT / SASL_SSL"
    )
    sasl_username: str | None = Field(default=None, description="SASL user")
    sasl_password: str | None = Field(default=None, repr=False, description="SASL password (never logged)")
    ssl_ca_location: str | None = Field(default=None, description="CA bundle (PEM) that signed the brokers")
    ssl_certificate_location: str | None = Field(default=None, description="Client certificate (PEM), mTLS")
    ssl_key_location: str | None = Field(default=None, description="Client private key (PEM), mTLS")
    client_id: str = Field(default="stormwatch", description="client.id reported to the brokers")

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings common to producers, consumers and the admin client."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "client.id": self.client_id,
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
        }
        conf.update({k: v for k, v in optional.items() if v is not None})
        return conf


class TopicSettings(BaseModel):
    """Topic names and sizing. User-facing names first, then the internal ones."""

    raw: str = Field(default="alerts.raw", description="Where monitoring systems and the gateway publish")
    dlq: str = Field(default="alerts.dlq", description="Dead letters: bad input with the reason")
    incidents: str = Field(default="incidents.events", description="The audit log; notifiers subscribe here")
    commands: str = Field(default="incidents.commands", description="Operator commands (ack, silence ...)")
    mitigation_commands: str = Field(default="mitigation.commands", description="Commands for executors")
    mitigation_results: str = Field(default="mitigation.results", description="What became of commands")
    correlator_input: str = Field(
        default="stormwatch.correlator.input", description="Internal: routed alert batches, ticks, commands"
    )
    correlator_state: str = Field(
        default="stormwatch.correlator.state", description="Internal: the correlator's compacted changelog"
    )
    silences: str = Field(
        default="stormwatch.silences", description="Compacted: current silences, for listing"
    )
    agent_state: str = Field(
        default="stormwatch.agent.state", description="Compacted: the agent's guard state"
    )
    approvals: str = Field(default="mitigation.approvals", description="Operators' approve/deny decisions")
    partitions: int = Field(default=6, ge=1, description="Partitions of the partitioned topics")
    replication_factor: int = Field(default=1, ge=1, description="Replicas of every topic (3 in production)")
    min_insync_replicas: int = Field(default=1, ge=1, description="min.insync.replicas (2 with 3 replicas)")
    dlq_retention_ms: int = Field(default=30 * 24 * 3600 * 1000, description="How long dead letters are kept")
    raw_retention_ms: int = Field(
        default=7 * 24 * 3600 * 1000, description="Retention of the raw and internal input topics"
    )
    max_message_bytes: int = Field(
        default=16 * 1024 * 1024, description="Largest record on the incident topic"
    )

    @classmethod
    def name_fields(cls) -> tuple[str, ...]:
        """The fields that name a topic (every ``str`` field): the one list of the pipeline's topics."""
        return tuple(name for name, f in cls.model_fields.items() if f.annotation is str)

    def names(self) -> dict[str, str]:
        """{field: topic name} for every topic of the pipeline."""
        return {field: getattr(self, field) for field in self.name_fields()}

    @classmethod
    def with_prefix(cls, prefix: str, suffix: str = "", **overrides: Any) -> dict[str, Any]:
        """Topic settings that give every topic a unique name (``{prefix}.{field}{suffix}``):
        for tests and benchmarks that run pipelines side by side on one cluster."""
        names: dict[str, Any] = {field: f"{prefix}.{field}{suffix}" for field in cls.name_fields()}
        names.update(overrides)
        return names


class IngestSettings(BaseModel):
    # The parse limits' defaults are defined once, with the limits (schemas.limits).
    max_record_bytes: int = Field(
        default=DEFAULT_LIMITS.max_record_bytes, description="Larger raw records are dead-lettered"
    )
    max_alerts_per_record: int = Field(
        default=DEFAULT_LIMITS.max_alerts_per_record, description="More alerts in one record: dead-lettered"
    )
    max_labels: int = Field(
        default=DEFAULT_LIMITS.max_labels, description="More labels on one alert: dead-lettered (label bombs)"
    )
    max_label_bytes: int = Field(
        default=DEFAULT_LIMITS.max_label_bytes, description="Longest label name or value"
    )
    max_json_depth: int = Field(
        default=DEFAULT_LIMITS.max_json_depth, description="Deeper JSON nesting: dead-lettered"
    )
    max_batch_records: int = Field(default=5_000, ge=1, description="Raw records per poll (one transaction)")
    tick_interval_ms: int = Field(
        default=25, ge=10, description="How often clock ticks enter the log (bounds timer delay)"
    )


class CorrelatorSettings(BaseModel):
    rules_file: str | None = Field(
        default=None, description="YAML correlation rules; None = built-in default"
    )
    max_batch_records: int = Field(
        default=2_000, ge=1, description="Input records per poll (one transaction)"
    )


class GatewaySettings(BaseModel):
    """The HTTP gateway (`stormwatch gateway`, docs/gateway.md); it writes to ``topics.raw``."""

    host: str = Field(default="127.0.0.1", description="Address to listen on")
    port: int = Field(default=9095, ge=0, le=65535, description="Port to listen on (0: any free port)")
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1, description="Larger request bodies are refused with 413"
    )
    bearer_token: str | None = Field(
        default=None, repr=False, description="When set, alert endpoints need 'Authorization: Bearer <token>'"
    )
    tls_cert_file: str | None = Field(default=None, description="PEM certificate (chain); enables HTTPS")
    tls_key_file: str | None = Field(default=None, description="PEM private key of tls_cert_file")
    delivery_timeout_ms: int = Field(
        default=5_000, ge=100, description="Longest wait for Kafka's acknowledgement before answering 503"
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> GatewaySettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("gateway.tls_cert_file and gateway.tls_key_file must be set together")
        if self.bearer_token is not None and not self.bearer_token.strip():
            raise ValueError("gateway.bearer_token is empty; unset it to disable authentication")
        return self


class AgentSettings(BaseModel):
    """The mitigation agent (`stormwatch agent`) and the executors (`stormwatch executor`)."""

    workflows_file: str | None = Field(default=None, description="Workflow YAML; --workflows overrides it")
    dry_run: bool = Field(default=False, description="Decide and record every step, execute none")
    allow_urls: list[str] = Field(
        default_factory=list, description="URL prefixes the webhook executor may POST to (--allow-url adds)"
    )
    allow_programs: list[str] = Field(
        default_factory=list,
        description="Absolute paths (or directories ending in /) exec may run (--allow-program adds)",
    )
    allow_topics: list[str] = Field(
        default_factory=list, description="Topics the kafka executor may publish to (--allow-topic adds)"
    )
    dispatch_timeout_ms: int = Field(
        default=300_000, ge=1000, description="A command no executor started within this long is never run"
    )
    result_grace_ms: int = Field(
        default=60_000, ge=0, description="How long past a command's timeout the agent waits for its result"
    )
    max_parallel: int = Field(default=4, ge=1, le=64, description="Actions one executor runs at once")
    max_batch_records: int = Field(default=500, ge=1, description="Input records per poll (one transaction)")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STORMWATCH_", env_nested_delimiter="__", extra="forbid")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    correlator: CorrelatorSettings = Field(default_factory=CorrelatorSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    log_level: str = Field(
        default="WARNING",
        validation_alias=AliasChoices("STORMWATCH_LOG_LEVEL", "log_level"),
        description="Python log level of the structured logs on stderr (-v / -vv raise it)",
    )
    metrics_port: int = Field(default=0, description="Port for /metrics; 0 disables")
    metrics_host: str = Field(
        default="127.0.0.1", description="Address /metrics listens on; 0.0.0.0 in containers"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings)


class ConfigError(ValueError):
    """A configuration problem, with a message that says what to fix."""


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Merge defaults, the YAML file, env vars (incl. KAFKA_BOOTSTRAP_SERVERS) and overrides."""
    path = config_file or os.environ.get("STORMWATCH_CONFIG")
    data: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} not found; pass an existing YAML file with --config")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
        data = loaded
    settings = Settings()  # env vars only
    merged = _deep_merge(data, settings.model_dump(exclude_unset=True))
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if bootstrap and "STORMWATCH_KAFKA__BOOTSTRAP_SERVERS" not in os.environ:
        merged.setdefault("kafka", {})["bootstrap_servers"] = bootstrap
    merged = _deep_merge(merged, overrides)
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        # Never echo the input: a section holding a password or token must not reach stderr.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc'])}: {err['msg']}"
            for err in exc.errors(include_input=False, include_url=False)
        )
        raise ConfigError(f"invalid configuration: {problems}") from None


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
