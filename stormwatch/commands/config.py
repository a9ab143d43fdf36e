"""`stormwatch config show|docs`: the effective configuration and its reference."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from stormwatch.config import Settings
from stormwatch.configdoc import masked, render_markdown


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "config", help="show the effective configuration or its reference", description=__doc__
    )
    inner = p.add_subparsers(dest="config_command", metavar="ACTION")
    inner.required = True
    show = inner.add_parser("show", help="print the effective configuration as YAML (secrets masked)")
    show.set_defaults(handler=_show)
    docs = inner.add_parser("docs", help="print the configuration reference (docs/configuration.md)")
    docs.set_defaults(handler=_docs)


def _show(args: argparse.Namespace, settings: Settings) -> int:
    sys.stdout.write(yaml.safe_dump(masked(settings), sort_keys=False))
    return 0


def _docs(args: argparse.Namespace, settings: Settings) -> int:
    sys.stdout.write(render_markdown())
    return 0
