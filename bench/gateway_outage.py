"""A gateway through a long ClickHouse outage, with its spool on a small disk:
``timber collect --clickhouse URL --spool-dir DIR`` with nothing listening
at URL, client processes posting Timber frames to it as fast as it answers
for ``--seconds``, then SIGTERM; then ClickHouse (Debian's 18.16, run by
``tests/clickhouse_server.py``) is started on that port and a second gateway
on the same spool sends what the first kept.

Every record answered 202 must be in the table afterwards, each once (ids
are distinct per request); what did not fit must have been answered 503
with ``Retry-After``. The spool is a tmpfs of ``--disk`` where this process
may mount one (root), else a directory capped by ``--spool-max-bytes``.
Writes ``bench/results/gateway_outage.md``; the exit status is 1 if a
record answered 202 is missing.

    python bench/gateway_outage.py                 # 60 s, 4 clients, a 64 MiB tmpfs
    python bench/gateway_outage.py --seconds 10    # shorter
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import msgpack

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))

from clickhouse_server import PASSWORD, USER, ClickHouse, free_port  # noqa: E402

TOTALS = re.compile(r"(\d+) records in ClickHouse, (\d+) spooled, (\d+) dropped")
PER_REQUEST = 200
PAD = "p" * 300
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def client(args: tuple[str, int, float]) -> tuple[list[int], int, set[str | None], list[int]]:
    """Posts requests of distinct ids until `until`: the first id of each
    request answered 202, the 503s, their Retry-After values, other statuses."""
    url, worker, until = args
    accepted: list[int] = []
    refused = 0
    retry_after: set[str | None] = set()
    other: list[int] = []
    n = 0
    while time.time() < until:
        first = (worker << 40) + n * PER_REQUEST
        n += 1
        frames = [
            {"dt": "2026-11-24T10:00:00Z", "level": "info", "message": PAD, "job": {"id": i}}
            for i in range(first, first + PER_REQUEST)
        ]
        request = urllib.request.Request(
            url, data=msgpack.packb(frames), headers={"Content-Type": "application/msgpack"}
        )
        try:
            with _OPENER.open(request, timeout=60) as r:
                r.read()
                accepted.append(first)
        except urllib.error.HTTPError as e:
            with e:
                e.read()
                if e.code == 503:
                    refused += 1
                    retry_after.add(e.headers.get("Retry-After"))
                    # As a handler would: wait as asked, then send again.
                    time.sleep(float(e.headers.get("Retry-After") or 1))
                else:
                    other.append(e.code)
    return accepted, refused, retry_after, other


def gateway(flags: list[str], stderr: Path) -> tuple[subprocess.Popen[str], str]:
    with stderr.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "timber", "collect", "--listen", "127.0.0.1:0", *flags],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    assert proc.stdout is not None
    banner = proc.stdout.readline()
    match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", banner)
    if match is None:
        proc.kill()
        raise SystemExit(f"gateway did not start: {banner!r} {stderr.read_text()!r}")
    return proc, match.group(1)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(timeout=60)
    if proc.stdout is not None:
        proc.stdout.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--disk", default="64m", help="tmpfs size (mount's size=)")
    parser.add_argument("--spool-max-bytes", default="64MiB", help="without a tmpfs")
    opts = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="timber-outage-"))
    spool = root / "spool"
    spool.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={opts.disk}", "tmpfs", str(spool)],
            capture_output=True,
        ).returncode
        == 0
    )
    port = free_port()
    flags = [
        "--out", str(root / "out"), "--clickhouse", f"http://127.0.0.1:{port}",
        "--table", "outage", "--create-table", "--username", USER, "--password", PASSWORD,
        "--spool-dir", str(spool),
    ]  # fmt: skip
    if not mounted:
        flags += ["--spool-max-bytes", opts.spool_max_bytes]
    where = f"a {opts.disk} tmpfs" if mounted else f"--spool-max-bytes {opts.spool_max_bytes}"
    try:
        proc, url = gateway(flags, root / "gw1.stderr")
        until = time.time() + opts.seconds
        jobs = [(f"{url}/sources/shop/frames", w, until) for w in range(opts.clients)]
        with multiprocessing.Pool(opts.clients) as pool:
            results = pool.map(client, jobs)
        stop(proc)
        accepted = {first for r in results for first in r[0]}
        refused = sum(r[1] for r in results)
        retry_after = set().union(*(r[2] for r in results))
        other = [s for r in results for s in r[3]]
        last = (root / "gw1.stderr").read_text().splitlines()[-1]
        totals = TOTALS.search(last)
        ch = ClickHouse(root / "ch", http_port=port)
        try:
            started = time.monotonic()
            proc, _ = gateway(flags, root / "gw2.stderr")
            want = len(accepted) * PER_REQUEST
            count = 0
            while time.monotonic() - started < 600:
                try:
                    count = int(ch.query("SELECT count() FROM outage"))
                except OSError:
                    count = 0
                if count >= want:
                    break
                time.sleep(0.5)
            replay = time.monotonic() - started
            distinct = int(
                ch.query(
                    "SELECT uniqExact(LogAttributes.value[indexOf(LogAttributes.key, 'job.id')]) "
                    "FROM outage"
                )
            )
            stop(proc)
        finally:
            ch.close()
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(spool)], check=False)
    ok = count == want and distinct == want and totals is not None and totals.group(3) == "0"
    lines = [
        "# A gateway through a ClickHouse outage (`bench/gateway_outage.py`)",
        "",
        f"{opts.seconds:.0f} s outage, {opts.clients} client processes posting {PER_REQUEST} "
        f"frames per request as fast as answered (waiting `Retry-After` after a 503), "
        f"the spool on {where}; then SIGTERM, ClickHouse 18.16 started, a second gateway "
        "on the same spool.",
        "",
        "| | |",
        "|---|---|",
        f"| records answered 202 | {want:,} |",
        f"| requests answered 503 | {refused:,} (Retry-After: {sorted(map(str, retry_after))}) |",
        f"| other answers | {len(other)} |",
        f"| first gateway's last line | `{last}` |",
        f"| rows in the table after the restart | {count:,} ({distinct:,} distinct ids) |",
        f"| from the second gateway's start to the last row | {replay:.1f} s |",
        f"| every record answered 202 stored once | {'yes' if ok else 'NO'} |",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    (BENCH / "results" / "gateway_outage.md").write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
