"""Records between the correlator and the linker (issue #12), both ways, orjson with a ``t`` tag.

On ``stormwatch.linker.input`` (written by the correlator, keyed by topology scope):

- ``note``: one group note (``GroupNote``) of correlator partition ``src``;
- ``op``: an operator's ``split`` or ``join`` request (``SplitCommand``/``LinkCommand``), forwarded
  by the partition of its incident at its clock, keyed by the incident's scope; ordered with notes;
- ``adv``: correlator partition ``src`` will write no note earlier than ``wm`` (its clock), sent
  to every linker partition whenever it moves, so each linker partition knows how far the notes
  of every correlator partition are complete (``n``: how many correlator partitions there are).

On the correlator input (written by the linker):

- ``lcmd``: a linking command (an ``OperatorCommand`` by ``linker``) for the incident of that
  partition, to apply at event time ``at`` (the note's time plus ``link.delay``);
- ``lmark``: linker partition ``src`` has decided every note earlier than ``wm``; sent to every
  correlator partition after the commands of those decisions (``n``: how many linker partitions).

And by the correlator stage to its own input partition:

- ``lskip``: it waited ``link.max_wait`` (wall time) for the linker in vain; event time may go on
  to ``wm`` without it. Being a record, the give-up is replayed like everything else.

The two marks make linking deterministic: the correlator does not apply event time past
``min(lmark) + delay``, so every command due by then is already in its input, however the stages
were scheduled or restarted (unless it gave up waiting: ``lskip``).
"""

from __future__ import annotations

from typing import Any

import orjson

from stormwatch.streams.core.linking import (
    GroupNote,
    LinkCommand,
    SplitCommand,
    input_to_wire,
    note_from_wire,
    note_to_wire,
)

__all__ = [
    "LINK_COMMAND",
    "LINK_MARK",
    "LINK_SKIP",
    "NOTE",
    "PROMISE",
    "REQUEST",
    "decode_note",
    "encode_link_command",
    "encode_link_mark",
    "encode_link_skip",
    "encode_note",
    "encode_promise",
    "encode_request",
    "scope_key",
]

NOTE = "note"
PROMISE = "adv"
LINK_COMMAND = "lcmd"
LINK_MARK = "lmark"
LINK_SKIP = "lskip"
REQUEST = "op"


def scope_key(scope: tuple[str, ...]) -> str:
    """The record key of a scope's notes: one linker partition sees all of a scope."""
    return "\x1f".join(scope)


def encode_note(source: int, sources: int, note: GroupNote) -> bytes:
    return orjson.dumps(
        {
            "t": NOTE,
            "src": source,
            "n": sources,
            "note": note_to_wire(note),
        }
    )


def encode_request(source: int, sources: int, request: SplitCommand | LinkCommand) -> bytes:
    return orjson.dumps({"t": REQUEST, "src": source, "n": sources, "note": input_to_wire(request)})


def decode_note(row: list[Any]) -> GroupNote:
    return note_from_wire(row)


def encode_promise(source: int, sources: int, watermark: int) -> bytes:
    return orjson.dumps({"t": PROMISE, "src": source, "n": sources, "wm": watermark})


def encode_link_command(apply_at: int, command_json: bytes) -> bytes:
    return b'{"t":"lcmd","at":' + str(int(apply_at)).encode() + b',"cmd":' + command_json + b"}"


def encode_link_mark(source: int, sources: int, watermark: int) -> bytes:
    return orjson.dumps({"t": LINK_MARK, "src": source, "n": sources, "wm": watermark})


def encode_link_skip(until: int) -> bytes:
    return orjson.dumps({"t": LINK_SKIP, "wm": until})
