"""`stormwatch bench`: arguments and the refusals that need no broker."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from stormwatch.commands import bench as bench_command
from stormwatch.config import Settings
from stormwatch.errors import UserError


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench_command.register(parser.add_subparsers())
    return parser.parse_args(["bench", *argv])


def test_every_workload_is_a_choice() -> None:
    for name in bench_command.WORKLOADS:
        args = _parse(name, "--json")
        assert args.workload == name and args.json and args.size == 1.0


def test_unknown_workload_is_refused() -> None:
    with pytest.raises(SystemExit):
        _parse("storm-huge")


@pytest.mark.parametrize("flag", ["--size", "--rate", "--seconds", "--partitions", "--timeout"])
def test_non_positive_numbers_are_refused(flag: str) -> None:
    args = _parse("steady", flag, "0")
    with pytest.raises(UserError, match=flag):
        bench_command.run_bench(args, Settings())


def test_missing_rules_file_is_refused(tmp_path: Path) -> None:
    args = _parse("steady", "--rules", str(tmp_path / "none.yaml"))
    with pytest.raises(UserError, match="not found"):
        bench_command.run_bench(args, Settings())
