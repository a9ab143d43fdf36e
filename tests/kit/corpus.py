"""A deterministic corpus of malformed raw records, with good alerts to interleave.

Every bad record has exactly one thing wrong with it, so the pipeline must turn it into exactly
one dead letter (a batch format carries a single alert): random bytes, truncated JSON, records
just at and over ``max_record_bytes``, a wrong type in every typed field of every input format,
invalid UTF-8, nesting deeper than ``max_json_depth``, label bombs over ``max_labels``,
timestamps in year 1 and 9999, and a handful of other refusals (unknown format header, empty
documents, bad label names, oversize label values, unknown fields, unsupported versions).
``expect`` names the dead-letter reasons a case may get (empty: any reason).

Good records hold one alert each, in the five formats in turn, with a unique ``instance`` label
(a per-replica label, so they group by alertname and format into a few incidents); the first
ones sit exactly at the size limits (record size, label size, label count).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from stormwatch.schemas.adapters import FORMAT_HEADER

FORMATS = ("prometheus", "alertmanager", "pagerduty", "cloudevents", "native")
ISO = "2026-01-01T00:00:00Z"
YEAR_1 = ("0001-06-01T00:00:00Z", "0001-01-01T00:00:01Z", "0001-12-31T23:59:59.999Z")
YEAR_9999 = ("9999-12-31T23:59:59Z", "9999-01-01T00:00:00+00:00", "9999-06-15T12:00:00.5Z")
EPOCH_YEAR_1 = (-62135596800, -62135596800000, -62000000000)
EPOCH_YEAR_9999 = (253402300799, 253402300799000, 253402000000.5)

Headers = list[tuple[str, str | bytes | None]]
Doc = Any


@dataclass(frozen=True)
class Case:
    """One raw record: its value (None = tombstone), headers, and what it should become."""

    kind: str
    value: bytes | None
    headers: Headers | None = None
    expect: frozenset[str] = field(default_factory=frozenset)
    good: bool = False


# -------------------------------------------------------------------- one good alert per format


def good_doc(fmt: str, uid: str, *, annotation: str = "ok") -> Doc:
    """A valid single-alert document of ``fmt``; ``uid`` makes the alert unique."""
    labels = {"alertname": f"BadInputGood_{fmt}", "instance": uid, "severity": "warning"}
    if fmt == "prometheus":
        return [
            {
                "labels": labels,
                "annotations": {"summary": annotation},
                "startsAt": ISO,
                "generatorURL": "http://prometheus.example/graph",
            }
        ]
    if fmt == "alertmanager":
        return {
            "version": "4",
            "groupKey": "{}:{alertname}",
            "status": "firing",
            "receiver": "stormwatch",
            "alerts": [
                {
                    "status": "firing",
                    "labels": labels,
                    "annotations": {"summary": annotation},
                    "startsAt": ISO,
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prometheus.example/graph",
                    "fingerprint": uid[:16],
                }
            ],
        }
    if fmt == "pagerduty":
        return {
            "routing_key": "0" * 32,
            "event_action": "trigger",
            "payload": {
                "summary": annotation,
                "source": uid,
                "severity": "warning",
                "timestamp": ISO,
                "component": "db",
                "group": "storage",
                "class": "BadInputGood_pagerduty",
            },
            "client": "corpus",
            "client_url": "http://monitor.example",
        }
    native_alert = {
        "labels": labels,
        "annotations": {"summary": annotation},
        "status": "firing",
        "severity": "warning",
        "starts_at": ISO,
        "generator_url": "http://monitor.example",
        "source": "corpus",
    }
    if fmt == "cloudevents":
        return {
            "specversion": "1.0",
            "id": uid,
            "source": "/corpus",
            "type": "alert",
            "time": ISO,
            "datacontenttype": "application/json",
            "data": native_alert,
        }
    return {"stormwatch": 1, "source": "corpus", "alerts": [native_alert]}


def _dumps(doc: Doc) -> bytes:
    return orjson.dumps(doc)


# ------------------------------------------------------------------ the typed fields of each format

# (format, path, kind); path items index into the document; kind says which types are right:
# "str", "req_str" (required: null is wrong too), "obj", "labels", "labels_value", "ts",
# "ts_epoch", "status", "version", "item" (an alert/event element), "alerts" (the array).
FIELDS: list[tuple[str, tuple[Any, ...], str]] = [
    ("prometheus", (0,), "item"),
    ("prometheus", (0, "labels"), "labels"),
    ("prometheus", (0, "labels", "alertname"), "labels_value"),
    ("prometheus", (0, "annotations"), "obj"),
    ("prometheus", (0, "annotations", "summary"), "labels_value"),
    ("prometheus", (0, "startsAt"), "ts"),
    ("prometheus", (0, "endsAt"), "ts"),
    ("prometheus", (0, "generatorURL"), "str"),
    ("alertmanager", ("version",), "version"),
    ("alertmanager", ("alerts",), "alerts"),
    ("alertmanager", ("alerts", 0), "item"),
    ("alertmanager", ("alerts", 0, "status"), "status"),
    ("alertmanager", ("alerts", 0, "labels"), "labels"),
    ("alertmanager", ("alerts", 0, "labels", "instance"), "labels_value"),
    ("alertmanager", ("alerts", 0, "annotations"), "obj"),
    ("alertmanager", ("alerts", 0, "annotations", "summary"), "labels_value"),
    ("alertmanager", ("alerts", 0, "startsAt"), "ts"),
    ("alertmanager", ("alerts", 0, "endsAt"), "ts"),
    ("alertmanager", ("alerts", 0, "generatorURL"), "str"),
    ("alertmanager", ("alerts", 0, "fingerprint"), "str"),
    ("pagerduty", ("event_action",), "status"),
    ("pagerduty", ("dedup_key",), "str"),
    ("pagerduty", ("payload",), "req_obj"),
    ("pagerduty", ("payload", "summary"), "req_str"),
    ("pagerduty", ("payload", "source"), "req_str"),
    ("pagerduty", ("payload", "severity"), "req_str"),
    ("pagerduty", ("payload", "timestamp"), "ts_epoch"),
    ("pagerduty", ("payload", "component"), "str"),
    ("pagerduty", ("payload", "group"), "str"),
    ("pagerduty", ("payload", "class"), "str"),
    ("pagerduty", ("client",), "str"),
    ("pagerduty", ("client_url",), "str"),
    ("cloudevents", ("specversion",), "version"),
    ("cloudevents", ("id",), "req_str"),
    ("cloudevents", ("source",), "req_str"),
    ("cloudevents", ("type",), "req_str"),
    ("cloudevents", ("time",), "ts"),
    ("cloudevents", ("datacontenttype",), "str"),
    ("cloudevents", ("data",), "item"),
    ("cloudevents", ("data", "labels"), "labels"),
    ("cloudevents", ("data", "labels", "alertname"), "labels_value"),
    ("cloudevents", ("data", "annotations"), "obj"),
    ("cloudevents", ("data", "status"), "status"),
    ("cloudevents", ("data", "severity"), "str"),
    ("cloudevents", ("data", "starts_at"), "ts_epoch"),
    ("cloudevents", ("data", "generator_url"), "str"),
    ("native", ("stormwatch",), "version"),
    ("native", ("source",), "str"),
    ("native", ("alerts",), "alerts"),
    ("native", ("alerts", 0), "item"),
    ("native", ("alerts", 0, "labels"), "labels"),
    ("native", ("alerts", 0, "labels", "alertname"), "labels_value"),
    ("native", ("alerts", 0, "annotations"), "obj"),
    ("native", ("alerts", 0, "annotations", "summary"), "labels_value"),
    ("native", ("alerts", 0, "status"), "status"),
    ("native", ("alerts", 0, "severity"), "str"),
    ("native", ("alerts", 0, "starts_at"), "ts_epoch"),
    ("native", ("alerts", 0, "ends_at"), "ts_epoch"),
    ("native", ("alerts", 0, "generator_url"), "str"),
    ("native", ("alerts", 0, "source"), "str"),
    ("native", ("alerts", 0, "key"), "str"),
]

_SCALARS: list[Any] = [0, 42, -7, 1.5, True, False]
_CONTAINERS: list[Any] = [[], ["x"], [1, 2], {}, {"a": "b"}, {"n": 1}]


def wrong_values(kind: str) -> list[Any]:
    """Values of the wrong type for a field of ``kind`` (null only where the field is required)."""
    strings = ["text", "", "0"]
    if kind in ("str", "status"):
        return _SCALARS + _CONTAINERS
    if kind == "req_str":
        return [None, *_SCALARS, *_CONTAINERS]
    if kind == "obj":
        return [*_SCALARS, [], ["x"], "text"]
    if kind in ("labels", "req_obj"):
        return [None, *_SCALARS, [], ["x"], [{"a": "b"}], "text", ""]
    if kind == "labels_value":
        return [None, *_SCALARS, *_CONTAINERS]
    if kind == "ts":
        return [*_SCALARS, *_CONTAINERS, "yesterday", "2026-13-01T00:00:00Z", "2026-01-01"]
    if kind == "ts_epoch":
        return [True, False, *_CONTAINERS, "soon", "2026-01-01T25:00:00Z"]
    if kind == "version":
        return [2, 1.5, True, "x", "2", [], {}]
    if kind in ("item", "alerts"):
        return [None, *_SCALARS, *strings] if kind == "item" else [*_SCALARS, {}, {"a": 1}, "text"]
    raise ValueError(kind)


def _set(doc: Doc, path: tuple[Any, ...], value: Any) -> Doc:
    out = copy.deepcopy(doc)
    target = out
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return out


# ---------------------------------------------------------------------------- the bad records


class CorpusBuilder:
    """Builds the corpus for given limits (``ingest.*`` settings of the run that reads it)."""

    def __init__(
        self, *, seed: int, max_record_bytes: int, max_labels: int, max_label_bytes: int, max_json_depth: int
    ) -> None:
        self.rnd = random.Random(seed)
        self.max_record_bytes = max_record_bytes
        self.max_labels = max_labels
        self.max_label_bytes = max_label_bytes
        self.max_json_depth = max_json_depth
        self._uid = 0
        self._wrong: list[tuple[tuple[str, tuple[Any, ...], str], Any]] = []
        self._wrong_next = 0
        self._years = [
            (f, v)
            for f in FIELDS
            if f[2] in ("ts", "ts_epoch")
            for v in (YEAR_1 + YEAR_9999 + (EPOCH_YEAR_1 + EPOCH_YEAR_9999 if f[2] == "ts_epoch" else ()))
        ]
        self._years_next = 0

    def uid(self) -> str:
        self._uid += 1
        return f"c{self._uid:06d}-{self.rnd.getrandbits(32):08x}"

    def _fmt(self) -> str:
        return self.rnd.choice(FORMATS)

    # -- kinds

    def random_bytes(self) -> Case:
        size = self.rnd.choice((1, 2, 3, 8, 64, 512, 4096))
        return Case("random_bytes", self.rnd.randbytes(size))

    def truncated(self) -> Case:
        full = _dumps(good_doc(self._fmt(), self.uid()))
        cut = self.rnd.randrange(1, len(full))
        return Case("truncated_json", full[:cut], expect=frozenset({"not_json"}))

    def wrong_type(self) -> Case:
        """Every (field, wrong value) pair in turn, then again: each one is in the corpus."""
        if not self._wrong:
            self._wrong = [(f, v) for f in FIELDS for v in wrong_values(f[2])]
        (fmt, path, _kind), value = self._wrong[self._wrong_next % len(self._wrong)]
        self._wrong_next += 1
        doc = _set(good_doc(fmt, self.uid()), path, value)
        return Case(
            f"wrong_type:{fmt}",
            _dumps(doc),
            headers=self._maybe_declared(fmt),
            expect=frozenset(
                {"invalid_alert", "missing_labels", "bad_timestamp", "unsupported_version", "unknown_format"}
            ),
        )

    def invalid_utf8(self) -> Case:
        full = _dumps(good_doc(self._fmt(), self.uid()))
        bad = self.rnd.choice(
            (
                b"\xff",
                b"\xfe\xff",
                b"\xc0\xaf",
                b"\xed\xa0\x80",
                b"\xe2\x82",
                b"\xf8\x88\x80\x80\x80",
                b"\x80",
            )
        )
        # inside the summary text: the JSON stays well-formed apart from the encoding
        at = full.index(b'"ok"') + 2
        return Case("invalid_utf8", full[:at] + bad + full[at:], expect=frozenset({"invalid_utf8"}))

    def lone_surrogate(self) -> Case:
        fmt = self._fmt()
        full = _dumps(good_doc(fmt, self.uid())).replace(b'"ok"', b'"\\ud800 half a pair"')
        return Case("lone_surrogate", full, expect=frozenset({"invalid_utf8"}))

    def deep(self) -> Case:
        depth = self.rnd.choice(
            (self.max_json_depth + 1, self.max_json_depth + 2, 100, 1000, 1100, 5000, 20000)
        )
        fmt = self._fmt()
        nested = b"[" * depth + b"]" * depth
        doc = _dumps(good_doc(fmt, self.uid()))
        # an extra member holding the nesting: the depth check comes before any field is read
        if fmt == "prometheus":
            value = b'[{"extra":' + nested + b"," + doc[2:]
        else:
            value = doc[:-1] + b',"extra":' + nested + b"}"
        return Case("deep_nesting", value, expect=frozenset({"too_deep"}))

    def label_bomb(self) -> Case:
        count = self.rnd.choice((self.max_labels + 1, self.max_labels + 2, 1000, 3000, 5000))
        fmt = self.rnd.choice(("prometheus", "alertmanager", "cloudevents", "native"))
        labels = {f"l{i}": f"v{i}" for i in range(count)}
        labels["alertname"] = "Bomb"
        path = {
            "prometheus": (0, "labels"),
            "alertmanager": ("alerts", 0, "labels"),
            "cloudevents": ("data", "labels"),
            "native": ("alerts", 0, "labels"),
        }[fmt]
        doc = _set(good_doc(fmt, self.uid()), path, labels)
        return Case("label_bomb", _dumps(doc), expect=frozenset({"too_many_labels"}))

    def bad_year(self) -> Case:
        """Year 1 and year 9999 (text, and epoch seconds/milliseconds where numbers are allowed) in
        every timestamp field of every format, in turn."""
        (fmt, path, _kind), value = self._years[self._years_next % len(self._years)]
        self._years_next += 1
        doc = _set(good_doc(fmt, self.uid()), path, value)
        return Case("year_1_or_9999", _dumps(doc), expect=frozenset({"bad_timestamp"}))

    def too_large(self) -> Case:
        """Over ``max_record_bytes`` by 1 byte up to 48 KiB (the raw topic takes 64 KiB more)."""
        over = self.rnd.choice((1, 2, 100, 4096, 48 * 1024))
        return Case(
            "too_large", self._sized(self.max_record_bytes + over, good=True), expect=frozenset({"too_large"})
        )

    def at_limit_but_bad(self) -> Case:
        """Exactly ``max_record_bytes``: read, then refused for its missing labels."""
        value = self._sized(self.max_record_bytes, good=False)
        return Case("at_limit_missing_labels", value, expect=frozenset({"missing_labels"}))

    def _sized(self, size: int, *, good: bool) -> bytes:
        """A native single-alert document of exactly ``size`` bytes (padded in an annotation)."""
        labels = {"alertname": "BadInputGood_native", "instance": self.uid()} if good else {}
        doc = {"stormwatch": 1, "labels": labels, "annotations": {"summary": ""}}
        base = len(_dumps(doc))
        doc["annotations"] = {"summary": "x" * (size - base)}
        value = _dumps(doc)
        assert len(value) == size, (len(value), size)
        return value

    def misc(self) -> Case:
        fmt = self._fmt()
        uid = self.uid()
        choice = self.rnd.randrange(14)
        if choice == 0:
            return Case("tombstone", None, expect=frozenset({"empty"}))
        if choice == 1:
            return Case("empty", self.rnd.choice((b"", b" ", b"\n\t ")), expect=frozenset({"empty"}))
        if choice == 2:
            value = self.rnd.choice((b"null", b"[]", b'""', b"0", b"true", b'"alert"', b"{}", b"[1,2]"))
            return Case("not_an_alert", value, expect=frozenset({"empty", "unknown_format"}))
        if choice == 3:
            header: Headers = [(FORMAT_HEADER, self.rnd.choice((b"bogus", b"prometheus2", b"", b"\xff")))]
            return Case(
                "unknown_format_header", _dumps(good_doc(fmt, uid)), header, frozenset({"unknown_format"})
            )
        if choice == 4:  # declared format that does not fit the document
            # (a native batch read as an Alertmanager webhook is a valid webhook: not a mismatch)
            others = [f for f in FORMATS if f != fmt and (fmt, f) != ("native", "alertmanager")]
            other = self.rnd.choice(others)
            return Case(
                "format_mismatch",
                _dumps(good_doc(fmt, uid)),
                [(FORMAT_HEADER, other.encode())],
                frozenset({"invalid_alert", "missing_labels", "unsupported_version", "empty"}),
            )
        if choice == 5:  # Prometheus label names are validated, not sanitized
            name = self.rnd.choice(("9lives", "app.kubernetes.io/name", "with space", "ünïcode", "-"))
            doc = _set(good_doc("prometheus", uid), (0, "labels", name), "v")
            return Case("bad_label_name", _dumps(doc), expect=frozenset({"invalid_alert"}))
        if choice == 6:
            size = self.max_label_bytes + self.rnd.choice((0, 1, 500))
            path = {
                "prometheus": (0, "labels", "big"),
                "alertmanager": ("alerts", 0, "labels", "big"),
                "pagerduty": ("payload", "component"),
                "cloudevents": ("data", "labels", "big"),
                "native": ("alerts", 0, "labels", "big"),
            }[fmt]
            doc = _set(good_doc(fmt, uid), path, "x" * size)
            return Case("label_too_big", _dumps(doc), expect=frozenset({"invalid_alert"}))
        if choice == 7:
            doc = _set(good_doc("native", uid), ("alerts", 0, "colour"), "red")
            return Case("unknown_field", _dumps(doc), expect=frozenset({"invalid_alert"}))
        if choice == 8:
            doc = _set(good_doc(fmt, uid), _labels_path(fmt), {})
            return Case("empty_labels", _dumps(doc), expect=frozenset({"missing_labels", "invalid_alert"}))
        if choice == 9:
            doc = _set(good_doc("alertmanager", uid), ("alerts",), [])
            return Case("empty_batch", _dumps(doc), expect=frozenset({"empty"}))
        if choice == 10:
            doc = _set(good_doc("cloudevents", uid), ("data_base64",), self.rnd.choice(("!!!", "e30=", 5)))
            return Case("cloudevent_data_twice", _dumps(doc), expect=frozenset({"invalid_alert"}))
        if choice == 11:
            doc = _set(good_doc("pagerduty", uid), ("event_action",), "resolve")
            return Case("resolve_without_key", _dumps(doc), expect=frozenset({"invalid_alert"}))
        if choice == 12:
            doc = _set(good_doc("native", uid), ("alerts", 0, "key"), "k" * 256)
            return Case("key_too_long", _dumps(doc), expect=frozenset({"invalid_alert"}))
        bom = b"\xef\xbb\xbf" + _dumps(good_doc(fmt, uid))[:-1]
        return Case("bom_then_truncated", bom, expect=frozenset({"not_json"}))

    def _maybe_declared(self, fmt: str) -> Headers | None:
        return [(FORMAT_HEADER, fmt.encode())] if self.rnd.random() < 0.3 else None

    # -- the whole corpus

    MIX: tuple[tuple[str, int], ...] = (
        ("random_bytes", 1600),
        ("truncated", 1800),
        ("wrong_type", 2600),
        ("invalid_utf8", 900),
        ("lone_surrogate", 100),
        ("deep", 500),
        ("label_bomb", 300),
        ("bad_year", 900),
        ("too_large", 30),
        ("at_limit_but_bad", 10),
        ("misc", 1400),
    )

    def bad_cases(self) -> list[Case]:
        makers: dict[str, Callable[[], Case]] = {name: getattr(self, name) for name, _ in self.MIX}
        cases = [makers[name]() for name, count in self.MIX for _ in range(count)]
        self.rnd.shuffle(cases)
        return cases

    def good_cases(self, count: int) -> list[Case]:
        """``count`` good records; the first three sit exactly at the size limits."""
        uid = self.uid()
        big_label = {"alertname": "BadInputGood_native", "instance": uid}
        big_label["big"] = "x" * (self.max_label_bytes - len("big"))
        many = {"alertname": "BadInputGood_native", "instance": self.uid()}
        many.update({f"l{i}": "v" for i in range(self.max_labels - len(many))})
        cases = [
            Case("good_at_record_limit", self._sized(self.max_record_bytes, good=True), good=True),
            Case("good_at_label_limit", _dumps({"stormwatch": 1, "labels": big_label}), good=True),
            Case("good_at_label_count", _dumps({"stormwatch": 1, "labels": many}), good=True),
        ]
        for i in range(count - len(cases)):
            fmt = FORMATS[i % len(FORMATS)]
            cases.append(
                Case(f"good:{fmt}", _dumps(good_doc(fmt, self.uid())), self._maybe_declared(fmt), good=True)
            )
        return cases


def _labels_path(fmt: str) -> tuple[Any, ...]:
    return {
        "prometheus": (0, "labels"),
        "alertmanager": ("alerts", 0, "labels"),
        "pagerduty": ("payload",),
        "cloudevents": ("data", "labels"),
        "native": ("alerts", 0, "labels"),
    }[fmt]


def interleave(bad: list[Case], good: list[Case], seed: int) -> Iterator[Case]:
    """The bad records with the good ones spread evenly between them (deterministically)."""
    rnd = random.Random(seed)
    slots = sorted(rnd.sample(range(len(bad) + len(good)), len(good)))
    good_iter, bad_iter = iter(good), iter(bad)
    taken = set(slots)
    for i in range(len(bad) + len(good)):
        yield next(good_iter) if i in taken else next(bad_iter)
