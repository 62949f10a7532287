"""The results as a markdown table (stdout), a JSON file (raw figures) and a picture.

Everything here reads the result dicts that run.py builds; the plot also
takes the request records, which the JSON only keeps summarised.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .load import FAILURE_KINDS, Record
from .metrics import Restart, restart_windows
from .scenarios import HEADLINE, REFERENCE, SCENARIOS

__all__ = [
    "comparison",
    "headline_figure",
    "markdown",
    "plot",
    "plot_headline",
    "run_stamp",
    "write_json",
]


# --- the comparison with the peers ----------------------------------------------------------


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference <= 0:
        return None
    return value / reference


def _boot_figures(run: Mapping[str, Any]) -> dict[str, Any]:
    """One scenario at one boot time, as the comparison reads it."""
    summary = run["summary"]
    per_restart = summary["per_restart"]
    stalls = sorted(r["longest_no_success_s"] for r in per_restart)
    compared = run.get("vs_cold_start") or {}
    restarts = summary["restarts"]
    return {
        "boot_s": run["boot_s"],
        "restarts": restarts,
        "failed": summary["failed"],
        "failed_per_restart": summary["failed"] / restarts if restarts else None,
        "longest_stall_s": stalls[-1] if stalls else None,
        "median_stall_s": stalls[(len(stalls) - 1) // 2] if stalls else None,
        "new_generations_seen": summary["new_generations_seen"],
        "new_code_live_s": summary["to_new_generation_s"]["median"],
        "cold_start_s": compared.get("cold_start_under_load_s") or compared.get("cold_start_s"),
        "live_minus_cold_start_s": (
            compared.get("difference_under_load_s")
            if compared.get("difference_under_load_s") is not None
            else compared.get("difference_s")
        ),
    }


def comparison(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The restart methods of HEADLINE that were asked for, in that order, each with its
    figures per boot time and their ratios to the zocket scenario of its family.

    A method that did not run carries its status (``skipped: ...``) and no figures.
    ``longest_stall_s`` is the worst restart's longest no-success stretch;
    ``failed_per_restart`` the run's failed requests over its restarts. The
    ratios are the method's figure over zocket's at the same boot time; None
    when either is missing or zocket's is 0.
    """
    runs = [r for r in results.get("scenarios", ()) if r["scenario"] in HEADLINE]
    by_name: dict[str, list[Mapping[str, Any]]] = {}
    for run in runs:
        by_name.setdefault(run["scenario"], []).append(run)
    figures: dict[tuple[str, float], dict[str, Any]] = {
        (run["scenario"], run["boot_s"]): _boot_figures(run)
        for run in runs
        if run["status"] == "ok"
    }
    rows = []
    for name in HEADLINE:
        if name not in by_name:
            continue
        cls = SCENARIOS[name]
        reference = REFERENCE[cls.family]
        statuses = {run["status"] for run in by_name[name]}
        row: dict[str, Any] = {
            "scenario": name,
            "description": cls.description,
            "family": cls.family,
            "reference": reference,
            "status": "ok" if "ok" in statuses else sorted(statuses)[0],
            "boots": [],
        }
        for run in by_name[name]:
            mine = figures.get((name, run["boot_s"]))
            if mine is None:
                continue
            theirs = figures.get((reference, run["boot_s"]), {})
            mine["stall_vs_zocket"] = _ratio(mine["longest_stall_s"], theirs.get("longest_stall_s"))
            mine["live_vs_zocket"] = _ratio(mine["new_code_live_s"], theirs.get("new_code_live_s"))
            row["boots"].append(mine)
        rows.append(row)
    return rows


def _x(ratio: float | None) -> str:
    if ratio is None:
        return "–"
    return f"{ratio:.0f}×" if ratio >= 10 else f"{ratio:.1f}×"


COMPARISON_COLUMNS = (
    "method",
    "failed per restart",
    "longest stall ms",
    "longest stall × zocket's",
    "new code live × zocket's",
    "new code live − cold start ms",
)


def _count(value: float | None) -> str:
    """A count per restart: whole when it is, else one decimal (1 failure in 5 is 0.2)."""
    if value is None:
        return "–"
    return f"{value:.0f}" if value == int(value) or value >= 10 else f"{value:.1f}"


def comparison_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The short table the README leads with: one line per method, each cell giving every
    boot time's figure in order ("0 / 0" for boots 0.3 and 1.5 s), above a line saying so."""
    boots = sorted({b["boot_s"] for row in rows for b in row["boots"]})
    each = " / ".join(f"{boot:g}" for boot in boots)
    out = [
        f"Each cell: boot {each} s. New code live: the median trigger → first answer of the new "
        "code; its cold start: the same server and app started alone under the same load.",
        "",
    ]
    if not boots:
        out = []
    out += [
        _row(COMPARISON_COLUMNS),
        _row(["---"] * len(COMPARISON_COLUMNS)),
    ]
    for row in rows:
        if row["status"] != "ok" or not row["boots"]:
            out.append(_row([f"`{row['scenario']}`", row["status"], "", "", "", ""]))
            continue
        by_boot = {b["boot_s"]: b for b in row["boots"]}

        def cells(show: Callable[[Mapping[str, Any]], str]) -> str:
            return " / ".join(show(by_boot[boot]) if boot in by_boot else "–" for boot in boots)

        def live(b: Mapping[str, Any]) -> str:
            text = _x(b["live_vs_zocket"])
            seen, restarts = b["new_generations_seen"], b["restarts"]
            return text if seen == restarts else f"{text} ({seen}/{restarts} seen)"

        out.append(
            _row(
                [
                    f"`{row['scenario']}`",
                    cells(lambda b: _count(b["failed_per_restart"])),
                    cells(lambda b: _ms(b["longest_stall_s"])),
                    cells(lambda b: _x(b["stall_vs_zocket"])),
                    cells(live),
                    cells(lambda b: _signed_ms(b["live_minus_cold_start_s"])),
                ]
            )
        )
    return out


def run_stamp(results: Mapping[str, Any]) -> str:
    """Which run produced a figure: date, machine, command."""
    versions = results.get("versions", {})
    machine = ", ".join(
        str(part)
        for part in (
            f"{versions.get('cpus')} CPUs" if versions.get("cpus") else None,
            versions.get("cpu"),
            f"Linux {versions['kernel']}" if versions.get("kernel") else None,
            versions.get("python"),
            f"load average {results['load_average']} at the start"
            if results.get("load_average")
            else None,
            _busiest(results),
            _stolen(results),
            _client(results),
        )
        if part
    )
    command = " ".join(_short_command(results.get("command", [])))
    return f"{results.get('started', '?')}; {machine}; {command}"


def _client(results: Mapping[str, Any]) -> str | None:
    """Which load client the run used (runs before there were two name none: Python's)."""
    name = results.get("client", {}).get("name")
    return {"native": "the C load client", "python": "the Python load client"}.get(name)


def _busiest(results: Mapping[str, Any]) -> str | None:
    """The highest 1-minute load average at the start of a scenario, if it was recorded."""
    loads = [r["load_average_1m"] for r in results.get("scenarios", ()) if "load_average_1m" in r]
    return f"up to {max(loads):.2f} during the scenarios" if loads else None


def _stolen(results: Mapping[str, Any]) -> str | None:
    """The most CPU time the host took from a scenario (steal), if any was recorded."""
    shares = [
        r["steal_share"] for r in results.get("scenarios", ()) if r.get("steal_share") is not None
    ]
    if not shares:
        return None
    return f"steal (CPU time the host took) up to {max(shares) * 100:.1f}% in a scenario"


def _short_command(argv: Sequence[str]) -> list[str]:
    """The command as a reader would type it: python and the script relative to the checkout."""
    words = list(argv)
    if words and "python" in Path(words[0]).name:
        words[0] = "python"
    if len(words) > 1 and words[1].endswith("benchmarks/run.py"):
        words[1] = "benchmarks/run.py"
    return words


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
    out = [f"Run: {run_stamp(results)}", ""]
    rows = results.get("comparison")
    if rows is None:
        rows = comparison(results)
    if rows:
        out += ["## Against the peers", "", *comparison_table(rows), ""]
    out += [
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
        python_runs = [r for r in runs if _family(r["scenario"]) == "python"]
        out += _cold_start_table(cold_start, python_runs)
    for family, runtime in (("node", "node's"), ("go", "Go's")):
        family_cold_start = results.get(f"cold_start_{family}")
        if isinstance(family_cold_start, dict):
            family_runs = [r for r in runs if _family(r["scenario"]) == family]
            out += ["", f"The {family} scenarios against {runtime} own cold start:", ""]
            out += _cold_start_table(family_cold_start, family_runs)
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
    controls = _controls_table(runs)
    if controls:
        out += ["", *controls]
    cost = results.get("cost")
    if isinstance(cost, dict):
        out += ["", "## Cost of zocket", "", *_cost_table(cost)]
    hook = results.get("hook_import")
    if isinstance(hook, dict):
        out += ["", *_hook_table(hook)]
    restarts = _restart_cost_table(runs)
    if restarts:
        out += ["", *restarts]
    for run in runs:
        if str(run["status"]).startswith("error"):
            out += ["", f"**{run['scenario']} (boot {run['boot_s']} s) failed**: {run['status']}"]
    return "\n".join(out) + "\n"


CONTROL_COLUMNS = (
    "scenario",
    "boot s",
    "outside p99 ms",
    "restart windows p99 ms (ratio)",
    "still windows p99 ms (ratio)",
    "bystander windows p99 ms (ratio)",
    "bystander answered ms (median; answered of started)",
)


def _answered(bystander: Mapping[str, Any] | None) -> str:
    if bystander is None:
        return "none"
    started = bystander["windows"] + bystander["unanswered"]
    return f"{_ms(bystander['answered_s']['median'])} ({bystander['windows']} of {started})"


def _controls_table(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The restart windows' p99 ratio beside the control windows' (``--controls``)."""
    rows = []
    for run in runs:
        figures = run.get("summary", {}).get("controls") if run["status"] == "ok" else None
        if not figures:
            continue
        s = run["summary"]

        def cell(stats: Mapping[str, Any] | None, ratio: float | None) -> str:
            if stats is None:
                return "none"
            return f"{_num(stats['p99_ms'], 2)} ({_num(ratio, 2)}×, {stats['n']} requests)"

        still, bystander = figures.get("still"), figures.get("bystander")
        rows.append(
            _row(
                [
                    run["scenario"],
                    _num(run["boot_s"], 1),
                    _num(s["latency_outside"]["p99_ms"], 2),
                    cell(s["latency_in_windows"], figures["restart_p99_ratio"]),
                    cell(still and still["latency"], still and still["p99_ratio"]),
                    cell(bystander and bystander["latency"], bystander and bystander["p99_ratio"]),
                    _answered(bystander),
                ]
            )
        )
    if not rows:
        return []
    return [
        "### Restart windows against control windows",
        "",
        "A still window: as long as a restart's, nothing done. A bystander window: gunicorn "
        "with the same app booted beside on its own port at SCHED_IDLE, stopped once it "
        "answers (one that never answered is left out of its figures). Each ratio is that "
        "p99 over the outside p99 (docs/benchmarks.md).",
        "",
        _row(CONTROL_COLUMNS),
        _row(["---"] * len(CONTROL_COLUMNS)),
        *rows,
    ]


def _family(name: str) -> str:
    cls = SCENARIOS.get(name)
    return cls.family if cls is not None else "python"


def _hook_table(hook: Mapping[str, Any]) -> list[str]:
    """The hook's import time per Python process, with and without its environment."""
    if hook.get("status") != "ok":
        return [f"hook import time: {hook.get('status')}"]
    without, with_hook = hook["without"], hook["with_hook"]
    return [
        f"The hook's import time per Python process: `{hook['command']}` alone and as a "
        f"generation of zocket (the held fd, the hook on PYTHONPATH), median of "
        f"{hook['rounds']} alternating rounds, from `-X importtime`:",
        "",
        _row(["measure", "without zocket", "as a generation of zocket", "added"]),
        _row(["---"] * 4),
        _row(
            [
                "all imports at start-up ms (top-level cumulative)",
                _num(without["imports_s"] * 1000, 1),
                _num(with_hook["imports_s"] * 1000, 1),
                f"{hook['added_s'] * 1000:+.1f}",
            ]
        ),
        _row(
            [
                "sitecustomize cumulative ms",
                _num(_or_none(without["sitecustomize_s"], 1000), 1),
                _num(_or_none(with_hook["sitecustomize_s"], 1000), 1),
                "",
            ]
        ),
    ]


def _or_none(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def _restart_cost_table(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """zocket's CPU and RSS during the restarts of each zocket scenario."""
    rows = [r for r in runs if r["status"] == "ok" and r.get("holder_rss_kib")]
    if not rows:
        return []
    out = [
        "zocket during restarts (from the first answer to the end of the load):",
        "",
        _row(["scenario", "boot s", "restarts", "CPU s", "CPU ms per restart", "RSS MiB (max)"]),
        _row(["---"] * 6),
    ]
    for run in rows:
        restarts = run["summary"]["restarts"]
        cpu = run.get("holder_cpu_s")
        out.append(
            _row(
                [
                    run["scenario"],
                    _num(run["boot_s"], 1),
                    restarts,
                    _num(cpu, 2),
                    _num(cpu * 1000 / restarts if cpu is not None and restarts else None),
                    _num(run["holder_rss_kib"]["max"] / 1024, 1),
                ]
            )
        )
    return out


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
    server = cold_start.get("server", "gunicorn")
    what = f"`gunicorn {gunicorn}`" if server == "gunicorn" else f"`{server}`"
    load_rate = cold_start.get("load_rate")
    under_load = (
        f" Under load: the same, while another instance of the same server and app serves "
        f"{_num(load_rate, 0)} requests/s on new connections "
        f"(ms: {listed('under_load_samples_s')})."
        if load_rate
        else ""
    )
    out = [
        f"Cold start: {what} on the same app binding its own port, from spawn "
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
        _row(
            [
                "zocket's own start-up ms (the difference)",
                "–",
                _signed_ms(
                    _minus(zocket["start_to_first_response_s"], alone["start_to_first_response_s"])
                ),
            ]
        ),
        _row([f"holder CPU idle over {_num(idle['seconds'])} s", "–", idle_cpu]),
        _row(
            [
                "CPU during the keep-alive load: the server's processes / zocket",
                f"{_num(alone.get('server_cpu_s_under_load'), 2)} s",
                f"{_num(zocket.get('server_cpu_s_under_load'), 2)} s / "
                f"{_num(zocket['holder_cpu_s_under_load'], 2)} s",
            ]
        ),
        _row(
            [
                "RSS: the server's processes / zocket",
                f"{_num(_or_none(alone.get('server_rss_kib'), 1 / 1024), 1)} MiB",
                f"{_num(_or_none(zocket.get('server_rss_kib'), 1 / 1024), 1)} MiB / "
                f"{_num(zocket['rss_kib'] / 1024, 1)} MiB",
            ]
        ),
    ]


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


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
    stamp: str = "",
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
    fig.tight_layout(rect=(0, 0.25 / fig.get_figheight() if stamp else 0, 1, 1))
    if stamp:
        fig.text(0.01, 0.004, f"Run: {stamp}", fontsize=6.5, color="0.3", wrap=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot written to {path}"


# --- the headline picture -------------------------------------------------------------------

#: One colour per boot time, in the order of the run's boot times.
_BOOT_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown")


def _strip_run(results: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    """The run of ``name`` drawn in its latency strip: the longest boot time that ran."""
    ran = [r for r in results.get("scenarios", ()) if r["scenario"] == name and r["status"] == "ok"]
    return max(ran, key=lambda r: r["boot_s"]) if ran else None


def headline_figure(results: Mapping[str, Any]) -> Any:
    """The picture a reader takes in at a glance, from the results alone (the JSON).

    One row per restart method that ran (the order of scenarios.HEADLINE, zocket
    first). Column 1: failed requests per restart, one bar per boot time; column
    2: the worst restart's longest stretch with no successful response, per boot
    time; each column on one x-axis shared by every row. Column 3: the slowest
    successful response of each 100 ms of the run at the longest boot time
    (its timeline), every row on one shared linear y-axis, failed requests as
    red ticks along the top and restart triggers as green lines. Returns the
    matplotlib Figure (the caller saves and closes it).
    """
    import matplotlib  # type: ignore[import-not-found, unused-ignore]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

    rows = [row for row in comparison(results) if row["status"] == "ok" and row["boots"]]
    if not rows:
        raise ValueError("no restart method of the comparison ran")
    boots = sorted({b["boot_s"] for row in rows for b in row["boots"]})
    colours = {boot: _BOOT_COLOURS[i % len(_BOOT_COLOURS)] for i, boot in enumerate(boots)}
    strips = {row["scenario"]: _strip_run(results, row["scenario"]) for row in rows}
    top_ms = max(
        [1.0]
        + [
            bucket[3]
            for run in strips.values()
            if run is not None
            for bucket in run.get("timeline", ())
        ]
    )
    top_ms *= 1.12  # room for the failure ticks above the highest point
    fig, axes = plt.subplots(
        len(rows),
        3,
        figsize=(13, 0.62 * len(rows) + 1.9),
        squeeze=False,
        sharex="col",
        gridspec_kw={"width_ratios": [1, 1.3, 3.2], "hspace": 0.18, "wspace": 0.06},
    )
    strip_axes = axes[:, 2]
    for ax in strip_axes[1:]:
        ax.sharey(strip_axes[0])
    worst_failed = max([1.0] + [b["failed_per_restart"] or 0 for row in rows for b in row["boots"]])
    worst_stall = max([0.05] + [b["longest_stall_s"] or 0 for row in rows for b in row["boots"]])
    for index, row in enumerate(rows):
        failed_ax, stall_ax, strip_ax = axes[index]
        positions = list(range(len(boots)))
        by_boot = {b["boot_s"]: b for b in row["boots"]}
        for position, boot in zip(positions, boots, strict=True):
            b = by_boot.get(boot)
            if b is None:
                continue
            failed = b["failed_per_restart"] or 0.0
            stall_ms = (b["longest_stall_s"] or 0.0) * 1000
            failed_ax.barh(position, failed, color=colours[boot], height=0.8)
            failed_ax.text(
                failed + worst_failed * 0.02, position, f"{failed:.0f}", va="center", fontsize=7
            )
            stall_ax.barh(position, stall_ms, color=colours[boot], height=0.8)
            if b.get("median_stall_s") is not None:  # the typical restart, inside the worst
                stall_ax.plot(
                    [b["median_stall_s"] * 1000], [position], marker="|", color="black", ms=9
                )
            stall_ax.text(
                stall_ms + worst_stall * 1000 * 0.02,
                position,
                f"{stall_ms:.0f} ms",
                va="center",
                fontsize=7,
            )
        for ax in (failed_ax, stall_ax):
            ax.set_yticks([])
            ax.set_ylim(-0.6, len(boots) - 0.4)
            ax.invert_yaxis()
            ax.grid(axis="x", linewidth=0.4, alpha=0.5)
        failed_ax.set_ylabel(row["scenario"], rotation=0, ha="right", va="center", fontsize=9)
        run = strips[row["scenario"]]
        if run is not None:
            timeline = run.get("timeline", ())
            strip_ax.plot(
                [t for t, *_ in timeline],
                [bucket[3] for bucket in timeline],
                color="tab:blue",
                linewidth=0.8,
                drawstyle="steps-post",
            )
            failed_at = [t for t, _ok, failed, _ms in timeline if failed]
            if failed_at:
                strip_ax.scatter(
                    failed_at, [top_ms * 0.95] * len(failed_at), marker="|", color="tab:red", s=30
                )
            for restart in run["summary"]["per_restart"]:
                strip_ax.axvline(restart["trigger_s"], color="tab:green", linewidth=0.7)
            slowest = max((bucket[3] for bucket in timeline), default=0.0)
            strip_ax.text(
                0.995,
                0.9,
                f"boot {run['boot_s']:g} s; slowest {slowest:.0f} ms",
                transform=strip_ax.transAxes,
                ha="right",
                va="top",
                fontsize=7,
                color="0.35",
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1},
                zorder=5,
            )
        strip_ax.set_ylim(0, top_ms)
        strip_ax.yaxis.tick_right()
        strip_ax.tick_params(axis="y", labelsize=7)
        for ax in (failed_ax, stall_ax):
            ax.tick_params(axis="x", labelsize=7)
    axes[0, 0].set_xlim(0, worst_failed * 1.3)
    axes[0, 1].set_xlim(0, worst_stall * 1000 * 1.35)
    axes[0, 0].set_title("failed per restart", fontsize=9)
    axes[0, 1].set_title("longest stall ms (|: median restart)", fontsize=9)
    axes[0, 2].set_title(
        "slowest response per 100 ms, ms (one axis for all rows); red: failed; green: restart",
        fontsize=9,
    )
    axes[-1, 1].set_xlabel("ms", fontsize=8)
    axes[-1, 2].set_xlabel("seconds since the load started", fontsize=8)
    handles = [
        matplotlib.patches.Patch(color=colours[boot], label=f"boot {boot:g} s") for boot in boots
    ]
    fig.legend(handles=handles, loc="upper left", ncol=len(boots), fontsize=8, frameon=False)
    options = results.get("options", {})
    fig.text(
        0.01,
        0.005,
        f"{options.get('rate', '?'):g} requests/s, each on a new connection; "
        f"{options.get('restarts', '?')} restarts per method. Run: {run_stamp(results)}",
        fontsize=6.5,
        color="0.3",
        wrap=True,
    )
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.16, right=0.955, top=1 - 0.55 / height, bottom=0.9 / height)
    return fig


def plot_headline(path: Path, results: Mapping[str, Any]) -> str:
    """headline_figure() saved to ``path``; a message, as plot() returns."""
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore] # noqa: F401
    except ImportError:
        return "headline skipped: matplotlib is not installed (pip install matplotlib)"
    try:
        fig = headline_figure(results)
    except ValueError as exc:
        return f"headline skipped: {exc}"
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"headline picture written to {path}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.report RESULTS.json [--headline PNG]``: the tables again, and the
    headline picture, from a run's JSON (the detailed picture needs the run's records)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=main.__doc__)
    parser.add_argument("results", type=Path, help="the JSON a run wrote with --out")
    parser.add_argument("--headline", type=Path, help="draw the headline picture to this PNG")
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())
    sys.stdout.write(markdown(results))
    if args.headline is not None:
        print(plot_headline(args.headline, results), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
