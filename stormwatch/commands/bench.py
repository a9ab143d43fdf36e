"""`stormwatch bench WORKLOAD`: run a named benchmark workload on a real broker (bench/README.md)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from stormwatch.config import Settings
from stormwatch.errors import UserError

WORKLOADS = ("storm-batched", "storm-http", "storm-single", "steady", "high-cardinality", "flapping")
OFFLINE_WORKLOADS = ("linking",)  # pure core, no broker (bench/linking.py)
NOTIFY_WORKLOADS = ("notify", "notify-outage")  # the notifier (bench/notify.py, bench/notify_outage.py)
IDLE_WORKLOADS = ("idle",)  # no alerts at all, at several partition counts (bench/idle.py)


def register(sub: Any) -> None:
    text = "Run a benchmark workload against a real broker and print a table (or JSON)."
    p: argparse.ArgumentParser = sub.add_parser("bench", help=text, description=text)
    p.add_argument(
        "workload",
        choices=WORKLOADS + IDLE_WORKLOADS + OFFLINE_WORKLOADS + NOTIFY_WORKLOADS,
        help="Named workload (see bench/README.md)",
    )
    p.add_argument("--json", action="store_true", help="Print the full result as JSON instead of the table")
    p.add_argument(
        "--size",
        type=float,
        default=1.0,
        help="Scale the workload's alerts, distinct alerts and groups by this factor (default 1: full size)",
    )
    p.add_argument("--alerts", type=int, help="Notifications in all (overrides --size)")
    p.add_argument("--fingerprints", type=int, help="Distinct alerts (overrides --size)")
    p.add_argument("--groups", type=int, help="Correlation groups (overrides --size)")
    p.add_argument("--per-record", type=int, help="Alerts per raw record")
    p.add_argument(
        "--partitions",
        help="Partitions of the run's topics (default 6); idle: a comma-separated list (default 6,24,48)",
    )
    p.add_argument("--rules", help="Correlation rules YAML (default: the built-in rules)")
    p.add_argument("--rate", type=int, default=5_000, help="steady: alerts per second (default 5000)")
    p.add_argument(
        "--seconds", type=float, help="steady: how long to produce (default 120); idle: to measure (60)"
    )
    p.add_argument("--warmup", type=float, default=20.0, help="idle: seconds before measuring (default 20)")
    p.add_argument("--ingest-workers", type=int, default=1, help="idle: ingest workers (default 1)")
    p.add_argument("--correlators", type=int, default=1, help="idle: correlator workers (default 1)")
    p.add_argument("--tick-interval-ms", type=int, help="ingest.tick_interval_ms for the run's workers")
    p.add_argument("--no-floor", action="store_true", help="Skip the raw consume + parse floor")
    p.add_argument("--no-restart", action="store_true", help="Skip the SIGKILL + restart measurement")
    p.add_argument(
        "--no-alertmanager", action="store_true", help="storm-batched, storm-http: skip Alertmanager"
    )
    p.add_argument(
        "--no-read-api",
        action="store_true",
        help="storm-http: run the gateway without its read API and read model (gateway --no-read-api)",
    )
    p.add_argument("--profile", metavar="DIR", help="Record py-spy flame graphs of both workers into DIR")
    p.add_argument("--keep-topics", action="store_true", help="Leave the run's topics on the broker")
    p.add_argument(
        "--timeout", type=float, default=900.0, help="Longest wait for any step of the run, seconds (900)"
    )
    p.add_argument("--workdir", help="Directory for configs and worker logs (default: a temporary one)")
    p.add_argument("--output", metavar="FILE", help="Also write the JSON result to FILE")
    p.add_argument(
        "--topology",
        help="linking: topology YAML (default: correlator.topology_file, else deploy/topology.yaml); "
        "idle: also run a linker with this topology (default: no linker)",
    )
    p.add_argument("--seeds", type=int, default=3, help="linking: storm-mix seeds 1..N (default 3)")
    p.add_argument("--repeat", type=int, default=5, help="linking: runs of each measurement, median (5)")
    p.add_argument("--incidents", type=int, help="notify: backlog incidents (3000); notify-outage: 20")
    p.add_argument("--outage", type=float, default=300.0, help="notify-outage: seconds the receiver is down")
    p.set_defaults(handler=run_bench)


def run_bench(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here, not at the top: every `stormwatch` process registers this command, and the
    # workers the harness measures should not carry the harness in their memory.
    from stormwatch.bench import runner
    from stormwatch.bench.results import render

    rules = Path(args.rules) if args.rules else None
    if rules is not None and not rules.is_file():
        raise UserError(f"rules file {rules} not found")
    counts = _partition_counts(args.partitions, "6,24,48" if args.workload == "idle" else "6")
    if args.workload != "idle" and len(counts) > 1:
        raise UserError(f"--partitions takes one count for {args.workload}, got {args.partitions}")
    args.partitions = counts if args.workload == "idle" else counts[0]
    args.seconds = args.seconds if args.seconds is not None else (60.0 if args.workload == "idle" else 120.0)
    if args.workload == "linking":
        return run_linking_bench(args, settings, rules)
    if args.workload in NOTIFY_WORKLOADS:
        return run_notify_bench(args, settings)
    for name in ("size", "rate", "seconds", "timeout"):
        _positive(name, getattr(args, name))
    if args.workload == "idle":
        return run_idle_bench(args, settings, rules)
    with tempfile.TemporaryDirectory(prefix="stormwatch-bench-") as tmp:
        options = runner.BenchOptions(
            **_shared_options(args, settings, Path(tmp), rules),
            size=args.size,
            alerts=args.alerts,
            fingerprints=args.fingerprints,
            groups=args.groups,
            per_record=args.per_record,
            partitions=args.partitions,
            floor=not args.no_floor,
            restart=not args.no_restart,
            alertmanager=not args.no_alertmanager,
            read_api=not args.no_read_api,
            steady_rate=args.rate,
            steady_seconds=args.seconds,
            profile_dir=Path(args.profile) if args.profile else None,
        )
        try:
            result = runner.run(args.workload, options)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    return _report(args, result, render(result))


def _shared_options(
    args: argparse.Namespace, settings: Settings, tmp: Path, rules: Path | None
) -> dict[str, Any]:
    """The options every pipeline workload takes the same way (runner.BenchOptions, IdleOptions)."""
    return {
        "bootstrap": settings.kafka.bootstrap_servers,
        "workdir": Path(args.workdir) if args.workdir else tmp,
        "rules_file": rules,
        "ingest_settings": {"tick_interval_ms": args.tick_interval_ms} if args.tick_interval_ms else {},
        "keep_topics": args.keep_topics,
        "timeout_s": args.timeout,
        "log": _progress(args),
    }


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise UserError(f"--{name} must be positive, got {value:g}")


def _partition_counts(text: str | None, default: str) -> tuple[int, ...]:
    """``--partitions``: one count, or (idle) a comma-separated list of them."""
    try:
        counts = tuple(int(part) for part in (text or default).split(","))
    except ValueError:
        raise UserError(f"--partitions takes whole numbers separated by commas, got {text!r}") from None
    for count in counts:
        _positive("partitions", count)
    return counts


def run_idle_bench(args: argparse.Namespace, settings: Settings, rules: Path | None) -> int:
    """`stormwatch bench idle`: Kafka records and bytes, transactions and CPU with no alerts, at
    each partition count (bench/idle.py)."""
    from stormwatch.bench.idle import IdleOptions, render, run_idle

    for name in ("warmup", "ingest_workers", "correlators"):
        _positive(name.replace("_", "-"), getattr(args, name))
    topology = Path(args.topology) if args.topology else None
    if topology is not None and not topology.is_file():
        raise UserError(f"topology file {topology} not found")
    with tempfile.TemporaryDirectory(prefix="stormwatch-bench-") as tmp:
        options = IdleOptions(
            **_shared_options(args, settings, Path(tmp), rules),
            partitions=args.partitions,
            ingest_workers=args.ingest_workers,
            correlators=args.correlators,
            warmup_s=args.warmup,
            seconds=args.seconds,
            topology=topology,
        )
        result = run_idle(options)
    return _report(args, result, render(result))


def run_linking_bench(args: argparse.Namespace, settings: Settings, rules: Path | None) -> int:
    """`stormwatch bench linking`: the linker's cost per group note, offline (bench/linking.py)."""
    from stormwatch.bench.linking import render, run_linking
    from stormwatch.loaders import load_rules, load_topology
    from stormwatch.streams.core.rules import RulesError
    from stormwatch.streams.core.topology import TopologyError

    for name in ("seeds", "repeat", "partitions"):
        if getattr(args, name) <= 0:
            raise UserError(f"--{name} must be positive, got {getattr(args, name)}")
    topology = args.topology or settings.correlator.topology_file
    if not topology:
        shipped = Path(__file__).resolve().parents[2] / "deploy" / "topology.yaml"
        if not shipped.is_file():
            raise UserError("bench linking needs a topology: --topology FILE or correlator.topology_file")
        topology = str(shipped)
    try:
        config = load_topology(topology)
        rules_config = load_rules(str(rules) if rules is not None else None)
    except (TopologyError, RulesError) as exc:
        raise UserError(str(exc)) from None
    result = run_linking(
        rules_config,
        config,
        seeds=range(1, args.seeds + 1),
        partitions=args.partitions,
        repeat=args.repeat,
        topology_name=args.topology or topology,
    )
    return _report(args, result, render(result))


def run_notify_bench(args: argparse.Namespace, settings: Settings) -> int:
    """`stormwatch bench notify|notify-outage`: the notifier against a loopback webhook receiver
    (bench/notify.py, bench/notify_outage.py, with their default live phase); ``--partitions``
    is the incident topic's."""
    from stormwatch.bench import notify, notify_outage

    say = _progress(args)
    bootstrap = settings.kafka.bootstrap_servers
    workdir = Path(args.workdir) if args.workdir else None
    if args.workload == "notify":
        result = notify.run_notify_bench(
            bootstrap,
            incidents=args.incidents or 3000,
            partitions=args.partitions,
            workdir=workdir,
            keep_topics=args.keep_topics,
            log=say,
        )
        text = notify.render(result)
    else:
        result = notify_outage.run_outage(
            bootstrap,
            outage_s=args.outage,
            incidents=args.incidents or 20,
            partitions=args.partitions,
            workdir=workdir,
            log=say,
        )
        text = notify_outage.render(result)
    return _report(args, result, text)


def _progress(args: argparse.Namespace) -> Callable[[str], None] | None:
    """Progress lines on stderr, unless the JSON is what stdout carries."""
    return None if args.json else (lambda line: print(f"... {line}", file=sys.stderr, flush=True))


def _report(args: argparse.Namespace, result: dict[str, Any], text: str) -> int:
    """``--output FILE`` gets the JSON result; stdout the JSON with ``--json``, else ``text``."""
    encoded = orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    if args.output:
        Path(args.output).write_bytes(encoded + b"\n")
    print(encoded.decode() if args.json else text)
    return 0
