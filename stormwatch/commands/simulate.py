"""`stormwatch simulate` and `stormwatch publish`: synthetic alert storms and their replay to Kafka.

``simulate`` writes a scenario (stormwatch.simulate) as a simulation file, or publishes it at once
with ``--to-kafka``; ``publish`` replays a file to the raw topic with each record's Kafka timestamp
set to start + t. Timestamps inside the values are moved by the same amount, so a file generated
once can be replayed at any time and still look like live traffic to the adapters.
docs/simulate.md is the user documentation.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, Literal

import orjson
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, KafkaError, KafkaException, Message, Producer

from stormwatch.commands.args import positive_int
from stormwatch.config import Settings
from stormwatch.errors import UserError
from stormwatch.kafka.client import delivery_failure, make_producer, require_topic
from stormwatch.loaders import load_rules
from stormwatch.output import ProgressLine, clean, dump_json, human_duration, rfc3339
from stormwatch.schemas.adapters.detect import FORMAT_HEADER
from stormwatch.schemas.durations import DURATION_HELP, parse_duration
from stormwatch.simulate import (
    DEFAULT_DURATION_MS,
    DEFAULT_EVAL_MS,
    FORMATS,
    SCENARIOS,
    SIM_EPOCH_MS,
    FileFormatError,
    Simulation,
    SimulationError,
    count_alerts,
    decode_line,
    encode_line,
    generate,
    shift_times,
)
from stormwatch.streams.core.rules import RulesConfig, RulesError

START_HELP = (
    "'now', 'now-15m' (a duration before now), an RFC 3339 time such as 2025-01-31T18:00:00Z "
    "(no zone means UTC), or epoch milliseconds"
)
_RELATIVE = re.compile(r"(?:now)?([+-])(.+)")
_WRITE_CHUNK = 1024  # lines per write() of a simulation file
_INTERRUPT_FLUSH_S = 10.0  # how long Ctrl-C waits for records already handed to the producer

Start = int | Literal["file"]


def parse_start(text: str, flag: str, *, now_ms: int, allow_file: bool = False) -> Start:
    """Epoch ms for ``--start``; ``"file"`` (publish only) means each line's own ``t0``."""
    value = text.strip()
    if value == "now":
        return now_ms
    if value == "file" and allow_file:
        return "file"
    relative = _RELATIVE.fullmatch(value)
    if relative:
        try:
            offset = parse_duration(relative.group(2))
        except ValueError as exc:
            raise UserError(f"invalid {flag} {text!r}: {exc}") from None
        return now_ms - offset if relative.group(1) == "-" else now_ms + offset
    if value.isdigit():
        return int(value)
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        also = "; or 'file' for the times the file was written with" if allow_file else ""
        raise UserError(f"invalid {flag} {text!r}: expected {START_HELP}{also}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    ms = int(dt.timestamp() * 1000)
    if ms < 0:
        raise UserError(f"invalid {flag} {text!r}: Kafka timestamps cannot be before 1970")
    return ms


def _duration(text: str) -> int:
    try:
        ms = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if ms <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration above zero, got {text!r}; {DURATION_HELP}")
    return ms


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected alerts per second, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of alerts per second, got {text!r}")
    return value


def _add_pacing(p: argparse.ArgumentParser, *, with_fast: bool) -> None:
    pacing = p.add_mutually_exclusive_group()
    pacing.add_argument(
        "--rate",
        type=_rate,
        metavar="ALERTS_PER_S",
        help="send at this many alerts per second (records are paced by the alerts they carry)",
    )
    pacing.add_argument(
        "--realtime",
        action="store_true",
        help="send each record t ms after the start, as the storm happened",
    )
    if with_fast:
        pacing.add_argument(
            "--as-fast-as-possible",
            action="store_true",
            help="send as fast as Kafka takes them (the default)",
        )


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="generate a realistic alert storm (to a file or straight to Kafka)",
        description="Generate a realistic, deterministic alert storm as raw records in a real wire "
        "format. Writes a simulation file (JSON Lines, see docs/simulate.md) to --out or stdout, or "
        "publishes it to the raw topic with --to-kafka. A summary goes to stderr.",
    )
    p.add_argument("scenario", choices=SCENARIOS, metavar="SCENARIO", help=f"one of {', '.join(SCENARIOS)}")
    p.add_argument("--size", type=positive_int, default=100, help="distinct alerts (default: 100)")
    p.add_argument("--seed", type=_int, default=1, help="random seed; the same seed gives the same storm")
    p.add_argument(
        "--format",
        dest="fmt",
        choices=FORMATS,
        default="prometheus",
        help="wire format of the records (default: prometheus)",
    )
    p.add_argument(
        "--duration",
        type=_duration,
        default=DEFAULT_DURATION_MS,
        help="length of the storm, e.g. 10m (default: 10m)",
    )
    p.add_argument(
        "--eval-interval",
        type=_duration,
        default=DEFAULT_EVAL_MS,
        help="Prometheus' rule evaluation interval: firing alerts are re-sent this often (default: 30s)",
    )
    p.add_argument(
        "--start",
        help=f"time of t=0 inside the payloads: {START_HELP}. Default: 2025-01-01T00:00:00Z for files "
        "(so a seed always gives the same bytes; publish moves the times), now with --to-kafka",
    )
    p.add_argument(
        "--batch",
        type=positive_int,
        help="most alerts per record (default: prometheus 256, native 256, pagerduty 1, "
        "cloudevents 1, alertmanager one notification group per webhook)",
    )
    target = p.add_mutually_exclusive_group()
    target.add_argument(
        "--out", metavar="FILE", help="write the simulation file here ('-': stdout, the default)"
    )
    target.add_argument("--to-kafka", action="store_true", help="publish to the raw topic instead of writing")
    _add_pacing(p, with_fast=False)
    p.add_argument("--topic", help="with --to-kafka: topic to publish to (default: topics.raw)")
    p.add_argument(
        "--rules",
        metavar="FILE",
        help="correlation rules to count the expected groups with "
        "(default: correlator.rules_file, else the built-in rules)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the summary as JSON on stdout (needs --out FILE or --to-kafka)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    p.set_defaults(handler=run_simulate)

    q: argparse.ArgumentParser = subparsers.add_parser(
        "publish",
        help="replay a simulation file to the raw topic",
        description="Replay a simulation file (JSON Lines, see docs/simulate.md) to the raw topic with "
        "an idempotent producer (acks=all). Each record's Kafka timestamp is start + t; timestamps "
        "inside the values move with it. Prints a delivery summary; exits 1 if any record was not "
        "delivered.",
    )
    q.add_argument("file", metavar="FILE", help="simulation file ('-': stdin)")
    _add_pacing(q, with_fast=True)
    q.add_argument(
        "--start",
        default="now",
        help=f"time of t=0: {START_HELP}, or 'file' to keep the times the file was written with "
        "(default: now)",
    )
    q.add_argument("--topic", help="topic to publish to (default: topics.raw)")
    q.add_argument("--json", action="store_true", help="print the delivery summary as JSON")
    q.set_defaults(handler=run_publish)


# ------------------------------------------------------------------------------------ publishing


@dataclass(slots=True)
class OutRecord:
    """One record for the producer; ``t_ms`` drives pacing, ``timestamp_ms`` is the Kafka timestamp."""

    t_ms: int
    timestamp_ms: int
    headers: list[tuple[str, str | bytes | None]]
    value: bytes | None
    key: bytes | None
    alerts: int


@dataclass(slots=True)
class Pacing:
    """``fast``: no waiting; ``realtime``: record at start + t; ``rate``: ``alerts_per_s`` alerts/s."""

    mode: Literal["fast", "realtime", "rate"] = "fast"
    alerts_per_s: float = 0.0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Pacing:
        if args.rate is not None:
            return cls("rate", args.rate)
        if args.realtime:
            return cls("realtime")
        return cls("fast")

    def describe(self) -> str:
        if self.mode == "rate":
            return f"{self.alerts_per_s:g} alerts/s"
        return "real time" if self.mode == "realtime" else "as fast as possible"


@dataclass(slots=True)
class PublishReport:
    """What happened to the records handed to Kafka; printed at the end and with --json."""

    topic: str
    pacing: str = "as fast as possible"
    records: int = 0
    alerts: int = 0
    bytes: int = 0
    delivered: int = 0
    failed: int = 0
    elapsed_s: float = 0.0
    first_timestamp_ms: int | None = None
    last_timestamp_ms: int | None = None
    error: str | None = None  # the first delivery failure, with a hint when there is one
    error_record: int | None = None  # 1-based position of that record in the stream
    log_append_time: bool = False  # the topic overwrote our timestamps with the broker's clock
    stopped: str | None = None  # why publishing ended early

    @property
    def unconfirmed(self) -> int:
        """Records handed to the producer with no delivery report yet (after an interrupt)."""
        return self.records - self.delivered - self.failed

    def to_dict(self) -> dict[str, Any]:
        rate = self.elapsed_s if self.elapsed_s > 0 else 1.0
        return {
            "topic": self.topic,
            "pacing": self.pacing,
            "records": self.records,
            "alerts": self.alerts,
            "bytes": self.bytes,
            "delivered": self.delivered,
            "failed": self.failed,
            "unconfirmed": self.unconfirmed,
            "elapsed_s": round(self.elapsed_s, 3),
            "records_per_s": round(self.records / rate, 1),
            "alerts_per_s": round(self.alerts / rate, 1),
            "first_timestamp": _ms_text(self.first_timestamp_ms),
            "last_timestamp": _ms_text(self.last_timestamp_ms),
            "log_append_time": self.log_append_time,
            "error": self.error,
            "error_record": self.error_record,
            "stopped": self.stopped,
        }


def _ms_text(ms: int | None) -> str | None:
    return None if ms is None else rfc3339(datetime.fromtimestamp(ms / 1000, UTC))


def _hint(err: KafkaError, timestamp_ms: int | None = None) -> str:
    """The error text plus what to do about it, for the failures a replay typically meets."""
    code = err.code()
    text = err.str()
    if code in (KafkaError.INVALID_TIMESTAMP, KafkaError.INVALID_RECORD) and timestamp_ms is not None:
        # Kafka 4 reports an out-of-range timestamp as INVALID_RECORD ("failed to validate record").
        ahead = timestamp_ms - time.time() * 1000
        if ahead > 0:
            return (
                f"{text}; the record timestamp {_ms_text(timestamp_ms)} is {human_duration(ahead / 1000)} "
                "ahead of now and brokers refuse timestamps more than log.message.timestamp.after.max.ms "
                "ahead of their clock (1h by default since Kafka 4.0): use an earlier --start, or --realtime"
            )
        return (
            f"{text}; the record timestamp {_ms_text(timestamp_ms)} is {human_duration(-ahead / 1000)} "
            "old: check the topic's message.timestamp.before.max.ms, or use a later --start"
        )
    if code == KafkaError.MSG_SIZE_TOO_LARGE:
        return f"{text}; the topic's max.message.bytes is smaller than the record: use a smaller --batch"
    if code in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED):
        return f"{text}; the client may not write to this topic (check the ACLs)"
    return text


class _Publisher:
    """Produces OutRecords with pacing, counting deliveries; stops at the first failure."""

    def __init__(
        self, producer: Producer, report: PublishReport, pacing: Pacing, progress: ProgressLine, total: int
    ) -> None:
        self.producer = producer
        self.report = report
        self.pacing = pacing
        self.progress = progress
        self.total = total
        self.started = time.monotonic()

    def _on_delivery(self, position: int, timestamp_ms: int) -> Callable[[KafkaError | None, Message], None]:
        report = self.report

        def done(err: KafkaError | None, msg: Message) -> None:
            if (failure := delivery_failure(err, msg)) is not None:
                report.failed += 1
                if report.error is None:
                    report.error = failure if err is None else _hint(err, timestamp_ms)
                    report.error_record = position
                return
            report.delivered += 1
            kind, _ = msg.timestamp()
            if kind == TIMESTAMP_LOG_APPEND_TIME:
                report.log_append_time = True

        return done

    def _wait_until(self, due: float) -> None:
        while True:
            left = due - time.monotonic()
            if left <= 0 or self.report.failed:
                return
            self.producer.poll(min(left, 0.05))
            self.progress.update(self.report.records, self.total)

    def run(self, records: Iterable[OutRecord]) -> None:
        report, producer, pacing = self.report, self.producer, self.pacing
        for record in records:
            if report.failed:
                report.stopped = "after the first delivery failure"
                return
            if pacing.mode == "realtime":
                self._wait_until(self.started + record.t_ms / 1000)
            elif pacing.mode == "rate" and record.alerts:
                self._wait_until(self.started + report.alerts / pacing.alerts_per_s)
            if report.failed:
                report.stopped = "after the first delivery failure"
                return
            position = report.records + 1
            while True:
                try:
                    producer.produce(
                        report.topic,
                        value=record.value,
                        key=record.key,
                        headers=record.headers,
                        timestamp=record.timestamp_ms,
                        on_delivery=self._on_delivery(position, record.timestamp_ms),
                    )
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    producer.poll(0.05)
                except KafkaException as exc:
                    err = exc.args[0] if exc.args else None
                    report.records += 1
                    report.failed += 1
                    report.error = (
                        _hint(err, record.timestamp_ms) if isinstance(err, KafkaError) else str(exc)
                    )
                    report.error_record = position
                    report.stopped = "after the first delivery failure"
                    return
            report.records += 1
            report.alerts += record.alerts
            report.bytes += len(record.value or b"")
            if report.first_timestamp_ms is None:
                report.first_timestamp_ms = record.timestamp_ms
            report.last_timestamp_ms = record.timestamp_ms
            producer.poll(0)
            self.progress.update(report.records, self.total)

    def drain(self, timeout_s: float | None) -> None:
        """Wait for the delivery reports of every record handed over (bounded by the producer's
        delivery timeout), or at most ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.progress.label = "waiting for acknowledgements"
        while len(self.producer) > 0:
            left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if left <= 0:
                break
            self.producer.flush(left)
            self.progress.update(self.report.delivered + self.report.failed, self.report.records)
        self.producer.poll(0)


def publish(
    settings: Settings,
    records: Iterable[OutRecord],
    report: PublishReport,
    *,
    pacing: Pacing,
    total: int = 0,
    progress: ProgressLine | None = None,
) -> PublishReport:
    """Send ``records`` to ``report.topic`` (which must exist), filling in ``report``.

    Stops producing at the first failure; waits for every delivery report before returning. On an
    exception (a bad file line, Ctrl-C) it still waits (briefly, for Ctrl-C) and fills the report,
    then re-raises.
    """
    require_topic(settings, report.topic)
    report.pacing = pacing.describe()
    overrides: dict[str, Any] = {"linger.ms": 20}  # fuller batches; pacing adds its own waits
    producer = make_producer(settings, **overrides)
    line = progress or ProgressLine("publishing")
    publisher = _Publisher(producer, report, pacing, line, total)
    wait: float | None = None
    try:
        publisher.run(records)
    except KeyboardInterrupt:
        report.stopped = "interrupted"
        wait = _INTERRUPT_FLUSH_S
        raise
    except FileFormatError:
        report.stopped = "at a bad line of the file"
        raise
    finally:
        try:
            publisher.drain(wait)
        finally:
            report.elapsed_s = time.monotonic() - publisher.started
            line.close()
    return report


def file_records(stream: IO[bytes], start: Start) -> Iterator[OutRecord]:
    """The records of a simulation file, timestamps moved to ``start`` (FileFormatError on a bad line)."""
    for lineno, line in enumerate(stream, 1):
        record = decode_line(line, lineno)
        if record is None:
            continue
        if start == "file":
            if record.t0_ms is None:
                raise FileFormatError(
                    f'line {lineno}: --start file needs "t0" on every line; give --start a time instead'
                )
            base = record.t0_ms
        else:
            base = start
        value = record.value
        if record.t0_ms is not None and base != record.t0_ms:
            shift_times(value, base - record.t0_ms)
        fmt = next((v for k, v in record.headers.items() if k.lower() == FORMAT_HEADER), None)
        yield OutRecord(
            t_ms=record.t_ms,
            timestamp_ms=base + record.t_ms,
            headers=[(k, v.encode()) for k, v in record.headers.items()],
            value=None if value is None else orjson.dumps(value),
            key=None if record.key is None else record.key.encode(),
            alerts=count_alerts(value, fmt),
        )


def simulation_records(sim: Simulation, start_ms: int) -> Iterator[OutRecord]:
    for record in sim:
        yield OutRecord(
            t_ms=record.t_ms,
            timestamp_ms=start_ms + record.t_ms,
            headers=[(k, v.encode()) for k, v in record.headers.items()],
            value=record.value,
            key=record.key,
            alerts=record.alerts,
        )


def _count_lines(path: str) -> int:
    """Non-blank lines of a regular file, for the progress total; 0 when it cannot be known."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return 0
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return 0


def render_report(report: PublishReport) -> str:
    """The human delivery summary (stdout)."""
    d = report.to_dict()
    lines = [
        f"published {report.records:,} records ({report.alerts:,} alerts, {_size(report.bytes)}) to "
        f"{report.topic} in {report.elapsed_s:.2f}s, {report.pacing}: {report.delivered:,} delivered, "
        f"{report.failed:,} failed"
        + (f", {report.unconfirmed:,} unconfirmed" if report.unconfirmed else "")
        + f"; {_per_s(d['records_per_s'])} records/s, {_per_s(d['alerts_per_s'])} alerts/s"
    ]
    if report.first_timestamp_ms is not None:
        lines.append(f"record timestamps {d['first_timestamp']} .. {d['last_timestamp']}")
    if report.stopped:
        lines.append(f"stopped {report.stopped}")
    return "\n".join(lines)


def _per_s(rate: float) -> str:
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:.1f}"


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


def _finish(command: str, report: PublishReport, extra: dict[str, Any] | None, as_json: bool) -> int:
    if as_json:
        print(dump_json({**(extra or {}), "publish": report.to_dict()}))
    else:
        print(render_report(report))
    if report.log_append_time:
        print(
            f"stormwatch {command}: warning: topic {report.topic} uses LogAppendTime; the broker replaced "
            "the record timestamps with its own clock (set message.timestamp.type=CreateTime)",
            file=sys.stderr,
        )
    if report.failed:
        where = f" (record {report.error_record})" if report.error_record else ""
        print(
            f"stormwatch {command}: error: {report.failed:,} of {report.records:,} records were not "
            f"delivered{where}: {clean(report.error)}",
            file=sys.stderr,
        )
        return 1
    return 0


# -------------------------------------------------------------------------------------- handlers


def _open_input(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")  # closed by the caller
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None


def run_publish(args: argparse.Namespace, settings: Settings) -> int:
    now_ms = int(time.time() * 1000)
    start = parse_start(args.start, "--start", now_ms=now_ms, allow_file=True)
    topic = args.topic or settings.topics.raw
    total = 0 if args.file == "-" else _count_lines(args.file)
    stream = _open_input(args.file)
    report = PublishReport(topic)
    name = "stdin" if args.file == "-" else args.file
    try:
        publish(settings, file_records(stream, start), report, pacing=Pacing.from_args(args), total=total)
    except FileFormatError as exc:
        _finish("publish", report, None, args.json)
        raise UserError(f"{name}: {exc}; see docs/simulate.md for the file format") from None
    except KeyboardInterrupt:
        _finish("publish", report, None, args.json)
        raise
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    return _finish("publish", report, None, args.json)


def _rules_for(args: argparse.Namespace, settings: Settings) -> tuple[RulesConfig, str]:
    path = args.rules or settings.correlator.rules_file
    try:
        return load_rules(path), (f"the rules in {path}" if path else "the built-in rules")
    except RulesError as exc:
        raise UserError(str(exc)) from None


def render_simulation(sim: Simulation, groups: int, rules_name: str) -> str:
    """The human summary of a simulation (stderr)."""
    s = sim.summary
    return (
        f"{s.scenario} ({s.format}, seed {s.seed}): {s.distinct_alerts:,} distinct alerts, "
        f"{s.notifications:,} notifications in {s.records:,} records ({s.resend_ratio:.1%} re-sends, "
        f"{s.resolutions:,} resolutions), {_size(s.bytes)} over {human_duration(s.duration_ms / 1000)}; "
        f"{groups:,} correlation groups with {rules_name}"
    )


def _simulation_dict(sim: Simulation, groups: int, rules_name: str) -> dict[str, Any]:
    return {**sim.summary.to_dict(), "expected_groups": groups, "rules": rules_name}


def _write(sim: Simulation, out: IO[bytes], t0_ms: int) -> None:
    lines: list[bytes] = []
    for record in sim:
        lines.append(encode_line(record, t0_ms))
        if len(lines) >= _WRITE_CHUNK:
            out.writelines(lines)
            lines.clear()
    out.writelines(lines)
    out.flush()


def run_simulate(args: argparse.Namespace, settings: Settings) -> int:
    to_stdout = not args.to_kafka and (args.out is None or args.out == "-")
    if args.json and to_stdout:
        raise UserError("--json prints to stdout, which carries the records; add --out FILE or --to-kafka")
    if (args.rate is not None or args.realtime) and not args.to_kafka:
        raise UserError(
            "--rate and --realtime pace publishing: add --to-kafka, or write a file and use "
            "`stormwatch publish FILE --rate R`"
        )
    if args.topic and not args.to_kafka:
        raise UserError("--topic is for --to-kafka")
    now_ms = int(time.time() * 1000)
    if args.start is None:
        start_ms = now_ms if args.to_kafka else SIM_EPOCH_MS
    else:
        start = parse_start(args.start, "--start", now_ms=now_ms)
        assert isinstance(start, int)
        start_ms = start
    rules, rules_name = _rules_for(args, settings)
    try:
        sim = generate(
            args.scenario,
            size=args.size,
            seed=args.seed,
            fmt=args.fmt,
            duration_ms=args.duration,
            batch=args.batch,
            start_ms=start_ms,
            eval_interval_ms=args.eval_interval,
        )
    except SimulationError as exc:
        raise UserError(str(exc)) from None
    groups = sim.expected_groups(rules)

    if args.to_kafka:
        report = PublishReport(args.topic or settings.topics.raw)
        try:
            publish(settings, simulation_records(sim, start_ms), report, pacing=Pacing.from_args(args))
        except KeyboardInterrupt:
            _finish("simulate", report, None, args.json)
            raise
        if not args.quiet:
            print(render_simulation(sim, groups, rules_name), file=sys.stderr)
        extra = {"simulation": _simulation_dict(sim, groups, rules_name)}
        return _finish("simulate", report, extra, args.json)

    if to_stdout:
        try:
            _write(sim, sys.stdout.buffer, start_ms)
        except BrokenPipeError:  # `stormwatch simulate ... | head`: the reader has seen enough
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 0
    else:
        try:
            with open(args.out, "wb") as out:
                _write(sim, out, start_ms)
        except OSError as exc:
            raise UserError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    if not args.quiet:
        print(render_simulation(sim, groups, rules_name), file=sys.stderr)
    if args.json:
        print(dump_json({"simulation": _simulation_dict(sim, groups, rules_name)}))
    return 0
