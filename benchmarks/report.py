"""The results as a markdown table (stdout), a JSON file (raw figures) and a picture.

Everything here reads the result dicts that run.py builds; the plot also
takes the request records, which the JSON only keeps summarised.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .load import FAILURE_KINDS, Record
from .metrics import Restart, restart_windows

__all__ = ["markdown", "plot", "write_json"]


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.0f}"


def _num(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _triple(stats: Mapping[str, Any]) -> str:
    """p50 / p99 / max in ms; a dash when nothing succeeded."""
    if not stats or not stats.get("n"):
        return "–"
    return " / ".join(_num(stats.get(k), 1) for k in ("p50_ms", "p99_ms", "max_ms"))


def _failed(counts: Mapping[str, int]) -> str:
    parts = [f"{kind} {counts[kind]}" for kind in FAILURE_KINDS if counts.get(kind)]
    return ", ".join(parts) if parts else "0"


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _signed_ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:+.0f}"


SUMMARY_COLUMNS = (
    "scenario",
    "boot s",
    "requests",
    "ok",
    *FAILURE_KINDS,
    "longest no-success ms",
    "in windows p50 / p99 / max ms",
    "outside p50 / p99 / max ms",
    "trigger → new gen ms (median / max)",
    "new generations seen",
    "zocket CPU s",
)
COLD_START_COLUMNS = (
    "scenario",
    "boot s",
    "new code live ms (median)",
    "cold start ms (median)",
    "difference ms",
    "cold start under load ms (median)",
    "difference under load ms",
)
RESTART_COLUMNS = (
    "scenario",
    "boot s",
    "#",
    "failed",
    "longest no-success ms",
    "window p50 / p99 / max ms",
    "trigger → new gen ms",
    "new gen seen",
)


def markdown(results: Mapping[str, Any]) -> str:
    """The summary, cold start, per-restart and cost tables."""
    options = results["options"]
    runs: list[dict[str, Any]] = results["scenarios"]
    title = (
        f"## Restarts under load ({options['rate']:g} requests/s on new connections, "
        f"{options['restarts']} restarts per scenario)"
    )
    out = [
        title,
        "",
        _row(SUMMARY_COLUMNS),
        _row(["---"] * len(SUMMARY_COLUMNS)),
    ]
    for run in runs:
        if run["status"] != "ok":
            blanks = [""] * (len(SUMMARY_COLUMNS) - 3)
            out.append(_row([run["scenario"], _num(run["boot_s"], 1), run["status"], *blanks]))
            continue
        s = run["summary"]
        counts = s["counts"]
        to_new = s["to_new_generation_s"]
        out.append(
            _row(
                [
                    run["scenario"],
                    _num(run["boot_s"], 1),
                    s["requests"],
                    counts["ok"],
                    *(counts[k] for k in FAILURE_KINDS),
                    _ms(s["longest_no_success_s"]),
                    _triple(s["latency_in_windows"]),
                    _triple(s["latency_outside"]),
                    f"{_ms(to_new['median'])} / {_ms(to_new['max'])}",
                    f"{s['new_generations_seen']}/{s['restarts']}",
                    _num(run.get("holder_cpu_s"), 2),
                ]
            )
        )
    cold_start = results.get("cold_start")
    if isinstance(cold_start, dict):
        out += ["", "### New code live against a cold start", ""]
        out += _cold_start_table(cold_start, runs)
    out += ["", "### Per restart", "", _row(RESTART_COLUMNS), _row(["---"] * len(RESTART_COLUMNS))]
    for run in runs:
        if run["status"] != "ok":
            continue
        for r in run["summary"]["per_restart"]:
            out.append(
                _row(
                    [
                        run["scenario"],
                        _num(run["boot_s"], 1),
                        r["number"],
                        _failed(r["counts"]),
                        _ms(r["longest_no_success_s"]),
                        _triple(r["latency"]),
                        _ms(r["to_new_generation_s"]),
                        "yes" if r["new_generation_seen"] else "**no**",
                    ]
                )
            )
    cost = results.get("cost")
    if isinstance(cost, dict):
        out += ["", "## Cost of zocket", "", *_cost_table(cost)]
    for run in runs:
        if str(run["status"]).startswith("error"):
            out += ["", f"**{run['scenario']} (boot {run['boot_s']} s) failed**: {run['status']}"]
    return "\n".join(out) + "\n"


def _cold_start_table(
    cold_start: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]
) -> list[str]:
    """What each boot time's cold start took, then per scenario: live, cold start, difference."""
    if cold_start.get("status") != "ok":
        return [f"cold start: {cold_start.get('status')}"]
    def listed(key: str) -> str:
        return "; ".join(
            f"boot {_num(b['boot_s'], 1)} s: {', '.join(_ms(v) for v in b.get(key) or ())}"
            for b in cold_start["boots"]
        )

    gunicorn = " ".join(cold_start["gunicorn_args"])
    load_rate = cold_start.get("load_rate")
    under_load = (
        f" Under load: the same, while another gunicorn of the same app serves "
        f"{_num(load_rate, 0)} requests/s on new connections "
        f"(ms: {listed('under_load_samples_s')})."
        if load_rate
        else ""
    )
    out = [
        f"Cold start: `gunicorn {gunicorn}` on the same app binding its own port, from spawn "
        f"to the first response, no load; median of {cold_start['rounds']} (ms: "
        f"{listed('samples_s')}).{under_load} Difference: trigger → new gen (median) minus "
        "the cold start.",
        "",
        _row(COLD_START_COLUMNS),
        _row(["---"] * len(COLD_START_COLUMNS)),
    ]
    for run in runs:
        compared = run.get("vs_cold_start")
        if run["status"] != "ok" or not compared:
            continue
        out.append(
            _row(
                [
                    run["scenario"],
                    _num(run["boot_s"], 1),
                    _ms(compared["new_code_live_s"]),
                    _ms(compared["cold_start_s"]),
                    _signed_ms(compared["difference_s"]),
                    _ms(compared.get("cold_start_under_load_s")),
                    _signed_ms(compared.get("difference_under_load_s")),
                ]
            )
        )
    return out


def _cost_table(cost: Mapping[str, Any]) -> list[str]:
    if cost.get("status") != "ok":
        return [str(cost.get("status"))]
    alone, zocket = cost["alone"], cost["zocket"]
    rounds = cost["rounds"]
    load = f"{cost['tool']}, {cost['connections']} connections, {_num(cost['duration_s'])} s"
    idle = zocket["idle"]
    idle_cpu = f"{_num(idle['cpu_s'], 2)} s ({_num(idle['cpu_percent'], 3)} % of a core)"
    return [
        _row(["measure", "gunicorn alone", "gunicorn through zocket"]),
        _row(["---"] * 3),
        _row(
            [
                f"keep-alive requests/s ({load}; median of {rounds})",
                _num(alone["requests_per_s"]),
                _num(zocket["requests_per_s"]),
            ]
        ),
        _row(
            [
                "keep-alive latency p50 / p99 (medians) / max ms",
                _triple({"n": 1, **alone}),
                _triple({"n": 1, **zocket}),
            ]
        ),
        _row(["keep-alive errors", alone["errors"], zocket["errors"]]),
        _row(
            [
                f"start to first response ms (median of {rounds})",
                _ms(alone["start_to_first_response_s"]),
                _ms(zocket["start_to_first_response_s"]),
            ]
        ),
        _row([f"holder CPU idle over {_num(idle['seconds'])} s", "–", idle_cpu]),
        _row(
            [
                "holder CPU during a keep-alive load",
                "–",
                f"{_num(zocket['holder_cpu_s_under_load'], 2)} s",
            ]
        ),
        _row(["holder RSS", "–", f"{_num(zocket['rss_kib'] / 1024, 1)} MiB"]),
    ]


def write_json(path: Path, results: Mapping[str, Any]) -> None:
    """The raw figures, indented, with a trailing newline."""
    Path(path).write_text(json.dumps(results, indent=1, sort_keys=False, default=str) + "\n")


_KIND_STYLE = {
    "refused": ("x", "tab:red"),
    "reset": ("v", "tab:orange"),
    "timeout": ("s", "tab:purple"),
    "http_error": ("D", "tab:brown"),
    "error": ("*", "black"),
}


def plot(
    path: Path,
    runs: Sequence[tuple[str, Sequence[Record], Sequence[Restart], float]],
    margin: float,
) -> str:
    """Latency and failures over time per scenario, restarts marked; returns a message.

    ``runs`` holds (title, records, restarts, request timeout). Without
    matplotlib (the optional ``bench`` extra) nothing is drawn and the message
    says so.
    """
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install matplotlib)"
    if not runs:
        return "plot skipped: no scenario ran"
    fig, axes = plt.subplots(len(runs), 1, figsize=(11, 2.4 * len(runs) + 0.6), squeeze=False)
    for ax, (title, records, restarts, timeout) in zip(axes[:, 0], runs, strict=True):
        ok = [r for r in records if r.ok]
        ax.scatter(
            [r.scheduled for r in ok],
            [max(r.latency * 1000, 0.1) for r in ok],
            s=3,
            color="tab:blue",
            label="ok (latency)",
            linewidths=0,
        )
        top = max([r.latency * 1000 for r in ok] + [timeout * 1000])
        for kind, (marker, color) in _KIND_STYLE.items():
            failed = [r for r in records if r.kind == kind]
            if failed:
                ax.scatter(
                    [r.scheduled for r in failed],
                    [top * 1.5] * len(failed),
                    s=14,
                    marker=marker,
                    color=color,
                    label=f"{kind} ({len(failed)})",
                )
        for window in restart_windows(restarts, records, margin):
            ax.axvline(window.start, color="tab:green", linewidth=0.8)
            ax.axvspan(window.start, window.end, color="tab:green", alpha=0.12)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_ylabel("ms")
        ax.legend(fontsize=7, loc="upper right", markerscale=2)
    axes[-1, 0].set_xlabel("seconds since the load started (green: restart trigger and window)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot written to {path}"
