"""Forks wherever they happen: a storm of forks while another thread logs
(the children never hang and every record arrives), and each process's own
counts at exit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Collector

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_a_fork_storm_while_a_thread_logs_hangs_no_child(start_collector: object) -> None:
    # bench/fork_storm.py runs 20 rounds; a few fresh interpreters here,
    # each forking 50 children while its first records are being logged.
    collector: Collector = start_collector("--quiet", "--api-key", "k")  # type: ignore[operator]
    rounds, forks, records = 4, 50, 100
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fork_storm.py"), "--host", collector.url]
        + ["--rounds", str(rounds), "--forks", str(forks), "--records", str(records)]
        + ["--wait", "20"],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr
    summaries = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [s["hung"] for s in summaries] == [0] * rounds, summaries
    frames = collector.frames("storm")
    children = [f["who"] for f in frames if f["who"]["pid"] > 0]
    parents = [f["who"] for f in frames if f["who"]["pid"] == 0]
    assert len(children) == rounds * forks * records
    assert len({(w["round"], w["pid"], w["i"]) for w in children}) == len(children)
    assert len(parents) == sum(s["parent_logged"] for s in summaries)
