"""`stormwatch quality`: how many incidents a multi-cause storm becomes, against its ground truth.

No broker: the storm (stormwatch.storms) runs through the pure core offline, once per rules file,
and the incidents are scored by stormwatch.bench.quality (docs/simulate.md, "Correlation quality").
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from stormwatch.config import Settings
from stormwatch.errors import UserError
from stormwatch.loaders import load_rules
from stormwatch.output import dump_json
from stormwatch.simulate import FORMATS, encode_line
from stormwatch.storms import STORMS, Storm, build_storm
from stormwatch.streams.core.rules import RulesConfig, RulesError

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


def run_quality(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: every `stormwatch` process registers this command, the workers need none of it.
    from stormwatch.bench.quality import score_storm

    rules = _rules(args, settings)
    storm = build_storm(args.storm, seed=args.seed)
    if args.out:
        _write_storm(storm, args.fmt, Path(args.out))
    if args.truth:
        _write_truth(storm, args.fmt, Path(args.truth))
    results = [(name, *score_storm(storm, config, fmt=args.fmt)) for name, config in rules]
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
    lines = [
        head,
        "",
        f"| rules | incidents | for the {summary['root_causes']} causes | per cause | wrong merges | causes split "
        "| causes missed | absorbed alerts | background |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s, run in results:
        split = f"{s.causes_split} (+{s.extra_incidents} incidents)" if s.causes_split else "0"
        lines.append(
            f"| {_rules_name(name)} | {s.incidents} | {s.cause_incidents} | {s.incidents_per_cause:.2f} "
            f"| {s.wrong_merges} | {split} | {s.causes_missed} | {s.absorbed_alerts} | {s.noise_incidents} |"
        )
        if run.dead_letters or s.unknown_alerts:
            lines.append(
                f"<!-- {name}: {run.dead_letters} dead letters, {s.unknown_alerts} unknown alerts -->"
            )
    return "\n".join(lines)


def render_causes(storm: Storm, results: list[_Result]) -> str:
    """Incidents per cause, one column per rules file; ``+N absorbed`` for alerts in no incident."""
    lines = [
        "| cause | kind | alerts | " + " | ".join(_rules_name(name) for name, _, _ in results) + " |",
        "|---|---|---|" + "---|" * len(results),
    ]
    by_rules = [{c.cause: c for c in s.per_cause} for _, s, _ in results]
    for cause in storm.causes:
        cells = []
        for scores in by_rules:
            c = scores[cause.id]
            cells.append(f"{len(c.incidents)}" + (f" (+{c.absorbed} absorbed)" if c.absorbed else ""))
        alerts = by_rules[0][cause.id].alerts if by_rules else 0
        lines.append(f"| {cause.id} | {cause.kind} | {alerts} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
