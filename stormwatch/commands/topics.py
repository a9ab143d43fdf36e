"""`stormwatch topics create|check|list`: provision the pipeline's topics and verify live ones."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from stormwatch.config import Settings
from stormwatch.kafka.topics import DEFAULT_TIMEOUT_S, Difference, check_topics, create_topics, topic_specs
from stormwatch.output import dump_json, render_table, terminal_width


def register(sub: Any) -> None:
    """Add the ``topics`` command group to the CLI's subparsers."""
    parser = sub.add_parser(
        "topics",
        help="create and check the pipeline's Kafka topics",
        description="Create and check the pipeline's Kafka topics (docs/operations.md, 'Topics').",
    )
    actions = parser.add_subparsers(dest="topics_command", metavar="ACTION")
    actions.required = True

    create = actions.add_parser(
        "create",
        help="create the missing topics; check, never change, existing ones",
        description=(
            "Create every missing topic with its partitions, replication factor and configs. "
            "Existing topics are left as they are and compared with their spec: exit 1 when one differs."
        ),
    )
    check = actions.add_parser(
        "check",
        help="compare live topics with their spec; exit 1 on any difference",
        description=(
            "Compare each live topic's partitions, replication factor and the configs stormwatch sets "
            "with the configuration. Prints every difference and exits 1 when there is one, 0 when all match."
        ),
    )
    listing = actions.add_parser(
        "list",
        help="show every topic the pipeline uses, with its spec and live status",
        description="Show every topic the pipeline uses: role, name, partitions, replication, configs.",
    )
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.add_argument(
        "--no-check", action="store_true", help="only show the specs; do not contact Kafka for the status"
    )
    for p in (create, check, listing):
        p.add_argument(
            "--timeout",
            type=float,
            default=DEFAULT_TIMEOUT_S,
            metavar="SECONDS",
            help=f"how long to wait for Kafka (default {DEFAULT_TIMEOUT_S:g})",
        )
    create.set_defaults(handler=_create)
    check.set_defaults(handler=_check)
    listing.set_defaults(handler=_list)


def _print_differences(diffs: list[Difference]) -> None:
    for diff in diffs:
        print(f"differs: {diff}")


def _create(args: argparse.Namespace, settings: Settings) -> int:
    report = create_topics(settings, timeout_s=args.timeout)
    for name in report.created:
        print(f"created: {name}")
    for name in report.existing:
        print(f"exists:  {name}")
    if report.differences:
        _print_differences(report.differences)
        print(
            f"{len(report.differences)} difference(s) in existing topics; create does not change "
            "existing topics: fix them with Kafka's tools or change the configuration",
            file=sys.stderr,
        )
        return 1
    return 0


def _check(args: argparse.Namespace, settings: Settings) -> int:
    diffs = check_topics(settings, timeout_s=args.timeout)
    if diffs:
        _print_differences(diffs)
        print(f"{len(diffs)} difference(s) on Kafka at {settings.kafka.bootstrap_servers}", file=sys.stderr)
        return 1
    count = len(topic_specs(settings))
    print(f"all {count} topics match their spec on Kafka at {settings.kafka.bootstrap_servers}")
    return 0


def _list(args: argparse.Namespace, settings: Settings) -> int:
    specs = topic_specs(settings)
    status: dict[str, str] = {}
    if not args.no_check:
        status = {s.name: "ok" for s in specs}
        for diff in check_topics(settings, timeout_s=args.timeout):
            status[diff.topic] = "missing" if diff.what == "topic" else "differs"
    if args.json:
        rows: list[dict[str, Any]] = [
            {
                "role": s.role,
                "name": s.name,
                "partitions": s.partitions,
                "replication": s.replication,
                "config": dict(s.config),
                **({"status": status[s.name]} if status else {}),
            }
            for s in specs
        ]
        print(dump_json(rows))
        return 0
    headers = ["ROLE", "TOPIC", "PARTITIONS", "RF", *(["STATUS"] if status else []), "CONFIG"]
    table = [
        [
            s.role,
            s.name,
            s.partitions,
            s.replication,
            *([status[s.name]] if status else []),
            " ".join(f"{k}={v}" for k, v in sorted(s.config.items())),
        ]
        for s in specs
    ]
    print(render_table(headers, table, max_width=terminal_width(sys.stdout)))
    return 0
