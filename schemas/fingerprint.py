"""Alert identities and partition hashes, stable across processes, hosts and releases.

Every hash is XXH3-64 with seed 0 (a fixed, versioned spec in xxHash >= 0.8), printed as 16
lowercase hex digits. The bytes hashed are specified byte for byte in docs/contracts.md, so any
implementation in any language can reproduce them; tests/unit/test_fingerprint.py checks the worked
examples of that page literally.
"""

from __future__ import annotations

import orjson
import xxhash

__all__ = [
    "canonical_labels",
    "group_hash",
    "key_fingerprint",
    "label_fingerprint",
    "label_fingerprint_trusted",
]

_SORT_KEYS = orjson.OPT_SORT_KEYS
_xxh3_hex = xxhash.xxh3_64_hexdigest


def canonical_labels(labels: dict[str, str]) -> bytes:
    """The canonical bytes of a label set: compact UTF-8 JSON, keys sorted by code point.

    Raises ``TypeError`` for keys or values that are not strings, and for strings holding lone
    surrogates (they have no UTF-8 encoding).
    """
    for key, value in labels.items():
        if type(key) is not str or type(value) is not str:
            raise TypeError(f"labels must map str to str, got {type(key).__name__} -> {type(value).__name__}")
    try:
        return orjson.dumps(labels, option=_SORT_KEYS)
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"labels cannot be encoded as UTF-8 JSON: {exc}") from exc


def label_fingerprint(labels: dict[str, str]) -> str:
    """Identity of an alert by its label set; the order of the dict does not matter.

    Raises ``TypeError`` unless every key and value is a string.
    """
    return _xxh3_hex(canonical_labels(labels))


def label_fingerprint_trusted(labels: dict[str, str]) -> str:
    """``label_fingerprint`` for labels already validated as str -> str (the adapters' hot path).

    Skips the per-label type check (about 0.25 µs of the 0.45 µs); the result is identical.
    """
    try:
        return _xxh3_hex(orjson.dumps(labels, option=_SORT_KEYS))
    except orjson.JSONEncodeError:
        return label_fingerprint(labels)  # raises the TypeError that says what is wrong


def key_fingerprint(source_format: str, key: str) -> str:
    """Identity of an alert that carries its own key (PagerDuty ``dedup_key``, native ``key``).

    Hashes ``source_format`` UTF-8, one NUL byte, then ``key`` UTF-8. The format name keeps equal
    keys from different sources apart, and since canonical label bytes always start with ``{``
    these inputs never coincide with a label fingerprint's input.
    """
    return _xxh3_hex(source_format.encode() + b"\x00" + key.encode())


def group_hash(group_key: str) -> str:
    """``gkhash``: partition key of a correlation group (XXH3-64 of the UTF-8 group key)."""
    return _xxh3_hex(group_key.encode())
