"""argparse value types shared by the subcommands, so every command words a bad value alike."""

from __future__ import annotations

import argparse
import os

__all__ = ["positive_int", "worker_options"]


def worker_options(parser: argparse.ArgumentParser) -> None:
    """The options of every long-running worker (ingest, correlate, link, executor, notify)."""
    parser.add_argument(
        "--instance-id",
        default=os.environ.get("STORMWATCH_INSTANCE_ID"),
        help="Stable id of this worker replica; a restarted replica with the same id fences its "
        "predecessor's open transaction at once (default: $STORMWATCH_INSTANCE_ID or host-pid)",
    )
    parser.add_argument("--metrics-port", type=int, help="Serve /metrics on 127.0.0.1:PORT (0: off)")
    parser.add_argument("--max-seconds", type=float, help="Stop after this many seconds (benchmarks, demos)")
    parser.set_defaults(long_running=True)


def positive_int(text: str) -> int:
    """An integer of at least 1, or argparse's usage error saying what was given."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value
