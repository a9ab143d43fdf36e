"""`stormwatch quality`: how many incidents a multi-cause storm becomes, against its ground truth.

No broker: the storm (stormwatch.storms) runs through the pure core offline, once per rules file,
and the incidents are scored by stormwatch.bench.quality (docs/simulate.md, "Correlation quality").
With a topology, each rules file is scored twice, as the correlator leaves the incidents and after
the linker's core linked them (the table then shows both rows and whether roots are named).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from stormwatch.config import Settings
from stormwatch.errors import UserError
from stormwatch.loaders import load_rules, load_topology
from stormwatch.output import dump_json
from stormwatch.simulate import FORMATS, encode_line
from stormwatch.storms import STORMS, Storm, build_storm
from stormwatch.streams.core.rules import RulesConfig, RulesError
from stormwatch.streams.core.topology import Topology, TopologyError

if TYPE_CHECKING:
    from stormwatch.bench.quality import QualityScore, ReplayResult

BUILTIN = "builtin"


def register(sub: Any) -> None:
    text = (
        "Replay a multi-cause storm with ground truth through the correlation core (no broker) and "
        "score the incidents: incidents per root cause, wrong merges, causes split."
    )
    p: argparse.ArgumentParser = sub.add_parser("quality", help=text, description=text)
    p.add_argument(
        "--storm", choices=STORMS, default=STORMS[0], help=f"storm to replay (default {STORMS[0]})"
    )
    p.add_argument("--seed", type=int, default=1, help="random seed; the same seed gives the same storm (1)")
    p.add_argument(
        "--rules",
        action="append",
        metavar="FILE",
        help=f"correlation rules to score, repeatable; '{BUILTIN}' for the built-in rules (default: "
        f"{BUILTIN}, and correlator.rules_file when configured)",
    )
    p.add_argument(
        "--topology",
        metavar="FILE",
        help="also score every rules file with its groups linked by this topology (default: "
        "correlator.topology_file when configured)",
    )
    p.add_argument(
        "--format", dest="fmt", choices=FORMATS, default="prometheus", help="wire format (prometheus)"
    )
    p.add_argument("--causes", action="store_true", help="also print incidents per cause")
    p.add_argument("--json", action="store_true", help="print everything as JSON")
    p.add_argument("--out", metavar="FILE", help="also write the storm as a simulation file (for publish)")
    p.add_argument(
        "--truth", metavar="FILE", help="also write the ground truth as JSON (fingerprint -> cause)"
    )
    p.set_defaults(handler=run_quality)


def _rules(args: argparse.Namespace, settings: Settings) -> list[tuple[str, RulesConfig]]:
    names = args.rules or [
        BUILTIN,
        *([settings.correlator.rules_file] if settings.correlator.rules_file else []),
    ]
    out = []
    for name in names:
        try:
            out.append((name, load_rules(None if name == BUILTIN else name)))
        except RulesError as exc:
            raise UserError(str(exc)) from None
    return out


def _topology(args: argparse.Namespace, settings: Settings) -> tuple[str, Topology] | None:
    name = args.topology or settings.correlator.topology_file
    if not name:
        return None
    try:
        return name, Topology(load_topology(name))
    except TopologyError as exc:
        raise UserError(str(exc)) from None


def run_quality(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: every `stormwatch` process registers this command, the workers need none of it.
    from stormwatch.bench.quality import replay_storm, score_replay

    rules = _rules(args, settings)
    topology = _topology(args, settings)
    storm = build_storm(args.storm, seed=args.seed)
    if args.out:
        _write_storm(storm, args.fmt, Path(args.out))
    if args.truth:
        _write_truth(storm, args.fmt, Path(args.truth))
    results: list[_Result] = []
    for name, config in rules:
        run = replay_storm(storm, config, fmt=args.fmt)
        results.append((name, score_replay(storm, run, fmt=args.fmt), run))
        if topology is not None:
            linked = score_replay(storm, run, fmt=args.fmt, topology=topology[1], topology_name=topology[0])
            results.append((name, linked, run))
    if args.json:
        print(dump_json(quality_dict(storm, args.fmt, results)))
        return 0
    print(render_quality(storm, args.fmt, results))
    if args.causes:
        print()
        print(render_causes(storm, results))
    return 0


def _write_storm(storm: Storm, fmt: str, path: Path) -> None:
    sim = storm.simulation(fmt)
    try:
        with path.open("wb") as out:
            for record in sim:
                out.write(encode_line(record, sim.start_ms))
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def _write_truth(storm: Storm, fmt: str, path: Path) -> None:
    doc = {
        **storm.summary(),
        "format": fmt,
        "causes": [c.to_dict() for c in storm.causes],
        "fingerprints": storm.truth_by_fingerprint(fmt),
    }
    try:
        path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


_Result = tuple[str, "QualityScore", "ReplayResult"]


def quality_dict(storm: Storm, fmt: str, results: list[_Result]) -> dict[str, Any]:
    """The ``--json`` document: the storm, its causes, and one score per rules file."""
    first = results[0][2] if results else None
    return {
        **storm.summary(),
        "format": fmt,
        "records": first.records if first else None,
        "notifications": first.notifications if first else None,
        "causes": [c.to_dict() for c in storm.causes],
        "results": [
            {"rules": name, "events": len(run.events), "dead_letters": run.dead_letters, **result.to_dict()}
            for name, result, run in results
        ],
    }


def _rules_name(name: str) -> str:
    return "built-in rules" if name == BUILTIN else f"`{name}`"


def _column_name(name: str, s: QualityScore) -> str:
    return _rules_name(name) + (f" + `{s.topology}`" if s.topology else "")


def render_quality(storm: Storm, fmt: str, results: list[_Result]) -> str:
    """A headline and one Markdown table row per rules file (ready for docs)."""
    summary = storm.summary()
    head = (
        f"{storm.name} (seed {storm.seed}, {fmt}): {summary['root_causes']} root causes in "
        f"{len(summary['clusters'])} clusters + {summary['noise_alerts']} background alerts; "
        f"{summary['distinct_alerts']:,} distinct alerts"
    )
    if results:
        run = results[0][2]
        head += f", {run.notifications:,} notifications in {run.records:,} records"
    # With a topology: which one, and whether each cause's incident names its root (the columns
    # are added only then, so the table without one stays as it always was).
    linking = any(s.topology for _, s, _ in results)
    lines = [
        head,
        "",
        "| rules "
        + ("| topology " if linking else "")
        + f"| incidents | for the {summary['root_causes']} causes | per cause | wrong merges | causes split "
        "| causes missed | absorbed alerts | background |" + (" root named |" if linking else ""),
        "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if linking else ""),
    ]
    for name, s, run in results:
        split = f"{s.causes_split} (+{s.extra_incidents} incidents)" if s.causes_split else "0"
        cells = [
            _rules_name(name),
            *([f"`{s.topology}`" if s.topology else "none"] if linking else []),
            str(s.incidents),
            str(s.cause_incidents),
            f"{s.incidents_per_cause:.2f}",
            str(s.wrong_merges),
            split,
            str(s.causes_missed),
            str(s.absorbed_alerts),
            str(s.noise_incidents),
            *([f"{s.roots_named} of {s.causes}" if s.topology else "-"] if linking else []),
        ]
        lines.append("| " + " | ".join(cells) + " |")
        if run.dead_letters or s.unknown_alerts:
            lines.append(
                f"<!-- {name}: {run.dead_letters} dead letters, {s.unknown_alerts} unknown alerts -->"
            )
    return "\n".join(lines)


def render_causes(storm: Storm, results: list[_Result]) -> str:
    """Incidents per cause, one column per rules file; ``+N absorbed`` for alerts in no incident."""
    lines = [
        "| cause | kind | alerts | " + " | ".join(_column_name(name, s) for name, s, _ in results) + " |",
        "|---|---|---|" + "---|" * len(results),
    ]
    by_rules = [{c.cause: c for c in s.per_cause} for _, s, _ in results]
    for cause in storm.causes:
        cells = []
        for scores in by_rules:
            c = scores[cause.id]
            cell = f"{len(c.incidents)}" + (f" (+{c.absorbed} absorbed)" if c.absorbed else "")
            if c.roots is not None:
                named = ", ".join(sorted(set(c.roots))) or "none"
                cell += ", root named" if c.root_named else f", root: {named}"
            cells.append(cell)
        alerts = by_rules[0][cause.id].alerts if by_rules else 0
        lines.append(f"| {cause.id} | {cause.kind} | {alerts} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
