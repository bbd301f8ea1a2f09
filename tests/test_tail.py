"""`timber tail` as a real process: memory on large files, `--follow` through
truncation and rotation and over many files, deep and hostile input."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TAIL = [sys.executable, "-m", "timber", "tail"]


def line(message: str, **extra: Any) -> str:
    frame = {"dt": "2019-03-04T03:44:21Z", "level": "info", "message": message, **extra}
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False) + "\n"


def append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(text)


class Follower:
    """`timber tail --follow PATH`, its output read line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*TAIL, "--follow", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def expect(self, text: str) -> None:
        """Reads output lines until one ends with `text` (fails after 30 s)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            got = self.proc.stdout.readline()
            assert got, "timber tail stopped"
            if got.rstrip("\n").endswith(text):
                return
        pytest.fail(f"no line ending with {text!r}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def follow() -> Iterator[type[Follower]]:
    started: list[Follower] = []

    class Tracked(Follower):
        def __init__(self, *args: str) -> None:
            super().__init__(*args)
            started.append(self)

    yield Tracked
    for f in started:
        f.stop()


# --- 13: streaming ----------------------------------------------------------------------


def test_a_large_file_is_streamed(tmp_path: Path) -> None:
    """96 MiB of frames: the reader's peak RSS stays far below the file's size
    (reading it whole took about 3.5 times the file)."""
    path = tmp_path / "big.ndjson"
    one = line("m", pad="x" * 1000).encode()
    with path.open("wb") as f:
        block = one * 1024
        for _ in range((96 << 20) // len(block)):
            f.write(block)
    for args in (["--json"], ["--level", "warn"]):
        status, peak_kib = peak_rss([*TAIL, *args, str(path)])
        assert status == 0
        assert peak_kib < 48 * 1024, f"{args}: peak RSS {peak_kib // 1024} MiB"


#: Runs a command and prints its exit status and peak RSS in KiB. It runs in a
#: fresh interpreter, because a child's peak counts the memory of the process
#: it was forked from, and this test process may have grown large.
_MEASURE = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def peak_rss(command: list[str]) -> tuple[int, int]:
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command], capture_output=True, text=True, timeout=300
    )
    status, peak = run.stdout.split()
    return int(status), int(peak)


def test_follow_survives_truncation(tmp_path: Path, follow: type[Follower]) -> None:
    path = tmp_path / "app.ndjson"
    path.write_text(line("one") + line("two"))
    f = follow(str(path))
    f.expect("two")
    path.write_text("")  # truncated, as by copytruncate
    time.sleep(1.2)
    append(path, line("after truncation"))
    f.expect("after truncation")
    append(path, line("and more"))
    f.expect("and more")
    assert f.stop() == 0


def test_follow_survives_rename_rotation(tmp_path: Path, follow: type[Follower]) -> None:
    path = tmp_path / "app.ndjson"
    path.write_text(line("before"))
    f = follow(str(tmp_path))
    f.expect("before")
    os.rename(path, tmp_path / "app.ndjson.1")
    # The writer has not reopened yet: its last lines go to the renamed file.
    append(tmp_path / "app.ndjson.1", line("late in the old file"))
    time.sleep(0.2)
    append(path, line("first in the new file"))
    f.expect("late in the old file")
    f.expect("first in the new file")
    append(path, line("second in the new file"))
    f.expect("second in the new file")
    assert f.stop() == 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_following_many_quiet_files_costs_little(tmp_path: Path) -> None:
    for i in range(10_000):
        (tmp_path / f"s{i}.ndjson").write_text(line(f"start {i}"))
    out = tmp_path.with_name(tmp_path.name + ".out")
    with out.open("w") as sink:
        proc = subprocess.Popen(
            [*TAIL, "--follow", str(tmp_path)], stdout=sink, stderr=subprocess.PIPE
        )
    try:
        deadline = time.monotonic() + 60
        while out.read_text().count("\n") < 10_000:
            assert time.monotonic() < deadline, "the first reading did not finish"
            time.sleep(0.2)
        before, started = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(4)
        share = (cpu_seconds(proc.pid) - before) / (time.monotonic() - started)
        append(tmp_path / "s5000.ndjson", line("news"))
        while "news" not in out.read_text():
            assert time.monotonic() < deadline + 30, "a new line was not printed"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        assert proc.stderr is not None
        proc.stderr.close()
    assert share < 0.2, f"following 10,000 quiet files took {share:.0%} of a core"


# --- 12: deep input ------------------------------------------------------------------------


def test_deep_input_never_kills_tail(tmp_path: Path) -> None:
    path = tmp_path / "app.ndjson"
    deep = '{"a":' + "[" * 100_000 + "]" * 100_000 + "}\n"
    medium = '{"message":"medium","a":' + "[" * 900 + "]" * 900 + "}\n"
    path.write_text(line("first") + deep + medium + line("last"))
    for args in ([], ["--json"], ["--level", "warn"], ["--grep", "a"]):
        run = subprocess.run([*TAIL, *args, str(path)], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stderr == ""
    human = subprocess.run([*TAIL, str(path)], capture_output=True, text=True, timeout=60)
    lines = human.stdout.splitlines()
    assert len(lines) == 4 and lines[0].endswith("first") and lines[3].endswith("last")


# --- 16: terminal escapes ---------------------------------------------------------------------

HOSTILE = "\x1b]0;owned\x07\x1b[2J\x9b31m\x7f"


def hostile_file(tmp_path: Path) -> Path:
    path = tmp_path / "app.ndjson"
    path.write_text(
        line(f"title {HOSTILE} end", extra=f"x{HOSTILE}")
        + f"not json {HOSTILE}\n"
        + line("multi\nline")
    )
    return path


def on_a_terminal(*args: str) -> str:
    """Runs `timber tail` with its output on a pseudo-terminal; what it wrote."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([*TAIL, *args], stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO once the other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=30) == 0
    assert proc.stderr is not None
    proc.stderr.close()
    return b"".join(chunks).decode("utf-8").replace("\r\n", "\n")


def assert_no_controls(text: str, allowed: str = "\n") -> None:
    bad = {c for c in text if (ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0) and c not in allowed}
    assert not bad, sorted(map(hex, map(ord, bad)))


def test_human_format_escapes_control_characters(tmp_path: Path) -> None:
    path = hostile_file(tmp_path)
    piped = subprocess.run([*TAIL, str(path)], capture_output=True, text=True, timeout=30)
    assert_no_controls(piped.stdout)
    assert "title \\x1b]0;owned\\x07\\x1b[2J\\x9b31m\\x7f end" in piped.stdout
    assert "not json \\x1b]0;owned" in piped.stdout
    assert "multi\\nline" in piped.stdout
    assert piped.stdout.count("\n") == 3

    shown = on_a_terminal(str(path))
    # Colours are the only escape sequences, and they are timber's own.
    without_colours = shown
    for seq in ("\x1b[2m", "\x1b[32m", "\x1b[0m"):
        without_colours = without_colours.replace(seq, "")
    assert_no_controls(without_colours)
    assert "\\x1b]0;owned\\x07" in shown


def test_json_is_raw_in_a_pipe_and_escaped_on_a_terminal(tmp_path: Path) -> None:
    path = hostile_file(tmp_path)
    piped = subprocess.run([*TAIL, "--json", str(path)], capture_output=True, timeout=30)
    assert piped.stdout == path.read_bytes()

    shown = on_a_terminal("--json", str(path))
    assert_no_controls(shown)
    stored = path.read_text().splitlines()
    printed = shown.splitlines()
    assert len(printed) == 3
    for before, after in zip(stored, printed, strict=True):
        if before.startswith("{"):
            assert json.loads(after) == json.loads(before)
    assert printed[1] == "not json \\u001b]0;owned\\u0007\\u001b[2J\\u009b31m\\u007f"
