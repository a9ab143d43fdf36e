"""The shared YAML loading and error-location machinery, on a small model tree of its own."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import ErrorDetails

from stormwatch.loaders import read_config_text
from stormwatch.schemas.yamlerrors import ConfigFileError, ConfigFormat, Place, describe


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Item(_Strict):
    name: str
    wait_ms: int = Field(default=0, alias="wait", ge=0)


class Root(_Strict):
    items: list[Item] = Field(default_factory=list)
    limit: int = Field(default=1, ge=1)
    child: Item | None = None


class RootError(ConfigFileError):
    pass


FORMAT = ConfigFormat(Root, RootError, "root file")


def problems(text: str, fmt: ConfigFormat[Root] = FORMAT) -> list[tuple[str, str, int | None]]:
    with pytest.raises(RootError) as info:
        fmt.validate(fmt.parse(textwrap.dedent(text), "r.yaml"))
    return info.value.problems


def test_a_valid_file_gives_the_model() -> None:
    root = FORMAT.validate(FORMAT.parse("items:\n  - {name: a, wait: 5}\n", "r.yaml"))
    assert root.items[0].wait_ms == 5


def test_an_empty_file_is_an_empty_mapping() -> None:
    assert FORMAT.parse("# nothing here\n", "r.yaml").data == {}


def test_errors_name_the_yaml_path_in_aliases_and_the_line() -> None:
    found = problems(
        """
        limit: 0
        items:
          - name: a
          - name: b
            wait: -1
            color: red
        """
    )
    assert found == [
        ("limit", "must be at least 1; got the number 0", 2),
        ("items[1].wait", "must be at least 0; got the number -1", 6),
        ("items[1].color", "unknown key 'color'; allowed keys: name, wait", 7),
    ]


def test_the_error_text_is_one_line_per_problem() -> None:
    with pytest.raises(RootError) as info:
        FORMAT.validate(FORMAT.parse("child: 3\n", "r.yaml"))
    assert str(info.value) == "r.yaml:1: child: expected a mapping with keys: name, wait; got the number 3"


def test_duplicate_keys_are_refused_with_their_line() -> None:
    with pytest.raises(RootError) as info:
        FORMAT.parse("limit: 2\nitems: []\nlimit: 3\n", "r.yaml")
    ((path, message, line),) = info.value.problems
    assert (path, line) == ("", 3)
    assert "found duplicate key 'limit'" in message and message.startswith("invalid YAML: ")


def test_merge_keys_are_not_duplicates() -> None:
    text = "base: &b {name: x, wait: 1}\n"
    doc = FORMAT.parse(text + "items:\n  - {<<: *b, name: a}\n  - {<<: *b, name: b}\n", "r.yaml")
    assert doc.data["items"] == [{"name": "a", "wait": 1}, {"name": "b", "wait": 1}]


def test_syntax_errors_give_line_and_column() -> None:
    with pytest.raises(RootError) as info:
        FORMAT.parse("items: [\n", "r.yaml")
    ((_path, message, line),) = info.value.problems
    assert line == 2 and "(column 1)" in message


def test_key_of_and_explain_let_a_file_spell_keys_and_word_messages_its_own_way() -> None:
    def key_of(model: type[BaseModel], name: str) -> str | None:
        return "pause" if name == "wait_ms" else name

    def explain(error: ErrorDetails, place: Place) -> str | None:
        return "the pause cannot be negative" if place.field == "wait_ms" else None

    fmt = ConfigFormat(Root, RootError, "root file", key_of=key_of, explain=explain)
    assert fmt.keys(Item) == ["name", "pause"]
    # the file writes the alias; the path shows the file's own spelling, the line is still found
    assert problems("items:\n  - name: a\n    wait: -1\n", fmt) == [
        ("items[0].pause", "the pause cannot be negative", 3)
    ]


def test_problems_found_after_validation_are_located_and_sorted_by_line() -> None:
    doc = FORMAT.parse("items:\n  - name: a\n  - name: b\nlimit: 2\n", "r.yaml")
    located = [(("limit",), "too many"), (("items", 1, "name"), "taken")]
    assert FORMAT.problems(doc, located) == [("items[1].name", "taken", 3), ("limit", "too many", 4)]


def test_unreadable_files_name_the_kind_of_file(tmp_path: Path) -> None:
    with pytest.raises(RootError, match="cannot read the root file: No such file"):
        read_config_text(FORMAT, tmp_path / "missing.yaml")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(RootError, match="the root file is not UTF-8 text"):
        read_config_text(FORMAT, latin1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "nothing (null)"),
        (True, "true"),
        ({}, "a mapping"),
        ([1], "a list"),
        ("x", "the string 'x'"),
        (1.5, "the number 1.5"),
    ],
)
def test_describe(value: object, expected: str) -> None:
    assert describe(value) == expected
