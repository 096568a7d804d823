"""What the benches share about their results files."""

from __future__ import annotations


def merged_rows(previous: list[dict], rows: list[dict], key: str = "tickers") -> list[dict]:
    """This run's rows over an earlier run's, matched by ``key``: the sizes (and ways) this run did not measure are
    kept, a row it measured again keeps the fields it did not."""
    kept = {r[key]: r for r in previous}
    for row in rows:
        kept[row[key]] = {**kept.get(row[key], {}), **row}
    return [kept[k] for k in sorted(kept)]
