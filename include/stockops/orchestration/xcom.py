"""The one adapter between the typed steps and Airflow's XComs: :func:`xcom_step`.

DAG files wrap each step with it (through :func:`stockops.orchestration.wiring.step_tasks`), so the step
receives contracts (:mod:`stockops.contracts`) and returns one while Airflow stores JSON; external yes/no
values (params, conf) become bools here, once. A step that takes ``settings`` gets them here, read from the
environment once per task: the steps themselves never read the environment, so tests pass
:func:`stockops.core.settings.make_settings`. Imports no Airflow and nothing heavy.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from stockops.contracts import Contract, ContractError

__all__ = ["parse_bool", "xcom_step"]


def parse_bool(value: Any, name: str = "value") -> bool:
    """An external yes/no (an Airflow param, a conf value, an environment variable) as a bool, once, at the boundary."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise ContractError(f"{name}: expected true or false, got {value!r}")


F = TypeVar("F", bound=Callable[..., Any])


def _argument(tp: Any, value: Any, name: str) -> Any:
    """A task argument as the step declares it: contracts parsed from XCom dicts, ``bool``/``int`` from rendered text."""
    optional = get_origin(tp) in (typing.Union, types.UnionType) and type(None) in get_args(tp)
    if value is None and optional:
        return None
    inner = [a for a in get_args(tp) if a is not type(None)] if optional else [tp]
    kind = inner[0] if len(inner) == 1 else None
    if isinstance(kind, type) and issubclass(kind, Contract):
        return kind.from_xcom(value)
    if get_origin(kind) is list and get_args(kind) and isinstance(get_args(kind)[0], type) \
            and issubclass(get_args(kind)[0], Contract):
        return [get_args(kind)[0].from_xcom(v) for v in value]
    if kind is bool:
        return parse_bool(value, name)
    if kind is int and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise ContractError(f"{name}: expected an integer, got {value!r}") from None
    return value


def xcom_step(step: F) -> Callable[..., Any]:
    """``step`` as an Airflow task callable: contract arguments parsed from their XCom dicts, a contract result
    (or a list of them) returned as JSON.

    The signature Airflow inspects (parameter names, defaults) is the step's own less ``settings``, which
    the adapter passes itself (:func:`stockops.core.settings.get_settings`, read when the task runs); the
    annotations it sees are not the step's, so Airflow never infers ``multiple_outputs`` from a dict-like return.
    """
    hints = get_type_hints(step)
    signature = inspect.signature(step)
    wants_settings = "settings" in signature.parameters

    @functools.wraps(step)
    def task_callable(*args: Any, **kwargs: Any) -> Any:
        if wants_settings and "settings" not in kwargs:
            from stockops.core.settings import get_settings

            kwargs["settings"] = get_settings()
        bound = signature.bind(*args, **kwargs)
        for name, value in bound.arguments.items():
            if name == "settings":
                continue
            if name in hints:
                bound.arguments[name] = _argument(hints[name], value, f"{step.__name__}({name})")
        result = step(*bound.args, **bound.kwargs)
        if isinstance(result, list):
            return [r.to_xcom() if isinstance(r, Contract) else r for r in result]
        return result.to_xcom() if isinstance(result, Contract) else result

    task_callable.__annotations__ = {}  # a fresh dict: functools.wraps shares the step's own
    if wants_settings:
        task_callable.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[p for n, p in signature.parameters.items() if n != "settings"])
    return task_callable
