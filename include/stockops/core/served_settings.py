"""The settings the served bento reads, declared once, and how every stockops setting is declared and read.

Each setting is one field: its environment variable (``STOCKOPS_`` + the field's name upper-cased, or the
field's ``validation_alias``), its default and a one-line description (:func:`declare`). :class:`Declared` reads
them the way stockops always has: a variable's value is stripped, and an empty one means the default; a value
that does not parse names its variable (``STOCKOPS_SERVE_PORT='x' is not an integer``).

:class:`ServedSettings` holds the variables that ``bento/service.py`` reads. The platform's own settings
(``stockops.core.environment.Environment``) extend it, so the platform and the bento read one declaration of each.
This module imports nothing of stockops (standard library, pydantic and pydantic-settings only): a bento built
from a model carries a copy of it (:func:`copy_to`, next to the portable model core), so it serves where only
the model's own code is importable. It lives in ``stockops.core``, the lowest layer, because the platform's
settings build on it; the portable model core must not import anything of stockops, and does not need it.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Self

from pydantic import Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

PREFIX = "STOCKOPS_"
# The default watchlist: the 18 real daily series shipped in include/data/prices/ (QQQ, an index
# fund, is the market reference).
WATCHLIST = ("GOOG", "MSFT", "IBM", "INTC", "CSCO", "ORCL", "JPM", "BAC", "XOM", "CVX", "KO", "PG", "JNJ", "WMT",
             "PFE", "GE", "T", "QQQ")
# A ticker names folders and Airflow Assets: letters, digits and . - ^ = only (BRK-B, ^GSPC, EURUSD=X).
TICKER_PATTERN = re.compile(r"^[A-Z0-9^][A-Z0-9.\-^=]{0,14}$")
# What a bento answers by default: loopback only (the compose file adds the serving container's name).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# The environment the next read sees: os.environ unless a caller passes another mapping (Declared.from_environ).
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("stockops_environ", default=None)


def declare(default: Any, description: str, group: str, variable: str | None = None) -> Any:
    """One setting: its default, a one-line description and the documentation group it is listed under; read from
    ``variable`` when given (a variable outside the ``STOCKOPS_`` prefix), else from ``STOCKOPS_<NAME>``."""
    return Field(default, description=description, json_schema_extra={"group": group}, validation_alias=variable)


def split_symbols(raw: str) -> tuple[str, ...]:
    """``"goog, msft ko"`` -> ``("GOOG", "MSFT", "KO")``: comma or space separated, upper-cased, in order."""
    return tuple(symbol.strip().upper() for symbol in raw.replace(" ", ",").split(",") if symbol.strip())


def env_name(field_name: str, field: FieldInfo) -> str:
    """The environment variable a field is read from."""
    alias = field.validation_alias
    return alias if isinstance(alias, str) else PREFIX + field_name.upper()


class _Variables(PydanticBaseSettingsSource):
    """The environment as stockops reads it: exact variable names, values stripped, an empty value no value."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]):
        super().__init__(settings_cls)
        self.environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        value = self.environ.get(env_name(field_name, field), "").strip()
        return value or None, field_name, False

    def __call__(self) -> dict[str, Any]:
        found = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                found[key] = value
        return found


class Declared(BaseSettings):
    """Settings read from environment variables; see :func:`declare` and :meth:`read`."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", validate_default=True, validate_by_name=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        # no .env file and no secrets folder: the process environment (or the mapping given) only
        environ = _ENVIRON.get()
        return init_settings, _Variables(settings_cls, os.environ if environ is None else environ)

    @classmethod
    def read(cls, on_invalid: Callable[[str], object] | None = None, **given: Any) -> Self:
        """The settings from the environment now (``given`` fields win over it).

        A value that does not parse raises ``ValueError`` naming the variable, or, with ``on_invalid``, is
        reported to it and replaced by the default (the bento logs a warning and serves on).
        """
        try:
            return cls(**given)
        except ValidationError as exc:
            problems = {str(e["loc"][0]) if e["loc"] else "": cls.problem(e) for e in exc.errors()}
            if on_invalid is None:
                raise ValueError("; ".join(problems.values())) from exc
        for problem in problems.values():
            on_invalid(f"{problem}: using the default")
        defaults = {name: cls.model_fields[name].default for name in problems if name in cls.model_fields}
        return cls.read(None, **{**given, **defaults})

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], on_invalid: Callable[[str], object] | None = None,
                     **given: Any) -> Self:
        """:meth:`read` from ``environ`` instead (``{}``: the defaults); ``os.environ`` is not read."""
        token = _ENVIRON.set(environ)
        try:
            return cls.read(on_invalid, **given)
        finally:
            _ENVIRON.reset(token)

    @classmethod
    def problem(cls, error: Any) -> str:
        """One pydantic error as stockops words it: the variable, its value and what is wrong."""
        name = str(error["loc"][0]) if error["loc"] else ""
        field = cls.model_fields.get(name)
        variable = env_name(name, field) if field is not None else name
        kind = str(error["type"])
        if kind.startswith("int_"):
            return f"{variable}={error['input']!r} is not an integer"
        if kind.startswith("float_"):
            return f"{variable}={error['input']!r} is not a number"
        return f"{variable}={error['input']!r}: {error['msg']}"

    @classmethod
    def declarations(cls) -> Iterator[tuple[str, str, FieldInfo]]:
        """(field name, environment variable, field) of every setting, in declaration order."""
        for name, field in cls.model_fields.items():
            yield name, env_name(name, field), field

    @classmethod
    def default_text(cls, field_name: str) -> str:
        """A field's default as it is written in the environment (``""``: none, or derived)."""
        return as_text(cls.model_fields[field_name].default)


def as_text(value: Any) -> str:
    """A setting's value as an environment variable holds it."""
    if value is None:
        return ""
    if isinstance(value, tuple):
        return ",".join(as_text(v) for v in value)
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    if isinstance(value, Path) and not value.is_absolute():
        return f"./{value.as_posix()}"
    return str(value)


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


SERVING = "serving"
WATCHLIST_GROUP = "watchlist, source"
VALIDATION = "validation"
HOME = "home, ports"
BENTO = "set by the deploy for each bento (not by hand)"


class ServedSettings(Declared):
    """The variables ``bento/service.py`` reads (through this class: the bento has no other stockops settings)."""

    home: Path = declare(Path(".stockops"), "Where the platform keeps everything it writes (data lake, Airflow home, "
                         "MLflow, bentos, reports); relative to the working directory", HOME)
    state_db: str = declare("", "The database of the platform's records and pointers, a SQLAlchemy URL (unset: SQLite "
                            "at <home>/state.db; distributed: postgresql+psycopg2://...)", HOME)
    blob_url: str = declare("", "Where the platform's blobs (snapshots, evidence, reports, bentos) live: a folder or "
                            "s3://bucket/prefix (unset: the home itself; S3 reads AWS_ENDPOINT_URL and the AWS_* keys)",
                            HOME)
    tickers: tuple[str, ...] = declare(WATCHLIST, "The watchlist: symbols, comma or space separated (default: the "
                                       "18 shipped series; the bento: the model's watchlist when unset)",
                                       WATCHLIST_GROUP)
    market: str | None = declare("QQQ", "The market reference whose daily return every ticker's model input carries "
                                 "(none when it is not in the watchlist)", WATCHLIST_GROUP)
    max_staleness_sessions: int = declare(5, "Validation refuses data more than this many NYSE sessions old; the "
                                          "bento answers 409 for a snapshot published this many weekdays ago",
                                          VALIDATION)
    allowed_hosts: tuple[str, ...] = declare(LOOPBACK_HOSTS, "Host headers the proxy and the bento answer, comma "
                                             "separated (DNS-rebinding guard; the port is not compared)", SERVING)
    log_max_bytes: int = declare(10 * 1024 * 1024, "Size cap of each serving log file and of the prediction log "
                                 "(3 rotated copies kept)", SERVING)
    prediction_log: Path | None = declare(None, "The bento's served-prediction log (unset: "
                                          "<home>/serving/predictions.jsonl when STOCKOPS_HOME is set)", BENTO)
    bento_log: Path | None = declare(None, "The bento's rotating log file (unset: "
                                     "<home>/serving/logs/bento-<pid>.log)", BENTO)

    @field_validator("tickers", mode="before")
    @classmethod
    def _symbols(cls, value: Any) -> Any:
        return split_symbols(value) if isinstance(value, str) else value

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: Any) -> Any:
        return tuple(h.strip() for h in value.split(",") if h.strip()) if isinstance(value, str) else value

    @field_validator("market", mode="before")
    @classmethod
    def _market(cls, value: Any) -> Any:
        return _upper(value)

    @field_validator("home", mode="after")
    @classmethod
    def _home(cls, value: Path) -> Path:
        return value.expanduser().resolve()


def copy_to(code: Path) -> Path:
    """``code/stockops/core/served_settings.py`` (this module, under an empty ``stockops.core`` package), for a
    bento's model: the bento imports it from there where stockops is not installed. Returns ``code``."""
    target = code / "stockops" / "core"
    target.mkdir(parents=True, exist_ok=True)
    for package in (code / "stockops", target):
        if not (package / "__init__.py").exists():
            (package / "__init__.py").write_text("")
    shutil.copy2(Path(__file__), target / Path(__file__).name)
    return code
