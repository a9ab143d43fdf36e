"""Fingerprints and group hashes: literal vectors from docs/contracts.md, and their properties."""

from __future__ import annotations

import os
import subprocess
import sys
import timeit

import orjson
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from stormwatch.schemas.fingerprint import (
    canonical_labels,
    group_hash,
    key_fingerprint,
    label_fingerprint,
    label_fingerprint_trusted,
)
from tests.kit.paths import ROOT

# The worked examples of docs/contracts.md ("Fingerprints"); change them only with a migration plan.
EXAMPLE_LABELS = {"severity": "critical", "alertname": "HighCPU", "job": "node", "instance": "db-1:9100"}
EXAMPLE_BYTES = b'{"alertname":"HighCPU","instance":"db-1:9100","job":"node","severity":"critical"}'
EXAMPLE_FINGERPRINT = "bbe010e6cf9743fb"

UNICODE_LABELS = {"zone": "zürich", "alertname": 'Disk "full"', "Zone": "tab\there", "émoji": "🔥"}
UNICODE_BYTES = (
    b'{"Zone":"tab\\there","alertname":"Disk \\"full\\"",'
    b'"zone":"z\xc3\xbcrich","\xc3\xa9moji":"\xf0\x9f\x94\xa5"}'
)
UNICODE_FINGERPRINT = "06dbc5861c4e0719"

PAGERDUTY_KEY = "srv01/disk-full"
PAGERDUTY_FINGERPRINT = "e29e7cd11cef32ca"

GROUP_KEY = 'default:{alertname="HighCPU",cluster="eu-1"}'
GROUP_HASH = "6439b3b520103356"


def test_xxh3_library_matches_the_published_spec() -> None:
    # XXH3_64bits("") with seed 0, from the xxHash reference implementation's test vectors
    assert xxhash.xxh3_64_hexdigest(b"") == "2d06800538d394c2"


def test_worked_example_bytes_and_fingerprint() -> None:
    assert canonical_labels(EXAMPLE_LABELS) == EXAMPLE_BYTES
    assert label_fingerprint(EXAMPLE_LABELS) == EXAMPLE_FINGERPRINT
    assert xxhash.xxh3_64_hexdigest(EXAMPLE_BYTES) == EXAMPLE_FINGERPRINT


def test_unicode_example_bytes_and_fingerprint() -> None:
    assert canonical_labels(UNICODE_LABELS) == UNICODE_BYTES
    assert label_fingerprint(UNICODE_LABELS) == UNICODE_FINGERPRINT


def test_key_fingerprint_vector() -> None:
    assert key_fingerprint("pagerduty", PAGERDUTY_KEY) == PAGERDUTY_FINGERPRINT
    assert xxhash.xxh3_64_hexdigest(b"pagerduty\x00" + PAGERDUTY_KEY.encode()) == PAGERDUTY_FINGERPRINT
    assert key_fingerprint("native", PAGERDUTY_KEY) != PAGERDUTY_FINGERPRINT


def test_group_hash_vector() -> None:
    assert group_hash(GROUP_KEY) == GROUP_HASH


def test_documented_vectors_appear_in_contracts_doc() -> None:
    text = (ROOT / "docs" / "contracts.md").read_text(encoding="utf-8")
    for vector in (
        EXAMPLE_BYTES.decode(),
        EXAMPLE_FINGERPRINT,
        PAGERDUTY_FINGERPRINT,
        GROUP_HASH,
        UNICODE_FINGERPRINT,
    ):
        assert vector in text, f"docs/contracts.md lost the worked example {vector!r}"


def test_format_is_16_lowercase_hex() -> None:
    for value in (label_fingerprint({"a": "b"}), key_fingerprint("pagerduty", "k"), group_hash("")):
        assert len(value) == 16
        assert value == value.lower()
        int(value, 16)


def test_stable_across_processes() -> None:
    """Independent of hash randomisation and interpreter state."""
    code = (
        "from schemas.fingerprint import label_fingerprint, group_hash;"
        f"print(label_fingerprint({EXAMPLE_LABELS!r}), group_hash({GROUP_KEY!r}))"
    )
    outputs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(done.stdout.strip())
    assert outputs == {f"{EXAMPLE_FINGERPRINT} {GROUP_HASH}"}


def test_rejects_non_string_labels() -> None:
    with pytest.raises(TypeError, match="str"):
        label_fingerprint({"a": 1})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="str"):
        label_fingerprint({1: "a"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="UTF-8"):
        label_fingerprint({"a": "\ud800"})
    with pytest.raises(TypeError):
        label_fingerprint_trusted({1: "a"})  # type: ignore[dict-item]


def test_fast_enough() -> None:
    """~0.5 µs on the reference machine; the bound is loose so a busy CI box does not flake."""
    runs = 20_000
    seconds = timeit.timeit(lambda: label_fingerprint_trusted(EXAMPLE_LABELS), number=runs)
    assert seconds / runs < 20e-6


# ---- the byte format, restated independently of orjson (this is what docs/contracts.md specifies)

_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _reference_string(text: str) -> str:
    out = []
    for char in text:
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif ord(char) < 0x20:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _reference_canonical(labels: dict[str, str]) -> bytes:
    body = ",".join(f"{_reference_string(k)}:{_reference_string(labels[k])}" for k in sorted(labels))
    return ("{" + body + "}").encode("utf-8")


label_text = st.text(st.characters(codec="utf-8"), max_size=20)  # no lone surrogates
label_sets = st.dictionaries(label_text, label_text, max_size=12)


@settings(max_examples=300, deadline=None)
@given(label_sets)
def test_canonical_bytes_match_the_documented_format(labels: dict[str, str]) -> None:
    assert canonical_labels(labels) == _reference_canonical(labels)
    assert orjson.loads(canonical_labels(labels)) == labels


@settings(max_examples=200, deadline=None)
@given(label_sets, st.randoms(use_true_random=False))
def test_order_independent(labels: dict[str, str], rnd: object) -> None:
    items = list(labels.items())
    rnd.shuffle(items)  # type: ignore[attr-defined]
    shuffled = dict(items)
    assert label_fingerprint(shuffled) == label_fingerprint(labels) == label_fingerprint_trusted(shuffled)


@settings(max_examples=200, deadline=None)
@given(label_sets, label_sets)
def test_different_label_sets_differ(a: dict[str, str], b: dict[str, str]) -> None:
    if a != b:
        assert label_fingerprint(a) != label_fingerprint(b)


def test_key_and_label_domains_do_not_overlap() -> None:
    # canonical label bytes start with "{", key inputs with the format name
    assert key_fingerprint("pagerduty", "x") != label_fingerprint({"pagerduty": "x"})
    assert canonical_labels({}) == b"{}"
