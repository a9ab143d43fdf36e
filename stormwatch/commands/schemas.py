"""`stormwatch schemas export DIR`: write the JSON Schemas of the wire contracts."""

from __future__ import annotations

import argparse
from typing import Any

from stormwatch.config import Settings
from stormwatch.errors import UserError

WORKFLOW_SCHEMA = "workflow.schema.json"  # the workflow file format (agents/), for editors


def register(sub: Any) -> None:
    """Add the ``schemas`` command group to the CLI's subparsers."""
    parser = sub.add_parser("schemas", help="JSON Schemas of the wire contracts")
    actions = parser.add_subparsers(dest="schemas_command", metavar="ACTION")
    actions.required = True
    export = actions.add_parser(
        "export",
        help="write one JSON Schema file per contract into DIR",
        description="Write one JSON Schema file per wire contract (and the native input format) into DIR.",
    )
    export.add_argument(
        "dir", metavar="DIR", help="output directory, created if missing (the repo keeps schemas/json)"
    )
    export.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the files in DIR are missing or differ (for CI)",
    )
    export.set_defaults(handler=_export)


def _export(args: argparse.Namespace, settings: Settings) -> int:
    from stormwatch.agents.core.workflow import render_workflow_schema
    from stormwatch.schemas.export import check_json_schemas, export_json_schemas

    extra = {WORKFLOW_SCHEMA: render_workflow_schema()}
    if args.check:
        stale = check_json_schemas(args.dir, extra)
        if stale:
            names = ", ".join(stale)
            print(f"stale JSON Schemas in {args.dir}: {names}; run `stormwatch schemas export {args.dir}`")
            return 1
        print(f"JSON Schemas in {args.dir} are up to date")
        return 0
    try:
        written = export_json_schemas(args.dir, extra)
    except OSError as exc:
        raise UserError(f"cannot write JSON Schemas to {args.dir}: {exc.strerror or exc}") from exc
    for path in written:
        print(path)
    return 0
