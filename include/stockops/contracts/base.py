"""The base of every contract: a frozen dataclass that pydantic checks and serialises from its declared types.

The classes stay plain frozen dataclasses (positional and keyword construction, ``dataclasses.replace``,
equality, ``__post_init__`` checks on every construction); pydantic reads their declarations through a
:class:`~pydantic.TypeAdapter` built on a class's first :meth:`Contract.from_xcom` or :meth:`Contract.to_xcom`,
so importing a contract module imports no pydantic (a DAG file's parse pays for it only where the
dag-processor has not loaded it already).

Validation is strict (``extra="forbid"``; ``"20"`` is no int, ``true`` no number, ``"true"`` no bool), except
where JSON has no other form: a nested contract is read from its dict, an enum member from its value.
A failure becomes one :class:`ContractError` naming each offending field by its path,
``Trained.features.window: expected int, got str '20'``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Self, get_args, get_origin, get_type_hints

if TYPE_CHECKING:
    from pydantic import TypeAdapter, ValidationError


class ContractError(ValueError):
    """A value does not fit its contract; the message names the field."""


@dataclasses.dataclass(frozen=True)
class Contract:
    """A frozen dataclass that crosses a task boundary as JSON."""

    # read by pydantic for a stdlib dataclass (as `with_config` would set it), inherited by every contract
    __pydantic_config__: ClassVar[dict[str, Any]] = {"strict": True, "extra": "forbid"}

    def to_xcom(self) -> dict[str, Any]:
        """Plain JSON: nested contracts as dicts, enums as their values, tuples as lists, every field by its name.

        Not validated again (no warning for a tuple built into a list field, say): the reader's ``from_xcom`` is.
        """
        data: dict[str, Any] = _adapter(type(self)).dump_python(self, mode="json", warnings=False)
        return data

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any]) -> Self:
        """The contract from :meth:`to_xcom`'s dict; :class:`ContractError` names a missing, unknown or ill-typed field."""
        if isinstance(data, cls):
            return data
        if not isinstance(data, Mapping):
            raise ContractError(f"{cls.__name__}: expected a {cls.__name__} (a dict), got {_got(data)}")
        from pydantic import ValidationError

        try:
            value: Self = _adapter(cls).validate_python(dict(data))
        except ValidationError as exc:
            raise _contract_error(cls, exc) from None
        return value

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        """Strict mode takes only an instance for a dataclass: a nested contract may come as its dict, too."""
        schema = handler(source)
        return {**schema, "strict": False} if schema.get("type") == "dataclass" else schema


def enum_by_value(source: Any, handler: Any) -> Any:
    """The body of an enum's ``__get_pydantic_core_schema__``: in a contract it is read from its value (strict
    mode wants a member, which JSON cannot hold)."""
    return {**handler(source), "strict": False}


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


_ADAPTERS: dict[type, TypeAdapter[Any]] = {}


def _adapter(cls: type) -> TypeAdapter[Any]:
    """``cls``'s pydantic adapter, built (and pydantic imported) on first use."""
    adapter = _ADAPTERS.get(cls)
    if adapter is None:
        from pydantic import TypeAdapter

        adapter = _ADAPTERS[cls] = TypeAdapter(cls)
    return adapter


# ---- a pydantic ValidationError as a ContractError that names each field by its path ------------------------
_EXPECTED = {"int_type": "int", "float_type": "float", "bool_type": "bool", "string_type": "str",
             "list_type": "a list", "dict_type": "a dict"}
_UNKNOWN = ("unexpected_keyword_argument", "extra_forbidden")
_SHOWN = 5  # problems spelt out in one message


def _got(value: Any) -> str:
    return f"{type(value).__name__} {str(value)[:80]!r}"


def _contract_error(cls: type, exc: ValidationError) -> ContractError:
    problems: list[tuple[int, str]] = []  # (0 for unknown fields: they come first, the message)
    grouped: dict[tuple[str, tuple[Any, ...]], tuple[int, list[str], Any]] = {}  # one line a dict
    for error in exc.errors(include_url=False):
        kind, loc = error["type"], error["loc"]
        if kind in _UNKNOWN or kind == "missing":
            key = ("unknown" if kind in _UNKNOWN else "missing", loc[:-1])
            if key not in grouped:
                grouped[key] = (len(problems), [], error.get("input"))
                problems.append((0 if kind in _UNKNOWN else 1, ""))
            grouped[key][1].append(str(loc[-1]))
        else:
            problems.append((1, _problem(cls, error)))
    for (kind, parent), (at, names, value) in grouped.items():
        path, owner = _where(cls, parent)
        if kind == "unknown":
            line = f"{path}: unknown field(s) {', '.join(map(repr, sorted(names)))} for {_name(owner)}"
        else:  # `value`: the dict that lacks them
            others = f", and {', '.join(map(repr, names[1:]))}" if names[1:] else ""
            line = (f"{path}.{names[0]}: missing{others} (a {_name(owner)} needs {'them' if others else 'it'}; "
                    f"got fields {sorted(value) if isinstance(value, Mapping) else value})")
        problems[at] = (problems[at][0], line)
    lines = [line for _, line in sorted(problems, key=lambda p: p[0])]
    more = len(lines) - _SHOWN
    return ContractError("; ".join(lines[:_SHOWN]) + (f"; and {more} more" if more > 0 else ""))


def _problem(cls: type, error: Any) -> str:
    kind, loc, value, ctx = error["type"], error["loc"], error.get("input"), error.get("ctx") or {}
    path, _ = _where(cls, loc)
    if kind in ("dataclass_type", "dataclass_exact_type"):
        return f"{path}: expected a {ctx.get('class_name')} (a dict), got {_got(value)}"
    if kind == "enum":
        return f"{path}: expected one of {ctx.get('expected')}, got {_got(value)}"
    if kind in _EXPECTED:
        return f"{path}: expected {_EXPECTED[kind]}, got {_got(value)}"
    if kind == "value_error" and isinstance(ctx.get("error"), ContractError):  # a __post_init__ check
        return str(ctx["error"]) if not loc else f"{path}: {ctx['error']}"
    return f"{path}: {error['msg']}, got {_got(value)}"


def _where(cls: type, loc: tuple[Any, ...]) -> tuple[str, Any]:
    """The path that pydantic's ``loc`` names in ``cls`` (``Features.snapshots.entries['GOOG'].rows``) and its type."""
    path, tp = cls.__name__, cls
    for part in loc:
        tp = _bare(tp)
        if dataclasses.is_dataclass(tp) and isinstance(part, str):
            path, tp = f"{path}.{part}", get_type_hints(tp).get(part, Any)
        elif isinstance(part, int) and get_origin(tp) in (list, tuple):
            path, tp = f"{path}[{part}]", (get_args(tp) or (Any,))[0]
        else:
            path, tp = f"{path}[{part!r}]", (get_args(tp) or (Any,))[-1]
    return path, _bare(tp)


def _bare(tp: Any) -> Any:
    """``X`` for ``X | None``."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        return next((a for a in get_args(tp) if a is not type(None)), Any)
    return tp


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))
