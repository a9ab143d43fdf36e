"""YAML configuration files that say exactly what is wrong: ``file:line: path: what; what is allowed``.

The rules file and the workflow file are both pydantic models loaded from YAML, and both must turn
every mistake into a line a person can act on. ``ConfigFormat`` does that for one kind of file:
it parses with a loader that refuses duplicate keys (PyYAML keeps the last one silently) while
keeping the node tree, validates against the root model, and maps each pydantic error location back
to the key path as written in the file (aliases, human duration names) and to its line.

What differs between the files stays with their models: how a field is spelled in YAML
(``key_of``) and messages only that file needs (``explain``).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError, core_schema

from stormwatch.schemas.matchers import Matcher

__all__ = [
    "ConfigFileError",
    "ConfigFormat",
    "ErrorCollector",
    "Loc",
    "Place",
    "Problem",
    "YamlDocument",
    "alias_or_name",
    "bound_of",
    "describe",
    "error_loc",
    "matcher_from_yaml",
    "validate_with_checks",
]

Loc = tuple[str | int, ...]
"""A location inside the document: mapping keys and list indexes, outermost first."""

Problem = tuple[str, str, int | None]
"""``(path, message, line)``: the path as written in YAML ('' for the whole file), 1-based line or None."""

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class ConfigFileError(ValueError):
    """A configuration file cannot be used; one line per problem: ``file:line: path: message``.

    ``problems`` holds one ``(path, message, line)`` per problem (``line`` is 1-based or None).
    """

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = []
        for path, message, line in problems:
            where = f"{source}:{line}" if line is not None else source
            lines.append(f"{where}: {path}: {message}" if path else f"{where}: {message}")
        super().__init__("\n".join(lines))


def describe(value: object) -> str:
    """How a wrong value is named in a message: ``the string 'x'``, ``a list``, ``nothing (null)``."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    return type(value).__name__


def matcher_from_yaml(value: Any, hint: str) -> Any:
    """A label matcher as a file writes it, for a ``BeforeValidator``: a string in Alertmanager
    syntax is parsed here (so a mistake reads as the parser's message, not pydantic's), a
    ``{name, op, value}`` mapping is left to pydantic, and anything else is refused with
    ``hint`` followed by ``got <what it was>``."""
    if isinstance(value, str):
        try:
            return Matcher.parse(value)
        except ValidationError as exc:
            raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
    if isinstance(value, (dict, Matcher)):
        return value
    raise ValueError(f"{hint} got {describe(value)}")


_BOUNDS = {
    "greater_than": ("gt", "greater than"),
    "greater_than_equal": ("ge", "at least"),
    "less_than_equal": ("le", "at most"),
}


def bound_of(error: ErrorDetails) -> tuple[str, str, Any] | None:
    """For a numeric bound error: ``(constraint, words, limit)``, e.g. ``("ge", "at least", 1)``."""
    spec = _BOUNDS.get(error["type"])
    if spec is None:
        return None
    constraint, words = spec
    return constraint, words, (error.get("ctx") or {}).get(constraint)


def error_loc(error: ErrorDetails) -> Loc:
    """An error's location without the segments pydantic adds for itself ("[key]", union members)."""
    return tuple(s for s in error["loc"] if isinstance(s, int) or "[" not in s)


_KNOWN_ERROR_TYPES: frozenset[str] = frozenset(typing.get_args(core_schema.ErrorType))


class ErrorCollector:
    """Errors of several checks of one value, raised together from a validator.

    pydantic stops checking a value at the first check that raises, and skips the checks that
    depend on a field that failed; a file would then show its mistakes in rounds. A validator that
    collects here runs every check and raises once; pydantic merges the errors into its own, each
    at its location (relative to the value being validated).
    """

    def __init__(self) -> None:
        self.errors: list[InitErrorDetails] = []

    def __bool__(self) -> bool:
        return bool(self.errors)

    def add(self, loc: Loc, message: str, value: Any = None) -> None:
        """One problem at ``loc`` (relative to the value validated), worded as ``message``."""
        self.errors.append(
            InitErrorDetails(type="value_error", loc=loc, input=value, ctx={"error": ValueError(message)})
        )

    def run(self, validate: Callable[[Any], T], value: Any) -> tuple[bool, T | None]:
        """``(ok, result)`` of ``validate(value)`` (pydantic's own validation); its errors are kept."""
        try:
            return True, validate(value)
        except ValidationError as exc:
            for error in exc.errors():
                kind, ctx = error["type"], error.get("ctx")
                known = kind in _KNOWN_ERROR_TYPES
                detail = InitErrorDetails(
                    type=kind if known else PydanticCustomError(kind, error["msg"]),
                    loc=error["loc"],
                    input=error.get("input"),
                )
                if known and ctx is not None:
                    detail["ctx"] = ctx
                self.errors.append(detail)
            return False, None

    def raise_if_any(self, title: str) -> None:
        """Raise every collected error at once (``title`` names the model in pydantic's own text)."""
        if self.errors:
            raise ValidationError.from_exception_data(title, self.errors)


def validate_with_checks(
    title: str,
    handler: Callable[[Any], T],
    data: Any,
    checks_across: Callable[[dict[str, Any]], Iterable[tuple[Loc, str]]],
) -> T:
    """For a ``model_validator(mode="wrap")``: pydantic's validation of ``data`` and the checks
    across its entries (``checks_across``, on the input as given), reported together in one pass;
    as field validators pydantic would skip the checks while any entry is invalid."""
    errors = ErrorCollector()
    _ok, result = errors.run(handler, data)
    if isinstance(data, dict):
        for loc, message in checks_across(data):
            errors.add(loc, message)
    errors.raise_if_any(title)
    if result is None:  # pragma: no cover - raise_if_any raised
        raise AssertionError("validation failed without an error")
    return result


def format_path(segments: Iterable[str | int]) -> str:
    """``workflows[0].steps[1].timeout``: keys joined by dots, list indexes in brackets."""
    path = ""
    for seg in segments:
        path += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if path else seg)
    return path


class _Loader(yaml.SafeLoader):
    """SafeLoader that records duplicate keys (PyYAML keeps the last one silently) and goes on, so
    that they are reported together with the file's other mistakes; merge keys (``<<: *anchor``)
    are not duplicates."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[Problem] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, typing.Hashable):
                if key in seen:
                    mark = key_node.start_mark
                    what = f"found duplicate key {key!r} (column {mark.column + 1})"
                    self.duplicates.append(
                        ("", f"invalid YAML: while constructing a mapping: {what}", mark.line + 1)
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


@dataclass(frozen=True, slots=True)
class YamlDocument:
    """A parsed file: its data (``{}`` for an empty file) and the node tree that knows the lines."""

    source: str
    data: Any
    root: yaml.Node | None
    duplicates: tuple[Problem, ...] = ()
    """Keys given twice in one mapping: ``ConfigFormat.validate`` reports them with the rest."""

    def line_of(self, loc: Sequence[str | int], written: Sequence[str | int] | None = None) -> int | None:
        """1-based line of the deepest node on the path (the whole file's first line if none).

        ``written`` is a second spelling of the same path, tried at each step as well (a duration
        can be given as ``group_wait`` or ``group_wait_ms``). A scalar value reports its key's line.
        """
        node = self.root
        line = node.start_mark.line + 1 if node is not None else None
        for seg, alt in zip(loc, loc if written is None else written, strict=True):
            nxt: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode):
                # The first spelling wins; of keys given twice, the last (the one YAML keeps).
                found = [
                    (key_node, value_node)
                    for name in dict.fromkeys((str(seg), str(alt)))
                    for key_node, value_node in reversed(node.value)
                    if isinstance(key_node, yaml.ScalarNode) and key_node.value == name
                ]
                if found:
                    key_node, value_node = found[0]
                    nxt = value_node if isinstance(value_node, yaml.CollectionNode) else key_node
            elif isinstance(node, yaml.SequenceNode) and isinstance(seg, int) and 0 <= seg < len(node.value):
                nxt = node.value[seg]
            if nxt is None:
                break
            node = nxt
            line = node.start_mark.line + 1
        return line


@dataclass(frozen=True, slots=True)
class Place:
    """Where a pydantic error location points, in the file's terms."""

    path: str
    segments: tuple[str | int, ...]  # as written in YAML
    field: str | None  # the Python name of the field at the last segment, if it is one
    parent: type[BaseModel] | None  # the model that holds the last segment
    expected: type[BaseModel] | None  # the model the value at the path should be, if any

    @property
    def last(self) -> str | int | None:
        return self.segments[-1] if self.segments else None


KeyOf = Callable[[type[BaseModel], str], str | None]
"""``key_of(model, field_name)``: the field's key in YAML, or None if it is not meant to be written."""

Explain = Callable[[ErrorDetails, Place], str | None]
"""A file's own message for an error, or None for the generic one."""


def alias_or_name(model: type[BaseModel], name: str) -> str:
    """The default spelling: the field's alias if it has one, else its name."""
    return model.model_fields[name].alias or name


def _model_of(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(model class inside the annotation, whether it is a list of them)."""
    is_list = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin is list:
            annotation = typing.get_args(annotation)[0]
            is_list = True
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0]
        else:
            break
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, is_list
    return None, is_list


@dataclass(frozen=True, slots=True)
class ConfigFormat(Generic[M]):
    """One kind of configuration file: its root model, its error class and how it is spelled.

    ``what`` names the file in messages ("rules file"); ``key_of`` and ``explain`` are described
    at ``KeyOf`` and ``Explain``.
    """

    root: type[M]
    error: type[ConfigFileError]
    what: str
    key_of: KeyOf = alias_or_name
    explain: Explain | None = None

    def unreadable(self, source: str, exc: OSError | UnicodeDecodeError) -> ConfigFileError:
        """The error for a file that cannot be read as text (reading it is the caller's I/O:
        stormwatch.loaders), naming the kind of file and why."""
        if isinstance(exc, UnicodeDecodeError):
            return self.error(source, [("", f"the {self.what} is not UTF-8 text: {exc}", None)])
        return self.error(source, [("", f"cannot read the {self.what}: {exc.strerror or exc}", None)])

    def parse(self, text: str, source: str) -> YamlDocument:
        """Parse YAML text; syntax errors are reported with line and column (duplicate keys are
        kept in the document and reported by ``validate``, with every other problem)."""
        try:
            loader = _Loader(text)
        except yaml.reader.ReaderError as exc:  # checked before parsing: a control character
            at = exc.position
            column = at - (text.rfind("\n", 0, at) + 1) + 1
            what = f"invalid YAML: {exc.reason} #x{exc.character:04x} (column {column})"
            raise self.error(source, [("", what, text.count("\n", 0, at) + 1)]) from None
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            what = ": ".join(p for p in (exc.context, exc.problem) if p)
            if mark is not None:
                what += f" (column {mark.column + 1})"
            line = mark.line + 1 if mark is not None else None
            raise self.error(source, [("", f"invalid YAML: {what}", line)]) from None
        except yaml.YAMLError as exc:
            raise self.error(source, [("", f"invalid YAML: {exc}", None)]) from None
        finally:
            loader.dispose()
        return YamlDocument(source, {} if data is None else data, root, tuple(loader.duplicates))

    def validate(self, doc: YamlDocument) -> M:
        """The root model from the document, or the error listing every problem in line order
        (duplicate keys included)."""
        problems = list(doc.duplicates)
        try:
            model = self.root.model_validate(doc.data)
        except ValidationError as exc:
            for error in exc.errors():
                loc = error_loc(error)
                place = self.locate(loc)
                problems.append((place.path, self.message(error, place), doc.line_of(place.segments, loc)))
        if problems:
            raise self.error(doc.source, _by_line(problems)) from None
        return model

    def problems(self, doc: YamlDocument, located: Iterable[tuple[Loc, str]]) -> list[Problem]:
        """Problems found after validation (``(loc, message)``, loc in YAML keys), in line order."""
        out = []
        for loc, message in located:
            place = self.locate(loc)
            out.append((place.path, message, doc.line_of(place.segments, loc)))
        return _by_line(out)

    def keys(self, model: type[BaseModel]) -> list[str]:
        """The keys ``model`` accepts in YAML, sorted."""
        return sorted(k for n in model.model_fields if (k := self.key_of(model, n)) is not None)

    def locate(self, loc: Loc) -> Place:
        """Walk an error location through the models: its YAML path, field, holder and expected model."""
        model: type[BaseModel] | None = self.root
        pending_list_model: type[BaseModel] | None = None
        parent: type[BaseModel] | None = self.root
        field: str | None = None
        segments: list[str | int] = []
        for seg in loc:
            if isinstance(seg, int):
                segments.append(seg)
                model, pending_list_model = pending_list_model, None
                parent, field = model, None
                continue
            parent, field = model, None
            name = seg
            if model is not None:
                field = next((n for n, f in model.model_fields.items() if (f.alias or n) == seg), None)
            if model is not None and field is not None:
                name = self.key_of(model, field) or seg
                sub, is_list = _model_of(model.model_fields[field].annotation)
                model, pending_list_model = (None, sub) if is_list else (sub, None)
            else:
                model = pending_list_model = None
            segments.append(name)
        return Place(format_path(segments), tuple(segments), field, parent, model)

    def message(self, error: ErrorDetails, place: Place) -> str:
        """What is wrong and what is allowed, in the file's terms."""
        if self.explain is not None and (special := self.explain(error, place)) is not None:
            return special
        kind = error["type"]
        value = error.get("input")
        ctx = error.get("ctx") or {}
        if kind == "extra_forbidden":
            allowed = ", ".join(self.keys(place.parent)) if place.parent is not None else "none"
            return f"unknown key {place.last!r}; allowed keys: {allowed}"
        if kind == "missing":
            return f"missing required key {place.last!r}"
        if kind in ("value_error", "assertion_error") and "error" in ctx:
            return str(ctx["error"])
        if kind in ("model_type", "model_attributes_type", "dict_type"):
            model = place.expected
            keys = f" with keys: {', '.join(self.keys(model))}" if model is not None else ""
            return f"expected a mapping{keys}; got {describe(value)}"
        if kind == "list_type":
            return f"expected a list; got {describe(value)}"
        if kind == "string_type":
            return f"expected a string; got {describe(value)}"
        if kind in ("int_type", "int_parsing", "int_from_float"):
            return f"expected a whole number; got {describe(value)}"
        if kind in ("float_type", "float_parsing"):
            return f"expected a number; got {describe(value)}"
        if kind in ("bool_type", "bool_parsing"):
            return f"expected true or false; got {describe(value)}"
        if kind in ("enum", "literal_error"):
            return f"expected one of {ctx.get('expected')}; got {describe(value)}"
        if kind == "too_short":
            return f"needs at least {ctx.get('min_length')} item(s); got none"
        bound = bound_of(error)
        if bound is not None:
            _constraint, words, limit = bound
            return f"must be {words} {limit}; got {describe(value)}"
        return str(error["msg"])


def _by_line(problems: list[Problem]) -> list[Problem]:
    """Sorted by line; stable, so problems on one line keep pydantic's order."""
    return sorted(problems, key=lambda p: p[2] or 0)
