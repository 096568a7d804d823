"""``.env.example``'s settings and the README's settings table, generated from the declarations
(:class:`stockops.core.environment.Environment`): ``make settings-docs`` (``--write``); ``tests/unit/core/test_settings.py``
fails when they differ."""

from __future__ import annotations

import sys

from stockops.core.environment import GROUPS, REPO_ROOT, Environment

ENV_EXAMPLE = REPO_ROOT / ".env.example"
README = REPO_ROOT / "README.md"
ENV_EXAMPLE_MARKERS = ("# ---- settings: generated from include/stockops/core/environment.py by `make settings-docs` "
                       "(edit there) ----", "# ---- end of the generated settings ----")
README_MARKERS = ("<!-- settings: generated from include/stockops/core/environment.py by `make settings-docs` "
                  "(edit there) -->", "<!-- end of the generated settings -->")


def declared_by_group() -> list[tuple[str, list[tuple[str, str, str]]]]:
    """[(group, [(variable, default as written, description), ...]), ...] in :data:`GROUPS` order."""
    rows: dict[str, list[tuple[str, str, str]]] = {group: [] for group in GROUPS}
    for name, variable, field in Environment.declarations():
        group = (field.json_schema_extra or {}).get("group")
        if group not in rows:
            raise ValueError(f"{variable} is declared in group {group!r}, which GROUPS does not list")
        rows[str(group)].append((variable, Environment.default_text(name), field.description or ""))
    return [(group, entries) for group, entries in rows.items() if entries]


def env_example_block() -> str:
    """The settings part of ``.env.example``: every declaration, commented out at its default (uncomment to change)."""
    lines = [ENV_EXAMPLE_MARKERS[0]]
    for group, entries in declared_by_group():
        lines.append(f"# == {group} ==")
        for variable, default, description in entries:
            lines += [f"#   {description}", f"# {variable}={default}"]
    lines.append(ENV_EXAMPLE_MARKERS[1])
    return "\n".join(lines) + "\n"


def markdown_block() -> str:
    """The settings table of the README's Configuration section."""
    lines = [README_MARKERS[0], "", "| group | variable | default | meaning |", "|---|---|---|---|"]
    for group, entries in declared_by_group():
        for i, (variable, default, description) in enumerate(entries):
            shown = f"`{default}`" if default else "(unset)"
            meaning = description.replace("|", "/").replace("<", "&lt;").replace(">", "&gt;")
            lines.append(f"| {group if i == 0 else ''} | `{variable}` | {shown} | {meaning} |")
    lines += ["", README_MARKERS[1]]
    return "\n".join(lines) + "\n"


def with_block(text: str, markers: tuple[str, str], block: str) -> str:
    """``text`` with the part between ``markers`` (both included) replaced by ``block``."""
    start, end = text.find(markers[0]), text.find(markers[1])
    if start < 0 or end < start:
        raise ValueError(f"the markers {markers[0]!r} ... {markers[1]!r} are missing")
    end = text.index("\n", end) + 1 if "\n" in text[end:] else len(text)
    return text[:start] + block + text[end:]


def main(argv: list[str] | None = None) -> int:
    """``python -m stockops.core.settings_docs --env-example | --markdown | --write``: print a generated part, or write
    both into ``.env.example`` and ``README.md``."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--env-example"]:
        print(env_example_block(), end="")
    elif args == ["--markdown"]:
        print(markdown_block(), end="")
    elif args == ["--write"]:
        for path, markers, block in ((ENV_EXAMPLE, ENV_EXAMPLE_MARKERS, env_example_block()),
                                     (README, README_MARKERS, markdown_block())):
            path.write_text(with_block(path.read_text(), markers, block))
            print(f"wrote the settings into {path}")
    else:
        print(main.__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
