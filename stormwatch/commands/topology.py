"""`stormwatch topology check|show|publish|suggest`: the operator's side of the topology (issue #12).

The topology is a file (``correlator.topology_file``) plus the records of the compacted topic
``topics.topology``, which a service catalog, CMDB or Kubernetes exporter publishes to so that the
topology changes without a restart. ``check`` validates a file, ``show`` prints the topology in
force (the file with the topic's changes applied in log order, as a stage applies them),
``publish`` writes records the way an exporter would, and ``suggest`` proposes depends_on edges
from the audit log for a person to review (streams.core.cooccurrence); nothing is applied
automatically.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import yaml
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from pydantic import BaseModel, ConfigDict, ValidationError

from stormwatch.commands.args import positive_int
from stormwatch.commands.checking import check_files
from stormwatch.config import Settings
from stormwatch.errors import UserError
from stormwatch.kafka.client import delivery_failure, make_producer, read_topic, require_topic
from stormwatch.loaders import load_topology, read_config_text
from stormwatch.output import ProgressLine, dump_json, warn
from stormwatch.schemas.common import ms_from_dt
from stormwatch.schemas.durations import DURATION_HELP, format_duration, parse_duration
from stormwatch.schemas.incident import IncidentEvent, IncidentEventType
from stormwatch.schemas.topology import (
    TopologyComponent,
    TopologyUpdate,
    component_key,
    decode_topology_record,
    parse_ref,
)
from stormwatch.schemas.yamlerrors import ConfigFileError, ConfigFormat, Problem, YamlDocument
from stormwatch.streams.core.cooccurrence import (
    Suggestion,
    Suggestions,
    count_cooccurrences,
    openings_from_events,
    suggest_edges,
    suggestion_topology,
)
from stormwatch.streams.core.topology import (
    ComponentId,
    Topology,
    TopologyChangeError,
    TopologyConfig,
    TopologyError,
)

PUBLISH_TIMEOUT_S = 30.0  # for the broker's acknowledgement of every record of one publish
METADATA_TIMEOUT_S = 5.0
MAX_REFUSED_SHOWN = 20


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "topology",
        help="check, show, publish and suggest the topology (components and depends_on)",
        description="The topology that relates label groups (docs/cli.md, 'Topology').",
    )
    actions = parser.add_subparsers(dest="topology_command", metavar="ACTION")
    actions.required = True

    check = actions.add_parser(
        "check",
        help="validate topology files; print a summary of each",
        description="Validate topology files: every problem as FILE:LINE: PATH: MESSAGE (exit 1), "
        "else a summary: components per kind, edges, scopes.",
    )
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(handler=run_check)

    file_help = "topology file (default: correlator.topology_file)"
    show = actions.add_parser(
        "show",
        help="the topology in force: the file plus the changes published to the topology topic",
        description="Print the topology in force as a topology file: the file with every record of "
        "the topology topic applied in log order. Refused records are warnings.",
    )
    show.add_argument("--file", metavar="FILE", help=file_help)
    show.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    show.set_defaults(handler=run_show)

    publish = actions.add_parser(
        "publish",
        help="publish components to the topology topic (what a CMDB exporter does)",
        description="Publish components (a YAML or JSON list of components, or a mapping with "
        "components:) to the compacted topology topic, keyed by component, and wait for the "
        "broker's acknowledgement; or delete components with --delete (tombstones).",
    )
    publish.add_argument("source", nargs="?", metavar="FILE_OR_-", help="components to publish; - is stdin")
    publish.add_argument(
        "--delete",
        action="append",
        default=[],
        metavar="KIND/NAME",
        help="publish a tombstone for this component instead; repeatable",
    )
    publish.add_argument(
        "--scope",
        action="append",
        default=[],
        metavar="LABEL=VALUE",
        help="with --delete: the scope of the component (one per scope label; none: every scope)",
    )
    publish.add_argument("--file", metavar="FILE", help=f"{file_help}; its scope labels are checked")
    publish.set_defaults(handler=run_publish)

    suggest = actions.add_parser(
        "suggest",
        help="propose depends_on edges from the audit log, as YAML to review",
        description="Read the incident openings of the audit log and propose 'B depends_on A' where "
        "A's incidents are usually followed by B's within --window. Prints a topology YAML fragment "
        "with support and confidence as comments; applies nothing.",
    )
    suggest.add_argument(
        "--window", default="2m", metavar="DURATION", help="B opens at most this long after A (2m)"
    )
    suggest.add_argument(
        "--min-support", type=positive_int, default=3, metavar="N", help="at least N co-occurrences (3)"
    )
    suggest.add_argument(
        "--min-confidence",
        type=_fraction,
        default=0.6,
        metavar="X",
        help="co-occurrences / openings of A at least X, 0 < X <= 1 (0.6)",
    )
    suggest.add_argument("--since", metavar="DURATION", help="only incidents opened this long ago or later")
    suggest.add_argument("--file", metavar="FILE", help=file_help)
    suggest.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    suggest.set_defaults(handler=run_suggest)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text}")
    return value


def _duration(text: str, flag: str) -> int:
    try:
        ms = parse_duration(text)
    except ValueError as exc:
        raise UserError(f"{flag}: {exc}") from None
    if ms <= 0:
        raise UserError(f"{flag} must be longer than zero, got {text!r}; {DURATION_HELP}")
    return ms


def _load_file(path: str) -> TopologyConfig:
    """A topology file for show, publish and suggest: an invalid one is a user error (exit 2)."""
    try:
        return load_topology(path)
    except TopologyError as exc:
        raise UserError(f"the topology file is invalid:\n{exc}") from None


# ---------------------------------------------------------------------------------------------- check


def run_check(args: argparse.Namespace, settings: Settings) -> int:
    return check_files(args.files, load_topology, TopologyError, render_summary)


def render_summary(path: str, config: TopologyConfig) -> str:
    """What a valid file declares, in numbers a reviewer can compare with what they meant."""
    kinds = Counter(c.kind for c in config.components)
    scopes = Counter(_scope_text(c.scope) for c in config.components)
    edges = sum(len(c.depends_on) for c in config.components)
    label_kinds = config.label_kinds()
    link = config.link
    rows = [
        ("scope labels", ", ".join(config.scope_labels) or "none (one global scope)"),
        (
            "label components",
            f"{len(config.label_components)} entries naming {len(label_kinds)} kind(s): "
            + (", ".join(label_kinds) or "none"),
        ),
        (
            "implied",
            f"{len(config.implied_relations)} relation(s)"
            + (" (the defaults)" if config.implied is None else ""),
        ),
        ("components", f"{len(config.components)} declared" + _counts(kinds)),
        ("depends_on", f"{edges} edge(s)"),
        ("scopes", ", ".join(f"{scope} {n}" for scope, n in sorted(scopes.items())) or "none"),
        (
            "link",
            f"max_hops {link.max_hops}, window {format_duration(link.window_ms)}, "
            f"common_upstream {str(link.common_upstream).lower()}",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join([f"{path}: OK", *(f"  {name.ljust(width)}  {value}" for name, value in rows)])


def _scope_text(scope: dict[str, str] | None) -> str:
    """``{cluster="prod-eu-1"}`` as in component keys, or ``every scope``."""
    if scope is None:
        return "every scope"
    return component_key("kind", "name", scope).removesuffix("kind/name")


def _counts(counter: Counter[str]) -> str:
    if not counter:
        return ""
    return ": " + ", ".join(f"{k} {n}" for k, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


# ---------------------------------------------------------------------------------------------- show


@dataclass
class Effective:
    """The topology in force and how it came about: which declarations the topic changed and
    which records it refused (``where: reason``)."""

    topology: Topology
    file: str | None
    records: int = 0
    changed: int = 0
    from_topic: set[str] = field(default_factory=set)
    refused: list[tuple[int, int, str, str]] = field(default_factory=list)  # partition, offset, key, why

    def removed(self) -> list[str]:
        """Declarations of the file that a tombstone took back."""
        declared = {c.key for c in self.topology.declared()}
        return sorted({c.key for c in self.topology.config.components} - declared)


def effective_topology(settings: Settings, config: TopologyConfig, file: str | None) -> Effective:
    """``config`` with every record of the topology topic applied in log order, like a stage
    applies them: a record that cannot apply changes nothing and is listed as refused."""
    topic = settings.topics.topology
    effective = Effective(Topology(config), file)
    progress = ProgressLine(f"reading {topic}")
    try:
        for msg in read_topic(settings, topic, progress=progress.update):
            effective.records += 1
            raw_key = msg.key()
            key = raw_key.decode("utf-8", "replace") if raw_key is not None else ""
            try:
                update = decode_topology_record(raw_key, msg.value())
                changed = effective.topology.apply(update)
            except ValueError as exc:  # TopologyChangeError is one
                effective.refused.append((msg.partition() or 0, msg.offset() or 0, key, str(exc)))
                continue
            if changed:
                effective.changed += 1
                if update.component is None:
                    effective.from_topic.discard(update.key)
                else:
                    effective.from_topic.add(update.key)
    finally:
        progress.close()
    return effective


def _warn_refused(command: str, topic: str, refused: Sequence[tuple[int, int, str, str]]) -> None:
    for partition, offset, key, why in refused[:MAX_REFUSED_SHOWN]:
        warn(command, f"refused record {key!r} of {topic} (partition {partition} offset {offset}): {why}")
    if len(refused) > MAX_REFUSED_SHOWN:
        warn(command, f"... and {len(refused) - MAX_REFUSED_SHOWN} more refused record(s)")


def run_show(args: argparse.Namespace, settings: Settings) -> int:
    path = args.file or settings.correlator.topology_file
    config = _load_file(path) if path else TopologyConfig()
    topic = settings.topics.topology
    effective = effective_topology(settings, config, path)
    _warn_refused("topology show", topic, effective.refused)
    if args.json:
        print(dump_json(show_dict(effective, topic)))
        return 0
    source = path if path else "no topology file (correlator.topology_file is unset: nothing is linked)"
    header = [
        f"effective topology: {source}",
        f"+ {effective.records} record(s) of {topic}: {effective.changed} changed the topology, "
        f"{len(effective.refused)} refused",
    ]
    removed = effective.removed()
    if removed:
        header.append(f"removed from the file by the topic: {', '.join(removed)}")
    print(render_topology_yaml(effective.topology, header, from_topic=effective.from_topic), end="")
    return 0


def show_dict(effective: Effective, topic: str) -> dict[str, Any]:
    """``topology show --json``: where the topology came from and every declared component."""
    topology = effective.topology
    return {
        "file": effective.file,
        "topic": topic,
        "records": effective.records,
        "changed": effective.changed,
        "refused": [
            {"partition": p, "offset": o, "key": k, "reason": why} for p, o, k, why in effective.refused
        ],
        "removed": effective.removed(),
        "scope_labels": list(topology.scope_labels),
        "components": [
            {
                "key": c.key,
                "source": "topic" if c.key in effective.from_topic else "file",
                **c.model_dump(mode="json", exclude={"schema_version"}),
            }
            for c in topology.declared()
        ],
    }


# A plain YAML scalar needs no quotes only when it cannot be read as anything but this string.
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
_YAML_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "null", "y", "n"})


def yaml_scalar(text: str) -> str:
    """``text`` as a YAML scalar that reads back as the same string, also inside a flow
    collection: plain when it is safe, else single- or double-quoted (JSON's escapes are YAML's)."""
    if _PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    if "'" not in text and text.isprintable():
        return f"'{text}'"
    return orjson.dumps(text).decode()


def _flow(items: Sequence[tuple[str, str]]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"


def _scope_flow(scope: dict[str, str]) -> str:
    return _flow([(yaml_scalar(k), yaml_scalar(v)) for k, v in sorted(scope.items())])


def _component_flow(c: TopologyComponent) -> str:
    items = [("kind", yaml_scalar(c.kind)), ("name", yaml_scalar(c.name))]
    if c.scope is not None:
        items.append(("scope", _scope_flow(c.scope)))
    if c.depends_on:
        items.append(("depends_on", "[" + ", ".join(yaml_scalar(d) for d in c.depends_on) + "]"))
    return _flow(items)


def _config_yaml(config: TopologyConfig) -> list[str]:
    """Everything of a topology file but its components, in the file's own spelling."""
    lines = ["scope_labels: [" + ", ".join(yaml_scalar(s) for s in config.scope_labels) + "]"]
    lines.append("label_components:")
    for entry in config.label_components:
        items = [("label", yaml_scalar(entry.label)), ("kind", yaml_scalar(entry.kind))]
        if entry.strip_port:
            items.append(("strip_port", "true"))
        if entry.match:
            items.append(("match", "[" + ", ".join(yaml_scalar(str(m)) for m in entry.match) + "]"))
        lines.append(f"  - {_flow(items)}")
    if config.implied is not None:
        lines.append("implied:" + ("" if config.implied else " []"))
        for rel in config.implied:
            items = [("from", yaml_scalar(rel.from_)), ("to", yaml_scalar(rel.to))]
            items.append(("relation", yaml_scalar(rel.relation)))
            if rel.mutual:
                items.append(("mutual", "true"))
            lines.append(f"  - {_flow(items)}")
    link = config.link
    lines.append(
        f"link: {{max_hops: {link.max_hops}, window: {format_duration(link.window_ms)}, "
        f"common_upstream: {str(link.common_upstream).lower()}}}"
    )
    return lines


def render_topology_yaml(topology: Topology, header: Sequence[str], *, from_topic: set[str]) -> str:
    """The topology in force as a topology file (``topology check`` accepts it); each component
    says whether its declaration came from the file or the topic."""
    lines = [f"# {line}" for line in header]
    lines += _config_yaml(topology.config)
    declared = topology.declared()
    lines.append("components:" + ("" if declared else " []"))
    for c in declared:
        origin = "topic" if c.key in from_topic else "file"
        lines.append(f"  - {_component_flow(c)}  # {origin}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- publish


class PublishDocument(BaseModel):
    """What ``publish`` reads: components, as in the topology file's ``components:``."""

    model_config = ConfigDict(extra="forbid")

    components: list[TopologyComponent]


PUBLISH_FILE = ConfigFormat(PublishDocument, TopologyError, "components file")


def parse_components(text: str, source: str, scope_labels: Sequence[str]) -> list[TopologyComponent]:
    """The components of a publish document: a list, or a mapping with ``components:``. Every
    problem in one pass as ``file:line: path: message``, including a component given twice and a
    scope that does not give exactly the topology's scope labels (the stage would refuse it)."""
    doc = PUBLISH_FILE.parse(text, source)
    listed = isinstance(doc.data, list) and doc.root is not None
    if listed and doc.root is not None:
        root = doc.root
        key = yaml.ScalarNode("tag:yaml.org,2002:str", "components", root.start_mark, root.start_mark)
        mapping = yaml.MappingNode("tag:yaml.org,2002:map", [(key, root)], root.start_mark, root.end_mark)
        doc = YamlDocument(source, {"components": doc.data}, mapping, doc.duplicates)
    problems: list[Problem] = []
    components: list[TopologyComponent] = []
    try:
        components = PUBLISH_FILE.validate(doc).components
    except ConfigFileError as exc:
        problems += exc.problems
    # The checks across entries run on every entry that is valid on its own, in the same pass.
    items = doc.data.get("components") if isinstance(doc.data, dict) else None
    valid: list[tuple[int, TopologyComponent]] = []
    for i, item in enumerate(items if isinstance(items, list) else []):
        try:
            valid.append((i, TopologyComponent.model_validate(item)))
        except ValidationError:
            continue
    problems += PUBLISH_FILE.problems(doc, _publish_problems(valid, scope_labels))
    if problems:
        problems.sort(key=lambda p: p[2] or 0)
        if listed:
            problems = [(path.removeprefix("components"), why, line) for path, why, line in problems]
        raise TopologyError(source, problems)
    return components


def _publish_problems(
    components: list[tuple[int, TopologyComponent]], scope_labels: Sequence[str]
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    scratch = Topology(TopologyConfig(scope_labels=list(scope_labels)))
    first: dict[str, int] = {}
    for i, c in components:
        if c.key in first:
            yield ("components", i), f"{c.key} is given twice: [{first[c.key]}] and [{i}]; merge them"
        first.setdefault(c.key, i)
        try:
            scratch.apply(TopologyUpdate.put(c))
        except TopologyChangeError as exc:
            yield ("components", i, "scope"), str(exc)


def parse_deletes(
    refs: Sequence[str], scope_args: Sequence[str], scope_labels: Sequence[str]
) -> list[TopologyUpdate]:
    """Tombstones for ``--delete KIND/NAME`` in the ``--scope`` given (none: every scope)."""
    scope: dict[str, str] | None = None
    if scope_args:
        scope = {}
        for text in scope_args:
            label, eq, value = text.partition("=")
            if not eq or not label:
                raise UserError(f"invalid --scope {text!r}: expected LABEL=VALUE, e.g. cluster=prod-eu-1")
            if label in scope:
                raise UserError(f"--scope {label} is given twice")
            scope[label] = value
    scratch = Topology(TopologyConfig(scope_labels=list(scope_labels)))
    updates = []
    for text in refs:
        try:
            ref = parse_ref(text)
        except ValueError as exc:
            raise UserError(f"--delete: {exc}") from None
        update = TopologyUpdate.delete(ref.kind, ref.name, scope)
        try:
            scratch.apply(update)
        except TopologyChangeError as exc:
            raise UserError(f"--scope: {exc}") from None
        updates.append(update)
    return updates


def _read_source(source: str) -> tuple[str, str]:
    """The text to publish and its name in messages; UserError when it cannot be read."""
    try:
        if source == "-":
            try:
                return sys.stdin.buffer.read().decode("utf-8"), "<stdin>"
            except (OSError, UnicodeDecodeError) as exc:
                raise PUBLISH_FILE.unreadable("<stdin>", exc) from None
        return read_config_text(PUBLISH_FILE, Path(source)), source
    except TopologyError as exc:
        raise UserError(f"nothing was published: {exc}") from None


def publish_updates(settings: Settings, updates: Sequence[TopologyUpdate]) -> list[Message]:
    """Send every update keyed by its component and wait until the brokers acknowledged all of
    them (acks=all, idempotent: one partition keeps them in order). UserError names the first
    record that was not accepted."""
    topic = settings.topics.topology
    require_topic(settings, topic, METADATA_TIMEOUT_S)
    overrides: dict[str, Any] = {"linger.ms": 5, "message.timeout.ms": int(PUBLISH_TIMEOUT_S * 1000)}
    producer: Producer = make_producer(settings, **overrides)
    delivered: list[Message] = []
    failed: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if (failure := delivery_failure(err, msg)) is not None:
            key = msg.key()
            failed.append(f"{key.decode() if key else '?'}: {failure}")
        else:
            delivered.append(msg)

    headers: list[tuple[str, str | bytes | None]] = [("content-type", "application/json")]
    for update in updates:
        value = update.component.to_bytes() if update.component is not None else None
        while True:
            try:
                producer.produce(topic, value=value, key=update.key, headers=headers, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)  # the local queue is full: let deliveries drain it
            except KafkaException as exc:
                raise UserError(f"Kafka refused the record {update.key} for {topic}: {exc}") from exc
    deadline = time.monotonic() + PUBLISH_TIMEOUT_S + 1
    while len(delivered) + len(failed) < len(updates):
        left = deadline - time.monotonic()
        if left <= 0:
            raise UserError(
                f"no acknowledgement from Kafka for {len(updates) - len(delivered)} of {len(updates)} "
                f"record(s) to {topic} within {PUBLISH_TIMEOUT_S:g}s; check that the brokers are up "
                "(publishing the same components again is safe)"
            )
        producer.flush(min(left, 1.0))
    if failed:
        raise UserError(f"Kafka did not accept {len(failed)} record(s) for {topic}; first: {failed[0]}")
    return delivered


def run_publish(args: argparse.Namespace, settings: Settings) -> int:
    if (args.source is None) == (not args.delete):
        raise UserError("give either FILE (or - for stdin) with components, or --delete KIND/NAME, not both")
    if args.scope and not args.delete:
        raise UserError("--scope goes with --delete; a published component gives its scope in the file")
    path = args.file or settings.correlator.topology_file
    scope_labels = (_load_file(path) if path else TopologyConfig()).scope_labels
    if args.delete:
        updates = parse_deletes(args.delete, args.scope, scope_labels)
    else:
        text, source = _read_source(args.source)
        try:
            components = parse_components(text, source, scope_labels)
        except TopologyError as exc:
            raise UserError(f"nothing was published; the components are invalid:\n{exc}") from None
        if not components:
            raise UserError(f"{source} holds no components; nothing to publish")
        updates = [TopologyUpdate.put(c) for c in components]
    publish_updates(settings, updates)
    for update in updates:
        print(f"{'put' if update.component is not None else 'delete'} {update.key}")
    return 0


# ---------------------------------------------------------------------------------------------- suggest


@dataclass(frozen=True)
class AuditOpenings:
    """The ``opened`` events of the audit log (newer than ``since``) and what was skipped."""

    events: list[IncidentEvent]
    undecodable: int
    first_bad: str | None


def read_openings(settings: Settings, since_ms: int | None, command: str) -> AuditOpenings:
    """The incident openings of the audit log, skipping other events before decoding them (only
    an ``opened`` event's JSON holds the value ``"opened"``), so a long log reads fast."""
    topic = settings.topics.incidents
    events: list[IncidentEvent] = []
    undecodable = 0
    first_bad: str | None = None
    progress = ProgressLine(f"reading {topic}")
    try:
        for msg in read_topic(settings, topic, progress=progress.update):
            value = msg.value()
            if not value or b'"opened"' not in value:
                continue
            try:
                event = IncidentEvent.from_bytes(value)
            except ValidationError:
                undecodable += 1
                first_bad = first_bad or f"partition {msg.partition()} offset {msg.offset()}"
                continue
            if event.type is not IncidentEventType.OPENED:
                continue
            if since_ms is not None and ms_from_dt(event.snapshot.opened_at) < since_ms:
                continue
            events.append(event)
    finally:
        progress.close()
    if undecodable:
        warn(
            command,
            f"skipped {undecodable} record(s) of {topic} that are not incident events; first: {first_bad}",
        )
    return AuditOpenings(events, undecodable, first_bad)


def suggest_from_events(
    events: Sequence[IncidentEvent],
    topology: Topology,
    *,
    window_ms: int,
    min_support: int,
    min_confidence: float,
) -> Suggestions:
    """The whole suggestion, minus the reading: openings, counts, edges not already related."""
    openings = openings_from_events(events, topology)
    implied = frozenset(edge for o in openings for edge in o.implied)
    counts = count_cooccurrences(openings, window_ms)
    return suggest_edges(
        counts,
        min_support=min_support,
        min_confidence=min_confidence,
        topology=topology,
        extra_edges=implied,
    )


def run_suggest(args: argparse.Namespace, settings: Settings) -> int:
    window_ms = _duration(args.window, "--window")
    since_ms = None
    if args.since is not None:
        since_ms = int(datetime.now(UTC).timestamp() * 1000) - _duration(args.since, "--since")
    path = args.file or settings.correlator.topology_file
    base = Topology(_load_file(path)) if path else suggestion_topology()
    effective = effective_topology(settings, base.config, path)
    _warn_refused("topology suggest", settings.topics.topology, effective.refused)
    audit = read_openings(settings, since_ms, "topology suggest")
    result = suggest_from_events(
        audit.events,
        effective.topology,
        window_ms=window_ms,
        min_support=args.min_support,
        min_confidence=args.min_confidence,
    )
    params = SuggestParams(window_ms, args.min_support, args.min_confidence, args.since, path)
    if args.json:
        print(dump_json(suggest_dict(result, effective.topology, params)))
        return 0
    print(render_suggestions(result, effective.topology, params, source=settings.topics.incidents), end="")
    return 0


@dataclass(frozen=True)
class SuggestParams:
    """The options a suggestion was made with, repeated in its output for the reviewer."""

    window_ms: int
    min_support: int
    min_confidence: float
    since: str | None = None
    file: str | None = None


def suggest_dict(result: Suggestions, topology: Topology, params: SuggestParams) -> dict[str, Any]:
    """``topology suggest --json``."""
    counts = result.counts
    return {
        "openings": counts.incidents + counts.unnamed,
        "without_components": counts.unnamed,
        "components": len(counts.openings),
        "scopes": counts.scopes,
        "window_ms": params.window_ms,
        "min_support": params.min_support,
        "min_confidence": params.min_confidence,
        "already_related": result.known,
        "implied_by_others": result.redundant,
        "unclear_order": result.unclear,
        "suggestions": [
            {
                "dependent": topology.describe(s.dependent),
                "dependency": topology.describe(s.dependency),
                "support": s.support,
                "confidence": round(s.confidence, 4),
                "dependency_openings": s.dependency_openings,
                "reverse_support": s.reverse_support,
                "common_dependency": None
                if s.common_dependency is None
                else topology.describe(s.common_dependency),
            }
            for s in result.edges
        ],
    }


def render_suggestions(result: Suggestions, topology: Topology, params: SuggestParams, *, source: str) -> str:
    """The suggested edges as topology YAML to review: one ``components:`` entry per dependent,
    its declared depends_on kept (a scoped entry replaces an every-scope one in its scope), each
    suggested edge with its support and confidence. Without a topology file the output is a
    whole file, with the label mapping the suggestions used, so ``topology check`` accepts it."""
    counts = result.counts
    window = format_duration(params.window_ms)
    since = f" opened in the last {params.since}" if params.since else ""
    lines = [
        f"# stormwatch topology suggest: {len(result.edges)} edge(s) from {counts.incidents + counts.unnamed} "
        f"incident opening(s){since} of {source}",
        f"# ({counts.unnamed} named no component; {len(counts.openings)} component(s) in {counts.scopes} "
        f"scope(s)), window {window}, support >= {params.min_support}, confidence >= {params.min_confidence:g}.",
        f"# Left out: {result.known} pair(s) the topology already relates, {result.redundant} implied by "
        f"the edges below, {result.unclear} that followed each other as often both ways.",
        "# support: openings of the dependency followed by one of the dependent within the window;",
        "# confidence: support / openings of the dependency. Review every edge: co-occurrence is not",
        "# causation. Nothing is applied: add what is right to the topology file, or publish it with",
        "# `stormwatch topology publish`. A scoped entry replaces an every-scope declaration of the",
        "# component in that scope, so its declared depends_on are listed too.",
    ]
    if params.file is None:
        lines.append("# No topology file: this is a whole file, with the label mapping the suggestions used.")
        lines += _config_yaml(topology.config)
    by_dependent: dict[ComponentId, list[Suggestion]] = {}
    for s in result.edges:
        by_dependent.setdefault(s.dependent, []).append(s)
    lines.append("components:" + ("" if by_dependent else " []"))
    for dependent, suggested in by_dependent.items():
        lines.append(f"  - kind: {yaml_scalar(dependent.kind)}")
        lines.append(f"    name: {yaml_scalar(dependent.name)}")
        if topology.scope_labels:
            lines.append(
                f"    scope: {_scope_flow(dict(zip(topology.scope_labels, dependent.scope, strict=True)))}"
            )
        lines.append("    depends_on:")
        new = {s.dependency.ref: s for s in suggested}
        for dep in topology.dependencies(dependent):
            if dep.ref not in new:
                lines.append(f"      - {yaml_scalar(str(dep.ref))}  # declared")
        for ref, s in new.items():
            sibling = (
                f"; siblings: both depend on {s.common_dependency.ref}"
                if s.common_dependency is not None
                else ""
            )
            lines.append(
                f"      - {yaml_scalar(str(ref))}  # suggested: support {s.support}, confidence "
                f"{s.confidence:.2f} ({s.support} of {s.dependency_openings} openings), "
                f"the other way round {s.reverse_support}{sibling}"
            )
    return "\n".join(lines) + "\n"
