"""The benchmark runner counts right: on real restarts and on synthetic records.

The end-to-end test runs ``benchmarks/run.py --quick`` on two scenarios and
checks what it counted, never how fast anything was: a plain gunicorn restart
must show refused (or reset) connections and every generation; zocket must
show none and every generation; the cold start every scenario is compared
with must be there, per boot time, and the difference must be live minus cold
start. The metrics are checked on hand-made records whose answers are known.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support import REPO

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import metrics, report
from benchmarks.cost import machine_cpu_ticks, parse_importtime, steal_share
from benchmarks.load import FAILURE_KINDS, Record, classify, parse_wrk
from benchmarks.metrics import Restart
from benchmarks.native_load import compiler_path
from benchmarks.scenarios import (
    GO_APP,
    HEADLINE,
    NODE_APP,
    REFERENCE,
    SCENARIOS,
    Circus,
    GoAlone,
    Nodemon,
    NodeWatch,
    Scenario,
    ServerStarter,
    SystemdSocketActivate,
    ZocketGo,
    ZocketNode,
    ZocketNodeBind,
    build_go_app,
    go_path,
    node_path,
    render,
)

# --- the runner on real servers -----------------------------------------------------------


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One quick run of plain, zocket-gunicorn and the cheapest peer (Server::Starter, when
    installed): 2 restarts, 20 requests/s, 0.3 s boot, both pictures."""
    pytest.importorskip("gunicorn")
    folder = tmp_path_factory.mktemp("bench") / "results"  # not there yet, as in a clone
    out = folder / "results.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick",
         "--scenarios", "plain,zocket-gunicorn,start-server", "--restarts", "2", "--rate", "20",
         "--boot", "0.3", "--timeout", "20", "--no-cost", "--out", str(out),
         "--headline", str(folder / "headline.png")],
        capture_output=True, text=True, timeout=150, check=False, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| plain |" in result.stdout and "| zocket-gunicorn |" in result.stdout
    assert "| new code live ms (median) | cold start ms (median) |" in result.stdout
    assert "| cold start under load ms (median) | difference under load ms |" in result.stdout
    assert result.stdout.startswith("Run: ")  # which run produced the tables
    assert "## Against the peers" in result.stdout
    data: dict[str, Any] = json.loads(out.read_text())
    assert data["versions"]["python"] and data["versions"]["kernel"]
    # The load came from the compiled client, a process of its own, where there is a compiler.
    assert data["client"]["name"] == ("native" if compiler_path() else "python")
    for run in data["scenarios"]:
        if run["scenario"] == "start-server" and ServerStarter.skip_reason():
            assert run["status"] == ServerStarter.skip_reason()
            continue
        assert run["status"] == "ok", json.dumps(run, indent=1)[:4000]
    data["headline_png"] = str(folder / "headline.png")
    return data


@pytest.fixture(scope="module")
def quick_run(quick_results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The quick run's scenarios by name."""
    return {run["scenario"]: run for run in quick_results["scenarios"]}


def test_plain_restart_refuses_connections_and_sees_its_generations(
    quick_run: dict[str, dict[str, Any]],
) -> None:
    summary = quick_run["plain"]["summary"]
    counts = summary["counts"]
    assert counts["refused"] + counts["reset"] > 0, summary
    assert summary["generations_seen"] == ["1", "2", "3"]
    assert summary["new_generations_seen"] == 2
    assert summary["unexpected_generations"] == []
    # The failures were counted inside the restart windows, where they happened.
    inside = sum(r["counts"]["refused"] + r["counts"]["reset"] for r in summary["per_restart"])
    assert inside == counts["refused"] + counts["reset"]
    assert summary["requests"] == sum(counts.values())


def test_zocket_restart_fails_nothing_and_sees_every_generation(
    quick_run: dict[str, dict[str, Any]],
) -> None:
    run = quick_run["zocket-gunicorn"]
    summary = run["summary"]
    assert summary["failed"] == 0, run["failures"]
    assert all(summary["counts"][kind] == 0 for kind in FAILURE_KINDS)
    assert summary["counts"]["ok"] == summary["requests"] > 0
    assert summary["generations_seen"] == ["1", "2", "3"]
    assert summary["new_generations_seen"] == 2
    assert [r["new_generation_seen"] for r in summary["per_restart"]] == [True, True]
    assert run["holder_cpu_s"] >= 0
    assert 0 <= run["steal_share"] < 1  # the host's share of the CPU time under load
    # zocket's own log agrees: two restarts, each new generation ready.
    assert [r["generation"] for r in run["notes"]["zocket_ready"]] == [1, 2, 3]


def test_server_starter_passes_its_socket_and_counts_generations(
    quick_run: dict[str, dict[str, Any]],
) -> None:
    if reason := ServerStarter.skip_reason():
        pytest.skip(reason)
    summary = quick_run["start-server"]["summary"]
    # A 0.3 s boot is shorter than its 1 s interval: nothing fails, every generation answers.
    assert summary["failed"] == 0, quick_run["start-server"]["failures"]
    assert summary["generations_seen"] == ["1", "2", "3"]  # SERVER_STARTER_GENERATION


def test_every_scenario_is_compared_with_a_cold_start_of_its_boot_time(
    quick_results: dict[str, Any],
) -> None:
    cold = quick_results["cold_start"]
    assert cold["status"] == "ok", cold
    assert cold["gunicorn_args"] == ["--workers", "2"]
    (entry,) = cold["boots"]  # one per boot time of the run
    assert entry["boot_s"] == 0.3
    assert entry["samples"] == len(entry["samples_s"]) == cold["rounds"] > 0
    assert entry["median_s"] == statistics.median(entry["samples_s"])
    # The same cold start while another gunicorn serves the run's rate: one per round too.
    assert cold["load_rate"] == quick_results["options"]["rate"] == 20
    assert len(entry["under_load_samples_s"]) == cold["rounds"]
    assert entry["under_load_median_s"] == statistics.median(entry["under_load_samples_s"])
    for run in quick_results["scenarios"]:
        if run["status"] != "ok":
            continue
        compared = run["vs_cold_start"]
        assert compared["new_code_live_s"] == run["summary"]["to_new_generation_s"]["median"]
        assert compared["cold_start_s"] == entry["median_s"]
        assert compared["difference_s"] == pytest.approx(
            compared["new_code_live_s"] - compared["cold_start_s"]
        )
        assert compared["cold_start_under_load_s"] == entry["under_load_median_s"]
        assert compared["difference_under_load_s"] == pytest.approx(
            compared["new_code_live_s"] - compared["cold_start_under_load_s"]
        )


# --- metrics on synthetic records ---------------------------------------------------------


def ok(at: float, latency: float = 0.01, generation: str = "1") -> Record:
    return Record(at, at, at + latency, "ok", 200, generation)


def failed(at: float, kind: str = "refused", latency: float = 0.001) -> Record:
    return Record(at, at, at + latency, kind, error=kind)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert metrics.percentile(values, 50) == 50
    assert metrics.percentile(values, 99) == 99
    assert metrics.percentile(values, 100) == 100
    assert metrics.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2
    assert metrics.percentile([7.0], 99) == 7
    assert metrics.percentile([], 50) is None
    with pytest.raises(ValueError):
        metrics.percentile(values, 0)


def test_latency_stats_count_successes_only() -> None:
    records = [ok(0.0, 0.002), ok(0.1, 0.004), ok(0.2, 0.010), failed(0.3, "timeout", 5.0)]
    stats = metrics.latency_stats(records)
    assert stats["n"] == 3
    assert stats["p50_ms"] == pytest.approx(4.0)
    assert stats["p99_ms"] == pytest.approx(10.0)
    assert stats["max_ms"] == pytest.approx(10.0)
    assert metrics.latency_stats([failed(0.0)]) == {
        "n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None
    }  # fmt: skip


def test_longest_no_success_is_the_largest_gap_between_successful_completions() -> None:
    # Successes complete at 0.11, 0.21, 0.31, then refusals, then 1.51, 1.61.
    records = [ok(0.1), ok(0.2), ok(0.3)]
    records += [failed(0.4 + i / 10) for i in range(11)]
    records += [ok(1.5), ok(1.6)]
    assert metrics.longest_no_success(records) == pytest.approx(1.51 - 0.31)
    # Only gaps that overlap the given stretch count, unclipped.
    assert metrics.longest_no_success(records, (1.0, 1.2)) == pytest.approx(1.2)
    assert metrics.longest_no_success(records, (1.55, 1.6)) == pytest.approx(0.1)
    # Bounded by the run: from the first scheduled time, to the last end of any request.
    assert metrics.longest_no_success([ok(0.0, 0.5), failed(0.6, latency=2.0)]) == (
        pytest.approx(2.6 - 0.5)
    )
    assert metrics.longest_no_success([failed(0.0), failed(1.0)]) == pytest.approx(1.001)
    assert metrics.longest_no_success([]) == 0.0


def test_restart_windows_run_from_trigger_to_the_new_generation_plus_margin() -> None:
    records = [ok(t / 10) for t in range(10)]  # generation 1 until 0.9
    records += [ok(1.0 + t / 10, generation="2") for t in range(10)]  # 2 from 1.0 (ends 1.01)
    restarts = [Restart(1, "2", 0.55), Restart(2, "3", 1.5)]  # 3 never answers
    first, second = metrics.restart_windows(restarts, records, margin=0.2)
    assert first.start == 0.55
    assert first.first_new == pytest.approx(1.01)
    assert first.end == pytest.approx(1.21)
    # Never answered: to the end of the run (the last request's end).
    assert second.start == 1.5
    assert second.first_new is None
    assert second.end == pytest.approx(1.91)
    # Cut at the next trigger.
    (cut, _) = metrics.restart_windows([Restart(1, "2", 0.55), Restart(2, "3", 1.1)], records, 1)
    assert cut.end == 1.1
    # A request is inside when its life overlaps the window.
    assert first.holds(Record(0.5, 0.5, 0.6, "ok"))
    assert not first.holds(Record(0.4, 0.4, 0.54, "ok"))
    assert not first.holds(Record(1.3, 1.3, 1.31, "ok"))


def test_summarise_counts_per_restart_and_generations() -> None:
    records = [ok(t / 10, 0.001) for t in range(5)]  # generation 1: 0.0 .. 0.4
    records += [failed(0.5, "refused"), failed(0.6, "reset")]
    records += [ok(0.7, 0.3, "2"), ok(0.8, 0.2, "2")]  # slow: both end at 1.0
    records += [ok(round(1.0 + t / 10, 3), 0.001, "2") for t in range(11)]  # 1.0 .. 2.0
    records += [ok(2.1, 0.001, "7")]  # a generation nobody asked for
    restarts = [Restart(1, "2", 0.45, 0.46), Restart(2, "3", 1.5)]  # 3 never answers
    summary = metrics.summarise(records, restarts, margin=0.1)
    assert summary["requests"] == 21
    assert summary["counts"] == {
        "ok": 19, "refused": 1, "reset": 1, "timeout": 0, "http_error": 0, "error": 0
    }  # fmt: skip
    assert summary["failed"] == 2
    assert summary["generations_seen"] == ["1", "2", "7"]
    assert summary["unexpected_generations"] == ["7"]
    assert (summary["restarts"], summary["new_generations_seen"]) == (2, 1)
    first, second = summary["per_restart"]
    assert first["window_s"] == [0.45, pytest.approx(1.1)]
    assert first["trigger_returned_s"] == 0.46
    assert first["to_new_generation_s"] == pytest.approx(1.0 - 0.45)
    assert first["counts"]["refused"] == 1 and first["counts"]["reset"] == 1
    assert first["failed"] == 2
    # The two slow generation-2 answers, and the two fast ones scheduled up to 1.1.
    assert first["latency"]["n"] == 4
    assert first["latency"]["max_ms"] == pytest.approx(300.0)
    # From the last success before the refusals (0.401) to the first after (1.0).
    assert first["longest_no_success_s"] == pytest.approx(1.0 - 0.401)
    assert (second["new_generation_seen"], second["to_new_generation_s"]) == (False, None)
    assert second["window_s"] == [1.5, pytest.approx(2.101)]  # to the end of the run
    # Outside every window: generation 1 before the trigger, and 1.2 .. 1.4.
    assert summary["latency_outside"]["n"] == 8
    assert summary["latency_outside"]["max_ms"] == pytest.approx(1.0)
    assert summary["latency_in_windows"]["n"] == 11
    assert summary["latency_in_windows"]["max_ms"] == pytest.approx(300.0)
    assert summary["longest_no_success_s"] == pytest.approx(1.0 - 0.401)
    assert summary["to_new_generation_s"]["max"] == pytest.approx(0.55)


def test_control_windows_are_judged_like_restarts_and_left_out_of_the_outside() -> None:
    """Still and bystander windows: their own p99 and ratio to the outside p99, which no
    longer holds them; a request in a restart window and a control one is the restart's."""
    records = [ok(t / 100, 0.001) for t in range(100)]  # 0.00 .. 0.99, 1 ms each
    records += [ok(1.0 + t / 100, 0.001, "2") for t in range(300)]  # 1.00 .. 3.99
    slow = {1.5: 0.009, 2.5: 0.005, 3.5: 0.004}  # one slow request in each window below
    records = [ok(r.scheduled, slow.get(r.scheduled, 0.001), r.generation or "") for r in records]
    restarts = [Restart(1, "2", 0.95)]  # answered at once (1.001): window 0.95 .. 1.101
    controls = [
        metrics.Control("still", 1.45, 1.6),
        metrics.Control("bystander", 2.45, 2.6, answered=2.5),
        metrics.Control("bystander", 3.45, 3.6, answered=None),  # never answered
        metrics.Control("still", 1.05, 1.2),  # overlaps the restart window
    ]
    summary = metrics.summarise(records, restarts, margin=0.1, controls=controls)
    held_by_controls = 16 + 16 + 16 + 16
    # The restart window holds 0.95 .. 1.10 (16 requests); the 1.05 .. 1.2 still window adds
    # only 1.11 .. 1.20 (10).
    assert summary["latency_in_windows"]["n"] == 16
    assert summary["latency_outside"]["n"] == 400 - 16 - (held_by_controls - 6)
    assert summary["latency_outside"]["max_ms"] == pytest.approx(1.0)
    figures = summary["controls"]
    assert figures["restart_p99_ratio"] == pytest.approx(1.0)
    still, bystander = figures["still"], figures["bystander"]
    assert still["windows"] == 2
    assert still["latency"]["n"] == 16 + 10
    assert still["latency"]["max_ms"] == pytest.approx(9.0)
    assert still["p99_ratio"] == pytest.approx(9.0)  # nearest rank: the one slow of 26
    assert still["per_window_p99_ms"] == [pytest.approx(9.0), pytest.approx(1.0)]
    assert still["windows_s"] == [[1.45, 1.6], [1.05, 1.2]]
    # The bystander that never answered measured nothing: out of its figures (and of the
    # outside), counted apart.
    assert (bystander["windows"], bystander["unanswered"]) == (1, 1)
    assert bystander["latency"]["n"] == 16
    assert bystander["p99_ratio"] == pytest.approx(5.0)
    assert bystander["per_window_p99_ms"] == [pytest.approx(5.0)]
    assert bystander["answered_s"] == {"median": pytest.approx(0.05)}
    assert "answered_s" not in still
    # Without controls: nothing, and the outside as before.
    plain = metrics.summarise(records, restarts, margin=0.1)
    assert plain["controls"] == {}
    assert plain["latency_outside"]["n"] == 400 - 16


def test_the_control_table_sets_the_restart_ratio_beside_the_controls() -> None:
    records = [ok(t / 100, 0.001) for t in range(100)]
    records += [ok(1.0 + t / 100, 0.002 if t == 60 else 0.001, "2") for t in range(100)]
    controls = [metrics.Control("still", 1.55, 1.7), metrics.Control("bystander", 1.8, 1.9, 1.85)]
    summary = metrics.summarise(records, [Restart(1, "2", 0.95)], margin=0.1, controls=controls)
    run = {"scenario": "zocket-gunicorn", "boot_s": 0.3, "status": "ok", "summary": summary}
    lines = report._controls_table([run])
    assert lines[0] == "### Restart windows against control windows"
    row = lines[-1]
    assert row.startswith("| zocket-gunicorn | 0.3 | 1.00 | 1.00 (1.00×, 16 requests) |")
    assert "| 2.00 (2.00×, 16 requests) |" in row  # the still window holds the 2 ms one
    assert row.endswith("| 1.00 (1.00×, 11 requests) | 50 (1 of 1) |")
    assert report._controls_table([{**run, "summary": metrics.summarise(records, [])}]) == []


def test_against_cold_start_needs_both_sides() -> None:
    summary = {"to_new_generation_s": {"median": 0.45, "max": 0.5}}
    compared = metrics.against_cold_start(summary, 0.4)
    assert compared["new_code_live_s"] == 0.45 and compared["cold_start_s"] == 0.4
    assert compared["difference_s"] == pytest.approx(0.05)
    assert metrics.against_cold_start(summary, None)["difference_s"] is None
    never = {"to_new_generation_s": {"median": None, "max": None}}
    assert metrics.against_cold_start(never, 0.4)["difference_s"] is None
    assert compared["difference_under_load_s"] is None  # no cold start under load given
    loaded = metrics.against_cold_start(summary, 0.4, 0.43)
    assert loaded["cold_start_under_load_s"] == 0.43
    assert loaded["difference_under_load_s"] == pytest.approx(0.02)
    assert metrics.against_cold_start(never, 0.4, 0.43)["difference_under_load_s"] is None


def test_report_gives_new_code_live_against_the_cold_start() -> None:
    summary = metrics.summarise([ok(0.0), ok(0.5, generation="2")], [Restart(1, "2", 0.3)])
    cold_start = {"status": "ok", "gunicorn_args": ["--workers", "2"], "rounds": 2,
                  "boots": [{"boot_s": 0.3, "samples": 2, "samples_s": [0.19, 0.21],
                             "median_s": 0.2}]}  # fmt: skip
    run = {"scenario": "zocket-gunicorn", "boot_s": 0.3, "status": "ok", "summary": summary,
           "vs_cold_start": metrics.against_cold_start(summary, 0.2)}  # fmt: skip
    results = {"options": {"rate": 10, "restarts": 1}, "scenarios": [run],
               "cold_start": cold_start}  # fmt: skip
    table = report.markdown(results)
    assert "| zocket-gunicorn | 0.3 | 210 | 200 | +10 |" in table
    assert "median of 2 (ms: boot 0.3 s: 190, 210)" in table


@given(
    st.lists(
        st.tuples(st.floats(0, 100), st.floats(0, 5), st.sampled_from(["ok", *FAILURE_KINDS])),
        max_size=60,
    )
)
def test_no_success_gaps_tile_the_run(rows: list[tuple[float, float, str]]) -> None:
    records = [Record(at, at, at + latency, kind) for at, latency, kind in rows]
    gaps = metrics.no_success_gaps(records)
    counts = metrics.count_kinds(records)
    assert sum(counts.values()) == len(records)
    if not records:
        assert gaps == [] and metrics.longest_no_success(records) == 0.0
        return
    start = min(r.scheduled for r in records)
    end = max(r.ended for r in records)
    assert len(gaps) == counts["ok"] + 1
    assert sum(b - a for a, b in gaps) == pytest.approx(end - start)
    assert metrics.longest_no_success(records) <= end - start + 1e-9


def test_outcome_kinds_of_exceptions() -> None:
    assert classify(ConnectionRefusedError()) == "refused"
    assert classify(ConnectionResetError()) == "reset"
    assert classify(BrokenPipeError()) == "reset"
    assert classify(TimeoutError()) == "timeout"
    assert classify(ValueError()) == "error"


def test_wrk_output_is_read() -> None:
    output = """\
Running 2s test @ http://127.0.0.1:8000/
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.50ms  800.00us  30.10ms   90.00%
    Req/Sec     2.60k   200.00     3.00k    70.00%
  Latency Distribution
     50%  850.00us
     75%    1.20ms
     90%    2.00ms
     99%    5.25ms
  10400 requests in 2.00s, 1.50MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:   5200.10
Transfer/sec:    770.00KB
"""
    figures = parse_wrk(output)
    assert figures["requests_per_s"] == pytest.approx(5200.10)
    assert figures["p50_ms"] == pytest.approx(0.85)
    assert figures["p99_ms"] == pytest.approx(5.25)
    assert figures["max_ms"] == pytest.approx(30.1)
    assert figures["requests"] == 10400
    assert figures["errors"] == 3


def test_missing_tools_are_skipped_never_passed() -> None:
    class NeedsNothingThere(Scenario):
        name = "needs-nothing-there"
        needs = ("zocket_bench_no_such_module",)

    assert NeedsNothingThere.skip_reason() == "skipped: zocket_bench_no_such_module not installed"
    assert set(SCENARIOS) >= {"plain", "zocket-gunicorn", "zocket-django", "django-runserver"}
    results = {
        "options": {"rate": 10, "restarts": 2},
        "scenarios": [{"scenario": "django-runserver", "boot_s": 0.5,
                       "status": "skipped: django not installed"}],
    }  # fmt: skip
    table = report.markdown(results)
    assert "| django-runserver | 0.5 | skipped: django not installed |" in table
    assert "### New code live against a cold start" not in table  # not measured: no section
    # The comparison lists the skipped method with its reason, never as a result.
    assert "| `django-runserver` | skipped: django not installed |" in table
    results["cold_start"] = {"status": "skipped: gunicorn not installed"}
    assert "cold start: skipped: gunicorn not installed" in report.markdown(results)


# --- the peers' command lines and files -----------------------------------------------------


def test_server_starter_command_binds_gunicorn_to_the_fd_it_is_given(tmp_path: Path) -> None:
    scenario = ServerStarter(tmp_path, 0.3, port=8123)
    argv = scenario.command()
    assert argv[1:4] == ["--port=127.0.0.1:8123", "--interval=1", "--"]
    assert argv[4:6] == ["/bin/sh", "-c"]
    # SERVER_STARTER_PORT is host:port=fd; the shell hands gunicorn that fd.
    script = argv[6].replace("exec ", "exec echo ", 1)
    echoed = subprocess.run(
        ["/bin/sh", "-c", script], capture_output=True, text=True, timeout=10, check=True,
        env={"SERVER_STARTER_PORT": "127.0.0.1:8123=5", "PATH": "/usr/bin:/bin"},
    ).stdout.split()  # fmt: skip
    assert echoed[-3:] == ["--bind", "fd://5", "benchapp:app"]
    assert "--workers" in echoed and "gunicorn" in echoed
    assert ServerStarter.generation_source == "env:SERVER_STARTER_GENERATION"


def test_circus_config_holds_the_socket_and_passes_it(tmp_path: Path) -> None:
    scenario = Circus(tmp_path, 0.3, port=8124)
    scenario.prepare()
    scenario.ini_path.write_text(scenario.config())
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(scenario.ini_path)
    assert parser["socket:web"]["port"] == "8124"
    assert parser["watcher:web"]["use_sockets"] == "True"
    assert parser["watcher:web"]["cmd"].endswith("--bind fd://$(circus.sockets.web) benchapp:app")
    assert parser["circus"]["endpoint"].startswith("ipc://")  # no TCP port of its own
    circus_config = pytest.importorskip("circus.config")
    config = circus_config.get_config(str(scenario.ini_path))
    (watcher,) = config["watchers"]
    assert watcher["use_sockets"] is True and watcher["numprocesses"] == 1
    assert [str(s["port"]) for s in config["sockets"]] == ["8124"]


def test_systemd_socket_activate_passes_the_benchmark_environment(tmp_path: Path) -> None:
    argv = SystemdSocketActivate(tmp_path, 1.5).command("127.0.0.1", 8125)
    assert argv[1:3] == ["--listen", "127.0.0.1:8125"]
    # It starts the server with none of its own environment but what --setenv names.
    for name in ("BOOT", "BENCH_GENERATION_SOURCE", "BENCH_GENERATION_FILE", "PATH"):
        assert f"--setenv={name}" in argv
    assert argv[-1] == "benchapp:app" and "--bind" not in argv  # LISTEN_FDS, not a bind


def test_node_app_is_valid_and_edited_in_place(tmp_path: Path) -> None:
    source = render(NODE_APP, 7)
    assert "const EDIT = 7;" in source and "__EDIT__" not in source
    scenario = NodeWatch(tmp_path, 0.0)
    scenario.prepare()
    inode = scenario.app_file.stat().st_ino
    scenario.edit(2)
    # node --watch follows the file's inode: the edit must not replace the file.
    assert scenario.app_file.stat().st_ino == inode
    assert "const EDIT = 2;" in scenario.app_file.read_text()
    if (node := node_path()) is None:
        pytest.skip("node not installed")
    subprocess.run([node, "--check", str(scenario.app_file)], check=True, timeout=30)


def test_node_scenarios_command_lines(tmp_path: Path) -> None:
    assert ZocketNode(tmp_path, 0.0).server_command()[1:] == ["benchnode.js", "--fd", "{fd}"]
    assert ZocketNode.family == NodeWatch.family == Nodemon.family == "node"
    assert ZocketNode.generation_source == "env:ZOCKET_GENERATION"
    assert NodeWatch.generation_source == Nodemon.generation_source == "edit"
    if Nodemon.nodemon() is None:
        assert Nodemon.skip_reason() is not None and "npm install" in str(Nodemon.skip_reason())


def test_node_binding_its_port_listens_on_it_with_no_host(tmp_path: Path) -> None:
    """zocket-node-bind: node binds the port zocket holds itself, ``server.listen(PORT)``."""
    argv = ZocketNodeBind(tmp_path, 0.0).server_command()
    assert argv[1:] == ["benchnode.js", "--port", "{port}", "--any-host"]
    assert 'server.listen(Number(option("--port")));' in render(NODE_APP, 1)
    assert ZocketNodeBind.family == "node" and ZocketNodeBind.uses_zocket
    assert ZocketNodeBind.generation_source == "env:ZOCKET_GENERATION"
    assert "zocket-node-bind" in SCENARIOS and "zocket-node-bind" in HEADLINE


def test_go_scenarios_share_one_binary_per_run(tmp_path: Path) -> None:
    """zocket-go runs the run's one Go binary, which binds :PORT itself; the Go cold start runs
    the same binary alone. A binary already built in the run's root is not built again."""
    root = tmp_path / "run"
    scenario = ZocketGo(root / "zocket-go-1", 0.3)
    assert scenario.server_command() == [str(root / "benchgo"), "--port", "{port}"]
    assert GoAlone(root / "cold-1", 0.3).binary == scenario.binary
    assert ZocketGo.family == GoAlone.family == "go" and REFERENCE["go"] == "zocket-go"
    assert ZocketGo.generation_source == "env:ZOCKET_GENERATION" and ZocketGo.uses_zocket
    assert GoAlone.generation_source == "env:BENCH_GENERATION" and not GoAlone.uses_zocket
    assert SCENARIOS["zocket-go"] is ZocketGo and ZocketGo.needs == () and "zocket-go" in HEADLINE
    root.mkdir()
    (root / "benchgo").write_text("not rebuilt")
    assert build_go_app(root) == root / "benchgo"
    assert (root / "benchgo").read_text() == "not rebuilt"
    assert ':" + *port' in GO_APP and "server.Shutdown(ctx)" in GO_APP
    gofmt = shutil.which("gofmt") or str(Path(go_path() or "go").parent / "gofmt")
    if go_path() is None or not Path(gofmt).exists():
        pytest.skip("go not installed")
    (tmp_path / "main.go").write_text(GO_APP)
    # Parsed and formatted as gofmt would (no build: that is the run's, once).
    listed = subprocess.run(
        [gofmt, "-l", "-e", str(tmp_path / "main.go")],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert listed.stdout == "" and listed.stderr == ""


def test_importtime_output_is_read() -> None:
    stderr = """\
import time: self [us] | cumulative | imported package
import time:       887 |       1431 | _frozen_importlib_external
import time:       589 |       1465 | encodings
import time:       149 |        149 |   encodings.utf_8
import time:       608 |        608 |         _zocket_native
import time:      3829 |      12123 |     _zocket_hook
import time:      1609 |      15181 |   sitecustomize
import time:      1153 |      28514 | site
"""
    figures = parse_importtime(stderr)
    assert figures["imports_s"] == pytest.approx((1431 + 1465 + 28514) / 1e6)
    assert figures["sitecustomize_s"] == pytest.approx(0.015181)
    assert figures["modules"] == 7
    assert parse_importtime("import time:  10 |  10 | site\n")["sitecustomize_s"] is None


# --- the comparison and the headline picture --------------------------------------------------


def synthetic_run(
    name: str, boot: float, *, refused: int = 0, stall: float = 0.0, live: float
) -> dict[str, Any]:
    """A finished run: a request every 10 ms, one restart at 1.0 s, then ``refused``
    refusals. With ``stall``, one request waits ``stall`` s for the new generation
    (nothing succeeds meanwhile); without, the old generation serves until the new
    one answers, ``live`` s after the trigger."""
    records = [ok(i / 100, 0.002) for i in range(100)]  # generation 1 until 0.99
    records += [failed(1.0 + i * 0.001) for i in range(refused)]
    if stall:
        records.append(ok(1.0, stall, generation="2"))
    else:
        records += [ok(1.0 + i / 100, 0.002) for i in range(round(live * 100))]
    first_new = 1.0 + max(stall, live)
    records += [ok(round(first_new + i / 100, 3), 0.002, "2") for i in range(int(stall > 0), 100)]
    summary = metrics.summarise(records, [Restart(1, "2", 1.0)], margin=0.1)
    return {
        "scenario": name, "boot_s": boot, "status": "ok", "summary": summary,
        "timeline": metrics.timeline(records),
        "vs_cold_start": metrics.against_cold_start(summary, 0.3, 0.31),
    }  # fmt: skip


@pytest.fixture
def peer_results() -> dict[str, Any]:
    runs = [
        synthetic_run("plain", 0.3, refused=14, stall=0.7, live=0.7),
        synthetic_run("circus", 0.3, stall=0.4, live=0.4),
        synthetic_run("zocket-gunicorn", 0.3, live=0.35),
        synthetic_run("zocket-gunicorn", 1.5, live=1.6),
        synthetic_run("circus", 1.5, stall=1.6, live=1.6),
        {"scenario": "nodemon", "boot_s": 0.3, "status": "skipped: nodemon not installed"},
    ]
    runs[0]["load_average_1m"] = 1.7
    return {
        "started": "2026-12-01T21:00:00+0000",
        "command": ["/venv/bin/python", "/src/benchmarks/run.py", "--boot", "0.3", "1.5"],
        "load_average": "0.50, 0.40, 0.30",
        "versions": {"cpus": 2, "cpu": "Test CPU", "kernel": "6.1", "python": "CPython 3.11"},
        "options": {"rate": 100.0, "restarts": 1},
        "scenarios": runs,
    }


def test_comparison_puts_zocket_first_with_ratios_to_it(peer_results: dict[str, Any]) -> None:
    rows = report.comparison(peer_results)
    assert [r["scenario"] for r in rows] == ["zocket-gunicorn", "circus", "nodemon", "plain"]
    assert [r["scenario"] for r in rows] == sorted(
        (r["scenario"] for r in rows), key=HEADLINE.index
    )
    zocket, circus, nodemon, plain = rows
    assert nodemon["status"] == "skipped: nodemon not installed" and nodemon["boots"] == []
    assert [b["boot_s"] for b in circus["boots"]] == [0.3, 1.5]
    fast, slow = circus["boots"]
    assert fast["failed_per_restart"] == 0
    # From the last success before the trigger (0.992) to the held request's answer (1.4).
    assert fast["longest_stall_s"] == pytest.approx(1.4 - 0.992)
    assert zocket["boots"][0]["longest_stall_s"] == pytest.approx(0.01)
    assert fast["stall_vs_zocket"] == pytest.approx(
        fast["longest_stall_s"] / zocket["boots"][0]["longest_stall_s"]
    )
    assert fast["live_vs_zocket"] == pytest.approx(0.4 / 0.35, rel=0.02)
    assert slow["live_vs_zocket"] == pytest.approx(1.0, rel=0.02)
    assert all(b["live_vs_zocket"] == 1 for b in zocket["boots"])
    assert plain["boots"][0]["failed_per_restart"] == 14
    assert fast["live_minus_cold_start_s"] == pytest.approx(0.4 - 0.31, abs=0.005)
    table = report.comparison_table(rows)
    assert table[0].startswith("Each cell: boot 0.3 / 1.5 s.")
    assert table[2].startswith("| method | failed per restart | longest stall ms |")
    # zocket first; plain ran at one boot time only; nodemon's reason instead of figures.
    assert (
        table[4]
        == "| `zocket-gunicorn` | 0 / 0 | 10 / 10 | 1.0× / 1.0× | 1.0× / 1.0× | +42 / +1292 |"
    )
    assert table[5] == "| `circus` | 0 / 0 | 408 / 1608 | 41× / 161× | 1.1× / 1.0× | +90 / +1290 |"
    assert table[6] == "| `nodemon` | skipped: nodemon not installed |  |  |  |  |"
    assert table[7] == "| `plain` | 14 / – | 708 / – | 71× / – | 2.0× / – | +390 / – |"
    stamp = report.run_stamp(peer_results)
    assert stamp.startswith("2026-12-01T21:00:00+0000; 2 CPUs, Test CPU")
    assert "load average 0.50" in stamp and "up to 1.70 during the scenarios" in stamp
    assert stamp.endswith("python benchmarks/run.py --boot 0.3 1.5")
    assert "load client" not in stamp  # a run from before the client was recorded
    peer_results["client"] = {"name": "native", "description": "..."}
    assert "during the scenarios, the C load client; " in report.run_stamp(peer_results)
    assert "steal" not in report.run_stamp(peer_results)  # none recorded: nothing claimed
    peer_results["scenarios"][0]["steal_share"] = 0.004
    peer_results["scenarios"][1]["steal_share"] = 0.0312
    peer_results["scenarios"][2]["steal_share"] = None  # no /proc/stat where it ran
    assert (
        "during the scenarios, steal (CPU time the host took) up to 3.1% in a scenario, "
        "the C load client; " in report.run_stamp(peer_results)
    )


def test_steal_share_is_read_from_the_eighth_state_of_proc_stat(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 50 0 25 400 5 0 2 18 0 0\n")
    before = machine_cpu_ticks(str(stat))
    assert before == [100, 0, 50, 800, 10, 0, 5, 35, 0, 0]
    stat.write_text("cpu  160 0 70 1000 10 0 5 55 0 0\n")
    after = machine_cpu_ticks(str(stat))
    # 300 ticks passed, 20 of them stolen.
    assert steal_share(before, after) == pytest.approx(20 / 300)
    assert steal_share(before, before) is None  # no time passed
    assert steal_share(None, after) is None
    assert machine_cpu_ticks(str(tmp_path / "absent")) is None
    stat.write_text("intr 1 2 3\n")
    assert machine_cpu_ticks(str(stat)) is None
    assert machine_cpu_ticks() is not None  # this machine's own, as the runner reads it


def test_headline_picture_rows_panels_and_shared_axes(peer_results: dict[str, Any]) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    fig = report.headline_figure(peer_results)
    try:
        methods = ["zocket-gunicorn", "circus", "plain"]  # nodemon skipped: no row
        assert len(fig.axes) == 3 * len(methods)
        grid = [fig.axes[i * 3 : i * 3 + 3] for i in range(len(methods))]
        assert [row[0].get_ylabel() for row in grid] == methods
        # The latency strips share one linear y-axis; each bar column one x-axis.
        strips = [row[2] for row in grid]
        assert len({ax.get_ylim() for ax in strips}) == 1
        assert all(ax.get_yscale() == "linear" for ax in strips)
        assert strips[0].get_ylim()[1] >= 700  # plain's 0.7 s stall fits on it
        for column in (0, 1):
            assert len({row[column].get_xlim() for row in grid}) == 1
        # One bar per boot time; circus and zocket ran both, plain only 0.3 s.
        assert [len(row[1].patches) for row in grid] == [2, 2, 1]
        assert grid[2][0].patches[0].get_width() == 14  # plain's failures per restart
        stall_ms = [p.get_width() for p in grid[0][1].patches]
        assert stall_ms == pytest.approx([10, 10])  # zocket's: short bars
        texts = " ".join(t.get_text() for t in fig.texts)
        assert "Run: 2026-12-01T21:00:00+0000" in texts and "benchmarks/run.py" in texts
    finally:
        plt.close(fig)


def test_the_runner_opens_control_windows_between_restarts(tmp_path: Path) -> None:
    """--controls: after each restart a still window and a bystander window, apart from the
    restart windows; the bystander (the same gunicorn and app on a port of its own) answered,
    was stopped, and none of the served requests went anywhere but the served socket."""
    pytest.importorskip("gunicorn")
    if shutil.which("chrt") is None:
        pytest.fail("chrt (util-linux, in every Debian) is missing: the bystander needs it")
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--controls",
         "--scenarios", "zocket-gunicorn", "--restarts", "2", "--rate", "50", "--boot", "0.3",
         "--no-cost", "--keep", "--out", str(out)],
        capture_output=True, text=True, timeout=150, check=False, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "### Restart windows against control windows" in result.stdout
    (run,) = json.loads(out.read_text())["scenarios"]
    assert run["status"] == "ok", json.dumps(run, indent=1)[:4000]
    summary = run["summary"]
    assert summary["failed"] == 0 and summary["new_generations_seen"] == 2
    assert summary["unexpected_generations"] == []  # nothing answered but zocket's generations
    controls = summary["controls"]
    assert controls["still"]["windows"] == 2 and controls["bystander"]["windows"] == 2
    assert controls["bystander"]["unanswered"] == 0
    assert 0.3 <= controls["bystander"]["answered_s"]["median"] < 20  # it booted its BOOT
    for kind in ("still", "bystander"):
        assert controls[kind]["latency"]["n"] > 0 and controls[kind]["p99_ratio"] is not None
    # Every window in time order: restart, still, bystander, restart, still, bystander.
    spans = [(tuple(r["window_s"]), "restart") for r in summary["per_restart"]]
    spans += [(tuple(w), kind) for kind in ("still", "bystander") for w in controls[kind]["windows_s"]]
    spans.sort()
    assert [kind for _, kind in spans] == ["restart", "still", "bystander"] * 2
    assert all(a[0][1] < b[0][0] for a, b in zip(spans, spans[1:], strict=False))
    # The bystander listened on ports of its own, and every process of it is gone.
    log = (Path(run["workdir"]) / "bystander.log").read_text()
    ports = {int(p) for p in re.findall(r"Listening at: http://127\.0\.0\.1:(\d+)", log)}
    assert len(ports) in (1, 2) and run["port"] not in ports, log
    pids = [int(p) for p in re.findall(r"\[(\d+)\] \[INFO\] (?:Starting gunicorn|Booting worker)", log)]
    assert len(pids) == 2 * 3, log  # two bystanders: an arbiter and two workers each
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    shutil.rmtree(run["workdir"], ignore_errors=True)


def test_the_runner_refuses_an_output_it_cannot_write_before_it_runs(tmp_path: Path) -> None:
    """One line and status 2 at once, not a traceback after a twenty-minute run."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--scenarios", "plain",
         "--out", str(blocker / "results.json")],
        capture_output=True, text=True, timeout=30, check=False, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"run.py: cannot write {blocker}"), result.stderr
    assert result.stdout == ""


def test_the_runner_draws_the_headline_of_its_run(quick_results: dict[str, Any]) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    png = Path(quick_results["headline_png"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = quick_results["comparison"]
    assert rows[0]["scenario"] == "zocket-gunicorn" and rows[-1]["scenario"] == "plain"
    fig = report.headline_figure(quick_results)
    try:
        labels = [ax.get_ylabel() for ax in fig.axes[::3]]
        assert labels == [r["scenario"] for r in rows if r["status"] == "ok"]
    finally:
        plt.close(fig)


def test_a_peer_whose_tool_is_absent_is_skipped_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from benchmarks import scenarios

    monkeypatch.setattr(shutil, "which", lambda name: None)  # the module scenarios uses
    monkeypatch.setattr(scenarios, "NODE_BIN", tmp_path)
    assert ServerStarter.skip_reason() == (
        "skipped: start_server not installed (apt-get install libserver-starter-perl)"
    )
    assert str(SystemdSocketActivate.skip_reason()).startswith(
        "skipped: systemd-socket-activate not installed"
    )
    for cls in (NodeWatch, Nodemon, ZocketNode, ZocketNodeBind):
        assert cls.skip_reason() == "skipped: node not installed"
    for go_cls in (ZocketGo, GoAlone):
        assert go_cls.skip_reason() == "skipped: go not installed (apt-get install golang-go)"
    monkeypatch.setattr(scenarios, "node_path", lambda: "/usr/bin/node")
    assert Nodemon.skip_reason() == (
        "skipped: nodemon not installed (npm install --prefix benchmarks)"
    )
    if scenarios.installed("circus"):
        monkeypatch.setattr(scenarios, "installed", lambda module: module != "circus")
        assert Circus.skip_reason() == "skipped: circus not installed"
