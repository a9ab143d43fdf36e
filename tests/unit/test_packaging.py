"""What ``pip install`` puts on sys.path: one name, ``stormwatch``, with every package directory in it.

pyproject.toml lists the packages by hand (``[tool.setuptools] packages``) and maps the
top-level folders into the ``stormwatch`` namespace (``package-dir``). A package directory missing
from the list is left out of the wheel: its imports work from a checkout and fail once installed.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from tests.kit.paths import ROOT

NAMESPACE = "stormwatch"
FOLDERS = ("stormwatch", "schemas", "streams", "agents", "bench")
"""The top-level folders the project is specified with (docs/architecture.md, "Where things live")."""


def setuptools_config() -> dict[str, Any]:
    config: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return config


def package_of(directory: Path, package_dir: dict[str, str]) -> str | None:
    """The package name setuptools installs ``directory`` as (through ``package-dir``), or None."""
    relative = directory.relative_to(ROOT)
    best: tuple[int, str] | None = None
    for package, folder in package_dir.items():
        root = Path(folder)
        if relative == root or root in relative.parents:
            depth = len(root.parts)
            if best is None or depth > best[0]:
                rest = relative.relative_to(root).parts
                best = (depth, ".".join((package, *rest)))
    return None if best is None else best[1]


def package_directories() -> list[Path]:
    """Every directory with an ``__init__.py`` under the project's folders (caches and build
    output aside)."""
    found = []
    for folder in FOLDERS:
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            if "__pycache__" not in init.parts:
                found.append(init.parent)
    return found


def test_every_package_directory_is_listed() -> None:
    config = setuptools_config()
    listed = set(config["packages"])
    directories = package_directories()
    assert ROOT / "stormwatch" in directories and ROOT / "schemas" in directories
    missing = {}
    for directory in directories:
        package = package_of(directory, config["package-dir"])
        assert package is not None, f"{directory.relative_to(ROOT)} is under no package-dir entry"
        if package not in listed:
            missing[str(directory.relative_to(ROOT))] = package
    assert missing == {}, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_every_listed_package_is_a_package_directory() -> None:
    """The other way round: a listed package whose folder is gone (or lost its __init__.py)."""
    config = setuptools_config()
    installed = {package_of(d, config["package-dir"]) for d in package_directories()}
    assert sorted(set(config["packages"]) - installed) == []


def test_only_the_stormwatch_name_is_installed() -> None:
    """No top-level ``schemas``, ``streams``, ``agents`` or ``bench`` that could shadow (or be
    shadowed by) another distribution's module of that name."""
    config = setuptools_config()
    names = [*config["packages"], *config["package-dir"]]
    assert {name.split(".")[0] for name in names} == {NAMESPACE}
    assert all(name == NAMESPACE or name.startswith(f"{NAMESPACE}.") for name in names)
    assert sorted(config["package-dir"]) == sorted(
        [NAMESPACE, *(f"{NAMESPACE}.{folder}" for folder in FOLDERS if folder != NAMESPACE)]
    )
    assert "py-modules" not in config and "packages" in config  # no loose top-level modules either
