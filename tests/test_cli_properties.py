"""The CLI over generated command lines and ``LISTEN_*`` environments: the README's promises.

Whatever the argv (valid and invalid options, numbers, words, ``--``) and
whatever zocket itself was handed the systemd way, zocket answers with one of
its documented exit statuses, never a traceback, and leaves nothing behind: no
process of the run, no socket, pid or status file in the run's directory.

Each example is a real ``python -m zocket`` whose command exits at once (or is
not found), with ``--no-respawn``, so a run is short. Every process of a run
carries a marker in its environment, which is how the test finds a survivor.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from support import zocket_argv, zocket_env

#: README "Exit status": zocket's own (1, 2, 3, 126, 127), and the server's, for commands
#: that exit 0 to 3 themselves (true, false, "[", sh -c 'exit 3') or are stopped by zocket
#: with a signal (128 + N: a generation not ready by --ready-timeout 0 gets SIGTERM).
DOCUMENTED = {0, 1, 2, 3, 126, 127} | {128 + number for number in range(1, 65)}

#: Placeholders a token may contain; filled in with the run's own directory.
DIR = "{dir}"

# Half the values are fine, so that a bad one usually meets otherwise good company: a run
# that gets past parsing is where the tracebacks were.
NUMBERS = st.sampled_from(["0", "1", "7", "0.5", "86400"]) | st.sampled_from(
    ["-1", "86401", "1e10", "nan", "inf", "2147483648", "1000000000000", "65536", "0x10",
     "1_0", "", "abc", "99999999999999999999"]
) | st.integers(min_value=-(2**40), max_value=2**40).map(str)  # fmt: skip

#: Text that can never name a long-running program: no letters.
JUNK = st.text(alphabet="0123456789-.:=[]@/ ,%{}'\"", max_size=12)

WORDS = st.just("true") | st.sampled_from(
    ["true", "false", "zocket-no-such-command", "-1", "-5", "8000", "0", "--", "{fd}",
     "{port:nope}", "sh -c 'exit 3'", "'unbalanced", "true {fd} {port}", "/", "."]
) | JUNK  # fmt: skip

ADDRESSES = st.sampled_from(
    ["127.0.0.1:0", "[::1]:0", "localhost:0", "a=127.0.0.1:0", "http=127.0.0.1:0",
     f"unix:{DIR}/s", f"b=unix:{DIR}/t", "unix:@zk-prop-{run}"]
) | st.sampled_from(
    ["unix:", "bad", "::1:80",
     "127.0.0.1:70000", "a=b=c", "=127.0.0.1:0"]
) | JUNK  # fmt: skip

OPTIONS = st.one_of(
    st.tuples(st.sampled_from(["--backlog", "--port", "-p", "--ready-timeout", "--stop-timeout",
                               "--debounce", "--socket-mode"]), NUMBERS).map(list),
    st.tuples(st.just("--listen"), ADDRESSES).map(list),
    st.tuples(st.just("--host"),
              st.sampled_from(["127.0.0.1", "::1", "localhost", "0.0.0.0", "bad host", "",
                               "999.1.1.1", "[::1]"]) | JUNK).map(list),
    st.tuples(st.just("--ready"),
              st.sampled_from(["auto", "notify", "none", "delay:0.1", "delay:1e10",
                               "delay:-1", "bogus"])).map(list),
    st.tuples(st.just("--stop-signal"),
              st.sampled_from(["TERM", "SIGINT", "9", "0", "999", "NOPE"])).map(list),
    st.tuples(st.just("--socket-owner"),
              st.sampled_from([str(os.getuid()), f"{os.getuid()}:{os.getgid()}", "nosuchuser",
                               ":nosuchgroup", "99999999999999999999"])).map(list),
    st.tuples(st.sampled_from(["--status-file", "--pid-file"]),
              st.sampled_from([f"{DIR}/status.json", f"{DIR}/pid", f"{DIR}/no/such/dir/f",
                               f"{DIR}"])).map(list),
    st.tuples(st.just("--watch"), st.sampled_from([f"{DIR}/missing", DIR])).map(list),
    st.sampled_from([["--shell"], ["--no-hook"], ["--no-overlap"], ["--bogus"], ["-x"],
                     ["--ignore", "*.tmp"]]),
    WORDS.map(lambda word: [word]),
)

ENVIRONMENTS = st.fixed_dictionaries(
    {},
    optional={
        "LISTEN_PID": st.sampled_from(["self", "1", "0", "-3", "abc", ""]),
        "LISTEN_FDS": st.sampled_from(["0", "1", "2", "3x", "", " 1", "65",
                                       "99999999999999999999", "\u0663"]),
        "LISTEN_FDNAMES": st.sampled_from(["http", "a:b", "", ":::", "x" * 300]),
    },
)  # fmt: skip

#: Exports LISTEN_PID=$$ when asked ("self") and execs zocket in its place, so that the
#: pid is zocket's own, as systemd would set it.
SELF_PID = 'if [ "$ZK_SELF_PID" = 1 ]; then export LISTEN_PID=$$; fi; exec "$@"'


def _survivors(marker: str) -> list[int]:
    """Processes (ours to read) whose environment carries the run's marker."""
    found = []
    needle = f"ZK_PROPERTY_RUN={marker}".encode()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(name))
        except OSError:
            continue
    return found


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# The inputs issue 13 found, always tried: each printed a traceback.
@example(options=[["--backlog", "1000000000000"]], tail=["0", "true"], environment={})
@example(options=[["--backlog", "2147483648"]], tail=["0", "true"], environment={})
@example(options=[["--listen", "127.0.0.1:0"]] * 65, tail=["--", "true"], environment={})
@example(
    options=[],
    tail=["--", "true"],
    environment={"LISTEN_PID": "self", "LISTEN_FDS": "99999999999999999999"},
)
@example(options=[["--ready-timeout", "1e10"]], tail=["0", "--", "sleep", "1.5"], environment={})
@given(
    options=st.lists(OPTIONS, max_size=4),
    tail=st.sampled_from([["true"], ["--", "true"], ["0", "--", "true"]])
    | st.one_of(st.just([]), st.lists(WORDS, min_size=1, max_size=3),
                st.lists(WORDS, max_size=3).map(lambda w: ["--", *w])),
    environment=ENVIRONMENTS,
)  # fmt: skip
def test_any_command_line_gets_a_documented_answer_and_leaves_nothing(
    options: list[list[str]], tail: list[str], environment: dict[str, str]
) -> None:
    run = uuid.uuid4().hex[:12]
    directory = Path(tempfile.mkdtemp(prefix="zkp-"))  # short: unix socket paths fit
    try:
        words = [w for option in options for w in option] + tail
        args = ["--no-respawn", *(w.replace(DIR, str(directory)).replace("{run}", run)
                                  for w in words)]  # fmt: skip
        env = zocket_env(ZK_PROPERTY_RUN=run)
        if environment.get("LISTEN_PID") == "self":
            env["ZK_SELF_PID"] = "1"
            environment = {k: v for k, v in environment.items() if k != "LISTEN_PID"}
        env.update(environment)  # after zocket_env, which drops inherited LISTEN_* variables
        try:
            result = subprocess.run(
                ["/bin/sh", "-c", SELF_PID, "sh", *zocket_argv(args)],
                env=env,
                cwd=directory,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=60,
                check=False,
            )
        finally:
            left = _survivors(run)
            for pid in left:
                os.kill(pid, 9)
        stderr = result.stderr.decode(errors="replace")
        event(f"exit status {result.returncode}")  # --hypothesis-show-statistics
        assert "Traceback" not in stderr, (args, environment, stderr)
        assert result.returncode in DOCUMENTED, (args, environment, result.returncode, stderr)
        assert not left, (args, environment, f"processes left: {left}", stderr)
        remaining = sorted(p.name for p in directory.iterdir())
        assert remaining == [], (args, environment, f"left in the run's directory: {remaining}")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
