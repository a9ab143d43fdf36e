"""Run a tool over the `stormwatch` package as it is installed, from a checkout.

The repository keeps the folders the project was specified with (schemas/, streams/, agents/,
bench/) and pyproject.toml maps them into the one `stormwatch` namespace. Python finds them
through the editable install's import hook, but mypy and import-linter read packages from the
file system and know no such mapping. This script mirrors the installed layout under
build/package-view/ (hard links, rebuilt on every run, so it is never stale), runs the command
there and rewrites the paths it prints back to the files you edit.

    python tools/package_view.py mypy
    python tools/package_view.py lint-imports
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VIEW = ROOT / "build" / "package-view"
SOURCE_SUFFIXES = {".py", ".pyi", ".typed"}
# Both read pyproject.toml from the working directory by default, which here is the view.
CONFIG_FLAG = {"mypy": ["--config-file"], "lint-imports": []}


def package_dirs() -> dict[str, Path]:
    """Each package of pyproject.toml's list and the checkout folder it is built from."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping: dict[str, str] = setuptools["package-dir"]
    dirs: dict[str, Path] = {}
    for package in setuptools["packages"]:
        base = max((m for m in mapping if package == m or package.startswith(m + ".")), key=len)
        rest = package[len(base) :].lstrip(".").split(".") if package != base else []
        dirs[package] = ROOT.joinpath(mapping[base], *rest)
    return dirs


def build_view() -> dict[str, str]:
    """Mirror the installed layout; return {view-relative prefix: checkout-relative prefix}."""
    shutil.rmtree(VIEW / "stormwatch", ignore_errors=True)
    prefixes: dict[str, str] = {}
    for package, source in package_dirs().items():
        target = VIEW.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for path in source.iterdir():
            if path.is_file() and path.suffix in SOURCE_SUFFIXES:
                try:
                    os.link(path, target / path.name)
                except OSError:
                    shutil.copy2(path, target / path.name)
        prefixes[str(target.relative_to(VIEW)) + "/"] = str(source.relative_to(ROOT)) + "/"
    return prefixes


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python tools/package_view.py COMMAND [ARG ...]", file=sys.stderr)
        return 2
    found = shutil.which(argv[0])
    if found is None:
        print(f"package_view: {argv[0]} not found; run `make venv` first", file=sys.stderr)
        return 2
    argv = [str(Path(found).absolute()), *argv[1:]]
    prefixes = build_view()
    # longest first, so stormwatch/streams/core/ wins over stormwatch/streams/ and stormwatch/
    pattern = re.compile("|".join(re.escape(p) for p in sorted(prefixes, key=len, reverse=True)))
    env = dict(os.environ, PYTHONPATH=str(VIEW), MYPYPATH=str(VIEW))
    config = CONFIG_FLAG.get(Path(argv[0]).name)
    proc = subprocess.run(
        [*argv, *([*config, str(ROOT / "pyproject.toml")] if config is not None else [])],
        cwd=VIEW,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    for line in proc.stdout.splitlines():
        print(pattern.sub(lambda m: prefixes[m.group(0)], line) if line[:1] not in (" ", "-") else line)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
