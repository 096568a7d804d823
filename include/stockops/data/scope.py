"""Which rows of a fetched frame validation judges, and why: the rows after the published snapshot (with the
published history as context), or every row when the source restated history (described for the audit log)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from stockops.data.sources import COLUMNS


@dataclass(frozen=True)
class Scope:
    """Which rows were judged, and why: ``first`` (no snapshot yet), ``incremental`` (the rows after
    the published snapshot), ``unchanged`` (no new row: the newest is re-checked) or ``restated``."""

    mode: str
    judged: int
    description: str
    restatement: dict | None = None


def _same_values(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    if len(a) != len(b) or list(a.columns) != list(b.columns):
        return False
    for column in a.columns:
        left, right = a[column].to_numpy(), b[column].to_numpy()
        if column == "Date":
            if not np.array_equal(left.astype("datetime64[ns]"), right.astype("datetime64[ns]")):
                return False
        elif not np.array_equal(left.astype("float64"), right.astype("float64"), equal_nan=True):
            return False
    return True


def judged_rows(frame: pd.DataFrame, published: pd.DataFrame | None) -> tuple[np.ndarray, Scope]:
    """The rows to judge against the published snapshot, and the scope that says why."""
    n = len(frame)
    everything: np.ndarray = np.ones(n, dtype=bool)
    if published is None or not len(published):
        return everything, Scope("first", n, f"first snapshot: all {n} rows judged")
    if "Date" not in frame.columns or not pd.api.types.is_datetime64_any_dtype(frame["Date"]) or not all(
            pd.api.types.is_numeric_dtype(frame[c]) for c in COLUMNS[1:] if c in frame.columns):
        return everything, Scope("restated", n, f"the data does not have the published layout: all {n} rows "
                                                "judged", {"reason": "columns or types differ from the snapshot"})
    last = published["Date"].iloc[-1]
    history = frame[frame["Date"] <= last].reset_index(drop=True)
    # A backfill of an older day serves a prefix of the snapshot: compare with the same days only.
    known = published[published["Date"] <= frame["Date"].max()].reset_index(drop=True) if n else published
    try:
        unchanged = _same_values(history.reindex(columns=list(published.columns)), known)
    except (TypeError, ValueError):
        unchanged = False
    if not unchanged:
        restatement = describe_restatement(frame, published)
        return everything, Scope("restated", n, f"history differs from the published snapshot ({restatement['summary']}): "
                                                f"all {n} rows judged", restatement)
    new = (frame["Date"] > last).to_numpy()
    if new.any():
        return new, Scope("incremental", int(new.sum()),
                          f"{int(new.sum())} new row(s) after {_date_text(last)}, against the published history")
    newest: np.ndarray = np.zeros(n, dtype=bool)
    newest[-1:] = True
    return newest, Scope("unchanged", int(newest.sum()),
                         f"no row after the published {_date_text(last)}: the newest row is re-checked")


def describe_restatement(frame: pd.DataFrame, published: pd.DataFrame) -> dict:
    """What changed in history: rows added, removed and revised, and how much the closes moved."""
    span_end = min(frame["Date"].max(), published["Date"].iloc[-1])
    old = published[published["Date"] <= span_end].set_index("Date")
    new = frame[frame["Date"] <= span_end].drop_duplicates("Date").set_index("Date")
    common = old.index.intersection(new.index)
    columns = [c for c in COLUMNS[1:] if c in old.columns and c in new.columns]
    a = old.loc[common, columns].astype("float64")
    b = new.loc[common, columns].astype("float64")
    changed = ~np.isclose(a.to_numpy(), b.to_numpy(), rtol=1e-9, atol=0, equal_nan=True).all(axis=1)
    revised = common[changed]
    ratio = (b.loc[revised, "Close"] / a.loc[revised, "Close"]) if len(revised) else pd.Series(dtype=float)
    info = {
        "rows_revised": int(changed.sum()),
        "rows_added": int(len(new.index.difference(old.index))),
        "rows_removed": int(len(old.index.difference(new.index))),
        "first_revised": _date_text(revised.min()) if len(revised) else None,
        "last_revised": _date_text(revised.max()) if len(revised) else None,
        "close_ratio_min": round(float(ratio.min()), 6) if len(ratio) else None,
        "close_ratio_max": round(float(ratio.max()), 6) if len(ratio) else None,
    }
    parts = [f"{info['rows_revised']} revised" + (f" ({info['first_revised']}..{info['last_revised']}, closes x"
                                                   f"{info['close_ratio_min']}..{info['close_ratio_max']})"
                                                   if info["rows_revised"] else ""),
             f"{info['rows_added']} added", f"{info['rows_removed']} removed"]
    info["summary"] = "rows: " + ", ".join(parts)
    return info



def _date_text(value: Any) -> str:
    try:
        return str(pd.Timestamp(value).date())
    except (ValueError, TypeError):
        return str(value)
