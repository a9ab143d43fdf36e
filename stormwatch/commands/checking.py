"""What the subcommands that validate files share (`topology check`, `workflows validate`): each
file is loaded on its own; a valid one gets its summary on stdout, an invalid one every problem
the loader found on stderr, and the exit status is 1 when any file was invalid."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import TypeVar

__all__ = ["check_files"]

Loaded = TypeVar("Loaded")


def check_files(
    paths: Iterable[str],
    load: Callable[[str], Loaded],
    invalid: type[Exception],
    summary: Callable[[str, Loaded], str],
) -> int:
    """Load every path with ``load``; print ``summary(path, loaded)``, or the ``invalid`` error's
    text (the loader's FILE:LINE: PATH: MESSAGE lines) to stderr. 0 if all loaded, else 1."""
    failed = 0
    for path in paths:
        try:
            loaded = load(path)
        except invalid as exc:
            failed += 1
            print(str(exc), file=sys.stderr)
            continue
        print(summary(path, loaded))
    return 1 if failed else 0
