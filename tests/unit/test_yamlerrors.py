"""The shared YAML loading and error-location machinery, on a small model tree of its own."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from stormwatch.loaders import read_config_text
from stormwatch.schemas.yamlerrors import ConfigFileError, ConfigFormat, ErrorCollector, Place, describe


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
    doc = FORMAT.parse("limit: 2\nitems: []\nlimit: 3\n", "r.yaml")
    with pytest.raises(RootError) as info:
        FORMAT.validate(doc)
    ((path, message, line),) = info.value.problems
    assert (path, line) == ("", 3)
    assert message == "invalid YAML: while constructing a mapping: found duplicate key 'limit' (column 1)"


def test_duplicate_keys_are_reported_with_the_other_mistakes() -> None:
    """Not a parse error that hides the rest: every problem in one pass (issue #15)."""
    found = problems("items:\n  - {name: a, wait: -1}\nlimit: 2\nchild: {name: b, name: c}\nlimit: 0\n")
    assert [(path, line) for path, _message, line in found] == [
        ("items[0].wait", 2),
        ("", 4),
        ("", 5),
        ("limit", 5),
    ]


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


class _Team(_Strict):
    members: list[Item]

    @field_validator("members", mode="wrap")
    @classmethod
    def _unique(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> list[Item]:
        """Pydantic's own errors of the items and the check across them, in one pass."""
        errors = ErrorCollector()
        _ok, members = errors.run(handler, value)
        names = [m.get("name") if isinstance(m, dict) else None for m in value]
        for i, name in enumerate(names):
            if name is not None and name in names[:i]:
                errors.add((i, "name"), f"{name!r} is taken")
        if isinstance(value, list) and len(value) > 3:
            errors.add((), "{too} many")  # braces are not a template
        errors.raise_if_any("members")
        assert members is not None
        return members

    @field_validator("members", mode="before")
    @classmethod
    def _custom(cls, value: Any) -> Any:
        if value == "custom":
            raise PydanticCustomError("team_custom", "a custom {kind} error", {"kind": "typed"})
        return value


def test_an_error_collector_reports_pydantic_s_errors_and_its_own_together() -> None:
    fmt = ConfigFormat(_Team, RootError, "team file")
    text = "members:\n  - {name: a}\n  - {name: a, wait: -1}\n  - {name: b, hat: 1}\n  - {name: c}\n"
    with pytest.raises(RootError) as info:
        fmt.validate(fmt.parse(text, "t.yaml"))
    assert info.value.problems == [
        ("members", "{too} many", 2),
        ("members[1].wait", "must be at least 0; got the number -1", 3),
        ("members[1].name", "'a' is taken", 3),
        ("members[2].hat", "unknown key 'hat'; allowed keys: name, wait", 4),
    ]


def test_an_error_collector_keeps_custom_error_types() -> None:
    collector = ErrorCollector()
    ok, result = collector.run(_Team.model_validate, {"members": "custom"})
    assert (ok, result, bool(collector)) == (False, None, True)
    with pytest.raises(ValidationError) as info:
        collector.raise_if_any("team")
    ((error,),) = [info.value.errors()]
    assert (error["type"], error["loc"], error["msg"]) == (
        "team_custom",
        ("members",),
        "a custom typed error",
    )
