"""A fork storm: forks while another thread logs, in fresh interpreters.

Each round is a new process: a thread starts logging (its first records
are the first the process logs) while the main thread forks ``--forks``
children at once; each child logs ``--records`` records and exits. A child
that has not exited within ``--wait`` seconds counts as hung (and is
killed). Prints one JSON line per round: children exited and hung, and
records logged, by parent and children, to the host given (``timber
collect`` counts what arrived).

    .venv/bin/python bench/fork_storm.py --host http://127.0.0.1:8765 [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

ROUND = """
import json, logging, os, signal, sys, threading, time
import timber

FORKS, RECORDS, WAIT, ROUND = {forks}, {records}, {wait}, {round}
handler = timber.TimberHandler(api_key="k", source_id="storm", host={host!r},
                               flush_interval=0.2)
log = logging.getLogger("storm")
log.setLevel(logging.INFO)
log.addHandler(handler)
parent_logged = 0
stop = threading.Event()

def parent_thread():
    global parent_logged
    while not stop.is_set():
        log.info("parent %d", parent_logged,
                 extra={{"who": {{"round": ROUND, "pid": 0, "i": parent_logged}}}})
        parent_logged += 1

t = threading.Thread(target=parent_thread)
t.start()
children = []
for n in range(FORKS):
    pid = os.fork()
    if pid == 0:
        for i in range(RECORDS):
            log.info("child %d", i, extra={{"who": {{"round": ROUND, "pid": n + 1, "i": i}}}})
        handler.close()
        os._exit(0)
    children.append(pid)
stop.set()
t.join()
deadline = time.monotonic() + WAIT
hung = set(children)
while hung and time.monotonic() < deadline:
    for pid in list(hung):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            hung.discard(pid)
    time.sleep(0.02)
for pid in hung:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
handler.close()
print(json.dumps({{"round": ROUND, "exited": FORKS - len(hung), "hung": len(hung),
                   "parent_logged": parent_logged, "child_logged": (FORKS - len(hung)) * RECORDS}}))
"""


def run_round(host: str, n: int, forks: int, records: int, wait: float) -> dict[str, int]:
    """One round in a fresh interpreter; its summary."""
    code = textwrap.dedent(ROUND).format(
        host=host, forks=forks, records=records, wait=wait, round=n
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=wait + 120
    )
    if proc.returncode != 0:
        raise RuntimeError(f"round {n} failed: {proc.stderr}")
    summary: dict[str, int] = json.loads(proc.stdout.strip().splitlines()[-1])
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", required=True, help="a collector's URL (api key k)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--forks", type=int, default=50)
    ap.add_argument("--records", type=int, default=100)
    ap.add_argument("--wait", type=float, default=30.0, help="seconds before a child is hung")
    args = ap.parse_args()
    for n in range(args.rounds):
        print(json.dumps(run_round(args.host, n, args.forks, args.records, args.wait)))


if __name__ == "__main__":
    main()
