"""Configuration from env vars (STORMWATCH_*, KAFKA_BOOTSTRAP_SERVERS) and an optional YAML file.

Precedence, highest first: explicit overrides (CLI flags), env vars, the YAML file named by
``--config`` or ``STORMWATCH_CONFIG``, then the defaults below. Nested options use ``__`` in env
var names, e.g. ``STORMWATCH_TOPICS__RAW=my.raw``. docs/configuration.md lists every option.

Validation (``load_settings``) refuses unknown keys in every section and reports every problem in
one pass, each where it was made: ``file:line`` for the YAML file (the rules file's messages,
``stormwatch.schemas.yamlerrors``), the variable's name for the environment.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from stormwatch.schemas.limits import DEFAULT_LIMITS
from stormwatch.schemas.yamlerrors import (
    ConfigFileError,
    ConfigFormat,
    ErrorCollector,
    Loc,
    Place,
    YamlDocument,
    describe,
    error_loc,
)
from stormwatch.streams.core.canonical import NotesKeys

LIBRDKAFKA_DEBUG_CONTEXTS = (
    "generic", "broker", "topic", "metadata", "feature", "queue", "msg", "protocol", "cgrp",
    "security", "fetch", "interceptor", "plugin", "consumer", "admin", "eos", "mock", "assignor",
    "conf", "telemetry", "all",
)  # fmt: skip
"""What librdkafka's ``debug`` property takes (CONFIGURATION.md of librdkafka 2.x)."""


class _Section(BaseModel):
    """Base of the settings sections: an unknown key is an error, never a silently used default.

    A check across options reports at the option concerned (``ErrorCollector``, see
    GatewaySettings), so its message names that option's file line or env var.
    """

    model_config = ConfigDict(extra="forbid")


class KafkaSettings(_Section):
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
    max_poll_interval_ms: int = Field(
        default=60_000,
        ge=10_000,
        le=3_600_000,
        description=(
            "The stream stages' max.poll.interval.ms, which is also the rebalance timeout their "
            "consumer groups announce: how long a group coordinator waits for a member to rejoin "
            "before going on without it (after a broker restart, up to this long with no "
            "partitions assigned: docs/operations.md). Must exceed the longest pause between two "
            "polls of a healthy stage; at least the session timeout, 10000"
        ),
    )
    debug: str | None = Field(
        default=None,
        description=(
            "librdkafka debug contexts, comma-separated (e.g. cgrp,eos,consumer): for diagnosing a "
            "stalled consumer group or transaction; the lines go to stderr with librdkafka's own "
            "timestamps (docs/operations.md)"
        ),
    )

    @field_validator("debug")
    @classmethod
    def _known_debug_contexts(cls, value: str | None) -> str | None:
        if value is None:
            return None
        contexts = [c.strip() for c in value.split(",") if c.strip()]
        unknown = [c for c in contexts if c not in LIBRDKAFKA_DEBUG_CONTEXTS]
        if unknown or not contexts:
            raise ValueError(
                f"unknown librdkafka debug context(s) {', '.join(unknown) or '(none given)'}; "
                f"use a comma-separated list of: {', '.join(LIBRDKAFKA_DEBUG_CONTEXTS)}"
            )
        return ",".join(contexts)

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
        if self.debug is not None:
            conf["debug"] = self.debug
        return conf


class TopicSettings(_Section):
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
    topology: str = Field(
        default="stormwatch.topology",
        description="Compacted: runtime topology changes (components and depends_on) from a CMDB/exporter",
    )
    linker_input: str = Field(
        default="stormwatch.linker.input",
        description="Internal: group notes from the correlator to the linker, keyed by topology scope",
    )
    linker_state: str = Field(
        default="stormwatch.linker.state", description="Internal: the linker's compacted changelog"
    )
    correlator_clock: str = Field(
        default="stormwatch.correlator.clock",
        description="Internal, compacted: each correlator partition's clock demand, read by ingest",
    )
    approvals: str = Field(default="mitigation.approvals", description="Operators' approve/deny decisions")
    notifications: str = Field(
        default="notifications.log", description="The notifier's delivery log: sent, failed, given up"
    )
    notifications_dlq: str = Field(
        default="notifications.dlq", description="Notifications given up after their retry budget"
    )
    notify_state: str = Field(
        default="stormwatch.notify.state", description="Internal: the notifier's compacted changelog"
    )
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


class IngestSettings(_Section):
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
    max_future_ms: int = Field(
        default=0,
        ge=0,
        description="How far ahead of this worker's wall clock a raw record's timestamp may move its "
        "partition's watermark (event time). Records stamped further ahead are counted "
        "(stormwatch_raw_records_ahead_total) and their alerts wait until their time, so a producer "
        "whose clock runs ahead cannot move everybody's clock. Raise it only to replay storms "
        "stamped ahead faster than real time",
    )
    tick_on_demand: bool = Field(
        default=True,
        description="Tick a correlator partition only while something there waits on time (its clock "
        "demand, alerts just routed to it, or a linking partition's demand); false: every partition, "
        "every tick_interval_ms",
    )
    heartbeat_interval_ms: int = Field(
        default=60_000,
        ge=0,
        description="With tick_on_demand: tick every partition this often anyway (bounds how stale an "
        "idle partition's clock gets); 0 = never",
    )
    notes_key_file: str | None = Field(
        default=None,
        description="File of the secret key the gateway signs its notes records with and ingest "
        "verifies them with; a verified record's alerts are not checked again (docs/security.md). "
        "One key per line, each at least 32 bytes, used as written: the first signs, every one verifies "
        "(rotation); make one from 32 random bytes in base64 (docs/input-formats.md, signed notes). "
        "None = no signature, every alert checked again",
    )

    def notes_keys(self) -> NotesKeys | None:
        """The keys of ``notes_key_file`` (None when unset); read at a stage's start, so a file
        that is missing, unreadable or holds a short key stops it with a ConfigError."""
        if self.notes_key_file is None:
            return None
        return NotesKeys(_read_keys(Path(self.notes_key_file)))


class CorrelatorSettings(_Section):
    rules_file: str | None = Field(
        default=None, description="YAML correlation rules; None = built-in default"
    )
    topology_file: str | None = Field(
        default=None, description="YAML topology; None = no topology (groups are never linked)"
    )
    max_batch_records: int = Field(
        default=2_000, ge=1, description="Input records per poll (one transaction)"
    )


class GatewaySettings(_Section):
    """The HTTP gateway (`stormwatch gateway`, docs/gateway.md); it writes to ``topics.raw``."""

    host: str = Field(default="127.0.0.1", description="Address to listen on")
    port: int = Field(default=9095, ge=0, le=65535, description="Port to listen on (0: any free port)")
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1, description="Larger request bodies are refused with 413"
    )
    bearer_token: str | None = Field(
        default=None, repr=False, description="When set, alert endpoints need 'Authorization: Bearer <token>'"
    )
    insecure_no_auth: bool = Field(
        default=False,
        description="Allow a non-loopback host without bearer_token (--insecure-no-auth); logs a warning",
    )
    tls_cert_file: str | None = Field(default=None, description="PEM certificate (chain); enables HTTPS")
    tls_key_file: str | None = Field(default=None, description="PEM private key of tls_cert_file")
    delivery_timeout_ms: int = Field(
        default=5_000, ge=100, description="Longest wait for Kafka's acknowledgement before answering 503"
    )
    request_read_timeout_ms: int = Field(
        default=10_000,
        ge=100,
        description="A request (headers and body) must arrive within this long, else the connection is "
        "closed; also the idle keep-alive timeout",
    )
    max_connections: int = Field(
        default=1024, ge=1, description="Open connections beyond this are answered 503 and closed at once"
    )
    console_max_closed_incidents: int = Field(
        default=20_000,
        ge=100,
        description="Closed incidents the console and the read API keep (the oldest closed are let go; "
        "about 7 KiB each, and the ids of five times as many let go, about 100 bytes each; the "
        "audit log keeps every one): bounds the gateway's memory",
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> GatewaySettings:
        # Both checks, each at the option that is set (its file line or env var), in one pass.
        errors = ErrorCollector()
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            given = "tls_cert_file" if self.tls_key_file is None else "tls_key_file"
            errors.add((given,), "gateway.tls_cert_file and gateway.tls_key_file must be set together")
        if self.bearer_token is not None and not self.bearer_token.strip():
            errors.add(("bearer_token",), "gateway.bearer_token is empty; unset it to disable authentication")
        errors.raise_if_any(type(self).__name__)
        return self


class AgentSettings(_Section):
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


class NotifySettings(_Section):
    """The notifier (`stormwatch notify`, docs/notifications.md): incident events -> receivers."""

    notify_file: str | None = Field(
        default=None, description="The notifier file (routes, receivers); --notify-file overrides it"
    )
    external_url: str = Field(
        default="", description="Link to stormwatch in messages (webhook externalURL, PagerDuty client_url)"
    )
    send_timeout_ms: int = Field(
        default=10_000, ge=100, le=120_000, description="Longest wait for one receiver's answer to one send"
    )
    max_parallel: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Sends in flight at once, and per transaction: at most this many are sent twice after a crash",
    )
    max_batch_records: int = Field(default=500, ge=1, description="Input records per poll (one transaction)")


_ENV_READ_BY_LOADER: ContextVar[bool] = ContextVar("_ENV_READ_BY_LOADER", default=False)
"""Set while load_settings validates: it has read the env vars itself, to name each in messages."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STORMWATCH_", env_nested_delimiter="__", extra="forbid")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    correlator: CorrelatorSettings = Field(default_factory=CorrelatorSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    log_level: str = Field(
        default="WARNING",
        validation_alias=AliasChoices("STORMWATCH_LOG_LEVEL", "log_level"),
        description="Python log level of the structured logs on stderr (-v / -vv raise it)",
    )
    log_format: Literal["json", "text"] = Field(
        default="json",
        description="Logs on stderr: one JSON object per line, or text for a terminal (--log-format)",
    )
    shutdown_timeout_ms: int = Field(
        default=10_000,
        ge=1000,
        description="After SIGTERM/SIGINT a worker ends within this long, closed cleanly or not",
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
        if _ENV_READ_BY_LOADER.get():
            return (init_settings,)
        return (init_settings, env_settings)


class ConfigError(ValueError):
    """A configuration problem, with a message that says what to fix (one line per problem)."""


class SettingsFileError(ConfigFileError):
    """Problems of the YAML configuration file; ``load_settings`` reports them in a ConfigError."""


def secret_fields() -> frozenset[str]:
    """Options whose values are never shown (``repr=False``): masked by ``config show``, and never
    quoted in an error message."""
    return frozenset(
        name
        for section in Settings.model_fields.values()
        if isinstance(section.annotation, type) and issubclass(section.annotation, BaseModel)
        for name, info in section.annotation.model_fields.items()
        if info.repr is False
    )


def _explain(error: ErrorDetails, place: Place) -> str | None:
    """A wrong value of a secret option is described in pydantic's words, which never quote it."""
    parent, name = place.parent, place.field
    if error["type"] == "value_error" or parent is None or name is None:
        return None  # our own validators' words: they never quote a value
    return str(error["msg"]) if parent.model_fields[name].repr is False else None


# How the settings file is parsed and explained: the same file:line messages as the rules file.
SETTINGS_FILE = ConfigFormat(Settings, SettingsFileError, "config file", explain=_explain)

_ENV_PREFIX = "stormwatch_"  # pydantic-settings matches names case-insensitively, lowercased
_ALIASES = {
    alias: name
    for name, info in Settings.model_fields.items()
    if isinstance(info.validation_alias, AliasChoices)
    for alias in info.validation_alias.choices
    if isinstance(alias, str) and alias != name
}
"""Top-level options read from env vars under another key (STORMWATCH_LOG_LEVEL): {key: option}."""


@dataclass(frozen=True, slots=True)
class _Environment:
    """The options set by env vars, the variable that set each (for messages), and the variables
    whose value could not even be read (not JSON where JSON is needed)."""

    values: dict[str, Any]
    names: dict[tuple[str, ...], str]
    problems: list[str]

    @classmethod
    def read(cls) -> _Environment:
        source = EnvSettingsSource(Settings)
        original = {name.lower(): name for name in os.environ}
        names: dict[tuple[str, ...], str] = {}
        for key in source.env_vars:
            path = tuple(key.removeprefix(_ENV_PREFIX).split("__"))
            if key.startswith(_ENV_PREFIX) and path[0] in Settings.model_fields:
                names[path] = original.get(key, key.upper())
        problems: list[str] = []
        try:
            values = source()
        except SettingsError:
            # One variable at a time (parents before the options inside them, as pydantic-settings
            # merges them), so that every unreadable variable is named and the others still count.
            values, everything = {}, source.env_vars
            for path, name in sorted(names.items(), key=lambda item: len(item[0])):
                key = name.lower()
                source.env_vars = {key: everything[key]}
                try:
                    values = _deep_merge(values, source())
                except SettingsError as exc:
                    problems.append(_not_json(name, path, exc))
            source.env_vars = everything
        values = {_ALIASES.get(key, key): value for key, value in values.items()}
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if bootstrap and "STORMWATCH_KAFKA__BOOTSTRAP_SERVERS" not in os.environ:
            kafka = values.get("kafka", {})
            if isinstance(kafka, dict):
                values["kafka"] = {**kafka, "bootstrap_servers": bootstrap}
                names["kafka", "bootstrap_servers"] = "KAFKA_BOOTSTRAP_SERVERS"
        return cls(values, names, problems)

    def setters(self, loc: Loc) -> tuple[list[str], bool]:
        """The variables that set the value at ``loc``: the variable of ``loc`` or of a value around
        it (a JSON value; then True: the message needs the path inside), else those inside it."""
        path = tuple(str(seg).lower() for seg in loc)
        for n in range(len(path), 0, -1):
            if path[:n] in self.names:
                return [self.names[path[:n]]], n < len(path)
        return sorted(name for p, name in self.names.items() if p[: len(path)] == path), False


def _not_json(name: str, path: tuple[str, ...], exc: SettingsError) -> str:
    """An env var holding a list or a section must be JSON; the value itself is not repeated."""
    place = SETTINGS_FILE.locate(path)
    example = '{"key": "value"}' if place.expected is not None else '["a", "b"]'
    return f"{name}: {place.path} takes JSON, e.g. {example}; {exc.__cause__ or exc}"


def _given(data: Any, loc: Loc) -> bool:
    """Whether ``data`` sets the value at ``loc``, itself or as part of a larger value."""
    for seg in loc:
        if not isinstance(data, dict):
            return True
        if seg not in data:
            return False
        data = data[seg]
    return True


MIN_NOTES_KEY_BYTES = 32
"""A notes key shorter than this is refused: HMAC-SHA256's strength needs 256 bits of secret."""


def _read_keys(path: Path) -> list[bytes]:
    """The non-blank lines of a key file, stripped; the messages never quote a key."""
    make = f"make one with: head -c 32 /dev/urandom | base64 > {path}"
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        raise ConfigError(f"ingest.notes_key_file {path} does not exist; {make}") from None
    except OSError as exc:
        raise ConfigError(f"ingest.notes_key_file {path} cannot be read ({exc.strerror or exc})") from None
    keys = [line.strip() for line in lines if line.strip()]
    if not keys:
        raise ConfigError(f"ingest.notes_key_file {path} holds no key; {make}")
    for number, key in enumerate(keys, 1):
        if len(key) < MIN_NOTES_KEY_BYTES:
            raise ConfigError(
                f"ingest.notes_key_file {path}: key {number} is {len(key)} bytes, at least "
                f"{MIN_NOTES_KEY_BYTES} are needed; {make}"
            )
    return keys


def _read_file(path: Path) -> YamlDocument:
    """The YAML file with its lines; a file that cannot be used at all is the only problem reported."""
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass an existing YAML file with --config")
    try:
        text = path.read_text(encoding="utf-8")
        doc = SETTINGS_FILE.parse(text, str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(SETTINGS_FILE.unreadable(str(path), exc))) from None
    except ConfigFileError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(doc.data, dict):
        keys = ", ".join(SETTINGS_FILE.keys(Settings))
        problem = ("", f"expected a mapping with keys: {keys}; got {describe(doc.data)}", 1)
        raise ConfigError(str(SettingsFileError(str(path), [problem])))
    return doc


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Merge defaults, the YAML file, env vars (incl. KAFKA_BOOTSTRAP_SERVERS) and overrides.

    Every problem is reported in one pass, each where it was made: ``file:line: path: ...`` for the
    file, ``STORMWATCH_X__Y: ...`` for an env var, ``invalid configuration: path: ...`` for the
    caller's overrides. Messages never quote the value of a secret option.
    """
    path = config_file or os.environ.get("STORMWATCH_CONFIG")
    doc = _read_file(Path(path)) if path else None
    env = _Environment.read()
    file_data: dict[str, Any] = doc.data if doc is not None else {}
    merged = _deep_merge(_deep_merge(file_data, env.values), overrides)
    settings: Settings | None = None
    errors: list[ErrorDetails] = []
    token = _ENV_READ_BY_LOADER.set(True)
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        errors = exc.errors()
    finally:
        _ENV_READ_BY_LOADER.reset(token)
    in_file: list[tuple[Loc, str]] = []
    from_env, other = list(env.problems), []
    for error in errors:
        loc = error_loc(error)
        place = SETTINGS_FILE.locate(loc)
        message = SETTINGS_FILE.message(error, place)
        setters, inside = env.setters(loc)
        if _given(overrides, loc) or not (setters or (doc is not None and _given(file_data, loc))):
            other.append(f"invalid configuration: {place.path}: {message}")
        elif setters:
            from_env.append(f"{', '.join(setters)}: {f'{place.path}: ' if inside else ''}{message}")
        else:
            in_file.append((loc, message))
    located = [*doc.duplicates, *SETTINGS_FILE.problems(doc, in_file)] if doc is not None else []
    if settings is not None and not (located or from_env or other):
        return settings
    source = doc.source if doc is not None else ""
    lines = str(SettingsFileError(source, sorted(located, key=lambda p: p[2] or 0))).splitlines()
    raise ConfigError("\n".join([*lines, *sorted(from_env), *other]))


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
