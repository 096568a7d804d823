"""The DORA report as a 2×2 PNG (matplotlib, imported when drawing): deploys per day, lead time per change,
change failures, time to restore."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stockops.core.humanize import HOUR, MINUTE, human_duration
from stockops.core.humanize import number as _number
from stockops.core.humanize import plural as _plural

COLOURS = {"ok": "#2e7d32", "failed": "#c62828", "rolled_back": "#ef6c00", "line": "#555555", "none": "#9e9e9e"}


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color=COLOURS["none"])
    ax.set_xticks([])
    ax.set_yticks([])


def _title(name: str, value: str, grade: str | None) -> str:
    return f"{name}: {value}" + (f"  ({grade})" if grade else "")


def _median(stats: dict) -> str:
    return "—" if stats["median_s"] is None else human_duration(stats["median_s"]) + " median"


def _one_hour_line(ax, unit: float) -> None:
    ax.axhline(HOUR / unit, color=COLOURS["line"], linestyle="--", linewidth=1, label="elite: < 1 h")


def _draw_deploys(ax, freq: dict) -> None:
    ax.set_title(_title("Deployment frequency", f"{_number(freq['per_day'])} / day", freq["level"]))
    daily = freq["daily"]
    if not freq["events"]:
        return _empty(ax, "no promotion or rollback deploys in the period")
    x = list(range(len(daily)))
    bottom = [0] * len(daily)
    for key, label in (("promoted", "promotion"), ("rolled_back", "rollback"), ("failed", "failed deploy")):
        heights = [day[key] for day in daily]
        ax.bar(x, heights, bottom=bottom, color=COLOURS["ok" if key == "promoted" else key], label=label)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    rollback_days = [i for i, day in enumerate(daily) if day["rolled_back"]]
    ax.scatter(rollback_days, [bottom[i] + 0.15 for i in rollback_days], marker="v", color=COLOURS["rolled_back"],
               zorder=3)
    step = max(1, len(daily) // 10)
    ax.set_xticks(x[::step], [day["date"][5:] for day in daily][::step], rotation=45, ha="right")
    ax.set_ylabel("deploys per day")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="upper left", fontsize="small")


def _draw_lead_time(ax, lead: dict) -> None:
    ax.set_title(_title("Lead time (snapshot → answering)", _median(lead), lead["level"]))
    events = lead["events"]
    if not events:
        return _empty(ax, "no promotion with a known snapshot in the period")
    minutes = [e["seconds"] / MINUTE for e in events]
    x = list(range(len(events)))
    ax.scatter(x, minutes, color=COLOURS["ok"], zorder=3)
    for i, e in enumerate(events):
        ax.annotate(human_duration(e["seconds"]), (i, minutes[i]), textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize="small")
    _one_hour_line(ax, MINUTE)
    ax.set_yscale("log")
    ax.set_ylim(min([*minutes, HOUR / MINUTE]) / 2, max([*minutes, HOUR / MINUTE]) * 2.5)
    ax.set_xticks(x, [f"v{e['version']}" for e in events])
    ax.set_xlim(-0.5, len(events) - 0.5)
    ax.set_ylabel("minutes (log scale)")
    ax.legend(loc="upper left", fontsize="small")


def _draw_failures(ax, cfr: dict) -> None:
    value = "—" if cfr["rate"] is None else f"{cfr['rate'] * 100:.0f} % ({cfr['failed']} of {cfr['changes']})"
    ax.set_title(_title("Change failure rate", value, cfr["level"]))
    events = cfr["events"]
    if not events:
        return _empty(ax, "no promotion attempts in the period")
    styles = {"ok": ("ok", "ok"), "health_check_failed": ("failed", "failed health check"),
              "rolled_back": ("rolled_back", "rolled back later")}
    shown = set()
    for i, e in enumerate(events):
        colour, label = styles[e["status"]]
        ax.bar(i, 1, color=COLOURS[colour], label=None if label in shown else label)
        shown.add(label)
    ax.set_xticks(range(len(events)), [f"v{e['version']}\n{e['at'][5:10]}" for e in events])
    ax.set_yticks([])
    ax.set_ylim(0, 1.4)
    ax.set_xlabel("promotion attempts, in order")
    ax.legend(loc="upper right", fontsize="small", ncols=3)


def _draw_restores(ax, ttr: dict) -> None:
    ax.set_title(_title("Time to restore (rollback request → answering)", _median(ttr), ttr["level"]))
    events = ttr["events"]
    if not events:
        text = "no rollbacks in the period"
        if ttr["no_outage"]:
            text += f"\n({_plural(len(ttr['no_outage']), 'failed deploy')}: no outage, the old version kept serving)"
        return _empty(ax, text)
    x = list(range(len(events)))
    minutes = [(e["seconds"] or 0) / MINUTE for e in events]
    ax.bar(x, minutes, width=0.6, color=[COLOURS["ok"] if e["restored"] else COLOURS["none"] for e in events])
    for i, e in enumerate(events):
        text = human_duration(e["seconds"]) if e["restored"] else "not restored"
        ax.annotate(text, (i, minutes[i]), textcoords="offset points", xytext=(0, 4), ha="center", fontsize="small",
                    color="black" if e["restored"] else COLOURS["failed"])
    _one_hour_line(ax, MINUTE)
    ax.set_ylim(0, max([*minutes, HOUR / MINUTE]) * 1.2)
    ax.set_xlim(-0.5, max(len(events), 3) - 0.5)  # a lone bar stays bar-sized
    ax.set_xticks(x, [f"v{e['from_version']}→v{e['to_version']}" for e in events])
    ax.set_ylabel("minutes")
    if ttr["no_outage"]:
        ax.set_xlabel(f"{_plural(len(ttr['no_outage']), 'failed deploy')} not counted: no outage")
    ax.legend(loc="upper left", fontsize="small")


def draw_chart(result: dict[str, Any], path: Path | str) -> Path:
    """The report as a 2×2 PNG: deploys per day, lead time per change, change failures, time to restore."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(13, 8.5), layout="constrained")
    FigureCanvasAgg(figure)  # Agg, without pyplot's global state
    (deploys_ax, lead_ax), (failures_ax, restores_ax) = figure.subplots(2, 2)
    _draw_deploys(deploys_ax, result["deployment_frequency"])
    _draw_lead_time(lead_ax, result["lead_time"])
    _draw_failures(failures_ax, result["change_failure_rate"])
    _draw_restores(restores_ax, result["time_to_restore"])
    period = result["period"]
    figure.suptitle(f"DORA measures, {period['start'][:16].replace('T', ' ')} → "
                    f"{period['end'][:16].replace('T', ' ')} UTC "
                    f"({_number(period['days'])} days)", fontsize="large")
    figure.savefig(path, dpi=110)
    return path
