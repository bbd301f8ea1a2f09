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
    # bench/fork_storm.py: 20 fresh interpreters, each forking 50 children
    # while its first records are being logged.
    collector: Collector = start_collector("--quiet", "--api-key", "k")  # type: ignore[operator]
    rounds, forks, records = 20, 50, 100
    proc = subprocess.run(
        [
            *(sys.executable, str(ROOT / "bench" / "fork_storm.py"), "--host", collector.url),
            *("--rounds", str(rounds), "--forks", str(forks), "--records", str(records)),
            *("--wait", "20"),
        ],
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


CFORK = """
import ctypes, json, logging, os, sys
import timber

handler = timber.TimberHandler(api_key="k", source_id="cfork", host=sys.argv[1])
log = logging.getLogger("cfork")
log.setLevel(logging.INFO)
log.addHandler(handler)
log.info("parent", extra={"who": {"pid": 0}})
# fork() from C, as uWSGI forks its workers: os.register_at_fork hooks
# never run for it.
pid = ctypes.CDLL(None, use_errno=True).fork()
if pid == 0:
    for i in range(10):
        log.info("child", extra={"who": {"pid": 1, "i": i}})
    handler.flush()
    print(json.dumps(handler.stats()), flush=True)
    handler.close()
    os._exit(0)
os.waitpid(pid, 0)
handler.close()
print(json.dumps(handler.stats()))
"""


def test_a_fork_made_in_c_gives_the_child_its_own_engine(collector: Collector) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CFORK, collector.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    child, parent = (json.loads(line) for line in proc.stdout.splitlines())
    # Each process counts its own records only.
    assert (child["accepted"], child["sent"], child["dropped"]) == (10, 10, 0)
    assert (parent["accepted"], parent["sent"], parent["dropped"]) == (1, 1, 0)
    assert "not delivered" not in proc.stderr
    frames = collector.frames("cfork")
    assert sorted(f["who"]["pid"] for f in frames) == [0] + [1] * 10
