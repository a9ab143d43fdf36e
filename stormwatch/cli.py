"""The `stormwatch` command: one entry point, subcommands registered by their own modules.

User errors (bad flags, bad files, unreachable Kafka) exit non-zero with one actionable line.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from stormwatch.allocator import use_preferred_allocator
from stormwatch.config import ConfigError, Settings, load_settings
from stormwatch.errors import UserError
from stormwatch.logs import LOG_FORMATS, configure_logging

# Modules that each expose ``register(subparsers)``; their handlers take (args, settings) -> int.
COMMAND_MODULES = [
    "stormwatch.commands.topics",
    "stormwatch.commands.schemas",
    "stormwatch.commands.pipeline",
    "stormwatch.commands.incidents",
    "stormwatch.commands.operator",
    "stormwatch.commands.silences",
    "stormwatch.commands.gateway",
    "stormwatch.commands.config",
    "stormwatch.commands.simulate",
    "stormwatch.commands.agent",
    "stormwatch.commands.notify",
    "stormwatch.commands.demo",
    "stormwatch.commands.bench",
    "stormwatch.commands.quality",
    "stormwatch.commands.topology",
]

Handler = Callable[[argparse.Namespace, Settings], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stormwatch", description="Alert correlation pipeline on Apache Kafka."
    )
    parser.add_argument("--config", help="YAML configuration file (default: $STORMWATCH_CONFIG)")
    parser.add_argument(
        "--bootstrap-servers", help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS)"
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="More log output (-vv for debug)")
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="Logs on stderr: one JSON object per line, or text (default: log_format, json)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: None, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    try:
        if getattr(args, "long_running", False):
            # a real command line may re-execute this process with jemalloc (allocator.py); a call
            # from Python (tests, embedding) only checks the choice
            use_preferred_allocator(auto_jemalloc=getattr(args, "auto_jemalloc", False), reexec=argv is None)
        overrides = {"kafka": {"bootstrap_servers": args.bootstrap_servers}} if args.bootstrap_servers else {}
        settings = load_settings(args.config, **overrides)
        configured: int = getattr(logging, settings.log_level.upper(), logging.WARNING)
        configure_logging(level or configured, args.log_format or settings.log_format)
        handler: Handler = args.handler
        return handler(args, settings)
    except (UserError, ConfigError) as exc:
        print(f"stormwatch {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
