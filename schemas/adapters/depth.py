"""Nesting depth of decoded JSON, measured without recursion (hostile input cannot blow the stack).

orjson itself refuses nesting deeper than 1024; this enforces the much lower configured limit.
"""

from __future__ import annotations

from typing import Any

__all__ = ["depth_exceeds"]


def depth_exceeds(doc: Any, limit: int) -> bool:
    """True iff ``doc`` nests arrays/objects more than ``limit`` levels (a scalar is depth 0)."""
    kind = type(doc)
    if kind is not dict and kind is not list:
        return False
    if limit < 1:
        return True
    stack: list[tuple[Any, int]] = [(doc, 1)]
    pop = stack.pop
    push = stack.append
    while stack:
        node, depth = pop()
        children = node.values() if type(node) is dict else node
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                if depth >= limit:
                    return True
                if child:
                    push((child, depth + 1))
    return False
