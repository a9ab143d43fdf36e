"""`stormwatch notify`: the notifier stage, and `notify check` / `notify convert` for its file.

- ``stormwatch notify --notify-file notify.yaml``: the long-running stage (agents/notifier.py);
- ``stormwatch notify check FILE``: load the notifier file as the stage does, report every
  problem as ``file:line: ...`` (exit 2) or a one-line summary (exit 0);
- ``stormwatch notify convert alertmanager.yml``: the notifier file an Alertmanager
  configuration translates to, on stdout (or ``-o FILE``), with what did not carry over as
  comments on top and as warnings on stderr.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path
from typing import Any

from stormwatch.agents.core.notify_amconvert import AlertmanagerConversionError, from_alertmanager
from stormwatch.agents.core.notify_config import (
    NotifierConfig,
    NotifierConfigError,
    RouteNode,
    parse_notifier_config,
)
from stormwatch.commands.args import worker_options
from stormwatch.config import Settings
from stormwatch.errors import UserError

__all__ = ["load_notifier_file", "register"]


def register(sub: Any) -> None:
    text = "Run the notifier: incident events -> routed, rate-limited, retried notifications."
    p: argparse.ArgumentParser = sub.add_parser("notify", help=text, description=text)
    # --config here too, so `stormwatch notify --config FILE` works as well as before the command
    p.add_argument("--config", default=argparse.SUPPRESS, help="YAML configuration file (as before `notify`)")
    p.add_argument("--notify-file", metavar="FILE", help="the notifier file (default: notify.notify_file)")
    worker_options(p)
    p.set_defaults(handler=run_notify)
    actions = p.add_subparsers(dest="notify_command", metavar="ACTION")

    text = "Check a notifier file: every problem as file:line (exit 2), else a summary (exit 0)."
    c = actions.add_parser("check", help=text, description=text)
    c.add_argument("file", metavar="FILE")
    c.set_defaults(handler=run_check, long_running=False)

    text = "Convert an Alertmanager configuration (route, receivers, time intervals) to a notifier file."
    v = actions.add_parser("convert", help=text, description=text)
    v.add_argument("file", metavar="ALERTMANAGER_YML")
    v.add_argument("-o", "--output", metavar="FILE", help="write the notifier file here (default: stdout)")
    v.set_defaults(handler=run_convert, long_running=False)


def load_notifier_file(path: str | None) -> NotifierConfig:
    """The notifier file, parsed and checked; UserError with every problem (file:line) otherwise."""
    if not path:
        raise UserError("no notifier file: pass --notify-file FILE or set notify.notify_file")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"notifier file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read notifier file {path}: {exc}") from None
    try:
        return parse_notifier_config(text, path)
    except NotifierConfigError as exc:
        raise UserError(str(exc)) from None


def _routes(node: RouteNode) -> int:
    return 1 + sum(_routes(child) for child in node.routes)


def run_check(args: argparse.Namespace, settings: Settings) -> int:
    try:
        config = load_notifier_file(args.file)
    except UserError as exc:
        print(exc, file=sys.stderr)
        return 2
    integrations = sum(r.integrations for r in config.receivers.values())
    print(
        f"{args.file}: ok: {len(config.receivers)} receiver(s) with {integrations} integration(s), "
        f"{_routes(config.route)} route(s), {len(config.time_intervals)} time interval(s)"
    )
    return 0


def run_convert(args: argparse.Namespace, settings: Settings) -> int:
    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {args.file}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        conversion = from_alertmanager(text)
    except AlertmanagerConversionError as exc:
        raise UserError(f"{args.file}: {exc}") from None
    for warning in conversion.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    out = conversion.to_yaml()
    if args.output:
        Path(args.output).write_text(out, encoding="utf-8")
    else:
        sys.stdout.write(out)
    return 0


def run_notify(args: argparse.Namespace, settings: Settings) -> int:
    from stormwatch.agents.metrics import notifier_metrics
    from stormwatch.agents.notifier import NotifierStage, build_notifier_loop
    from stormwatch.agents.receivers import AppriseUrlError, SecretError, integrations_for
    from stormwatch.kafka.client import require_topic
    from stormwatch.metrics import serve_metrics

    config = load_notifier_file(args.notify_file or settings.notify.notify_file)
    integrations = {}
    for name, receiver in config.receivers.items():
        try:
            integrations[name] = integrations_for(receiver, external_url=settings.notify.external_url)
        except (SecretError, AppriseUrlError) as exc:
            raise UserError(f"receiver {name}: {exc}") from None
    serve_metrics(
        args.metrics_port if args.metrics_port is not None else settings.metrics_port, settings.metrics_host
    )
    t = settings.topics
    for topic in (t.incidents, t.notify_state, t.notifications, t.notifications_dlq, t.commands):
        require_topic(settings, topic)
    instance = str(args.instance_id or f"{socket.gethostname()}-{os.getpid()}")
    stage = NotifierStage(settings, config, integrations, notifier_metrics())
    loop = build_notifier_loop(settings, stage, instance)
    try:
        loop.serve(
            "notifier",
            max_seconds=args.max_seconds,
            instance=instance,
            notify_file=config.source,
            receivers=sorted(config.receivers),
        )
    finally:
        stage.close()
    return 0
