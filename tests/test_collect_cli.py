"""`timber collect` and the `timber-collector` binary share one command line:
the same flags, the same answers to mistakes, the same exit codes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest

from conftest import Collector

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def collector_binary() -> Path:
    """The `timber-collector` binary, built (or found up to date) by cargo."""
    subprocess.run(
        [
            "cargo",
            "build",
            "--locked",
            "--quiet",
            "-p",
            "timber-collector",
            "--bin",
            "timber-collector",
        ],
        cwd=ROOT,
        check=True,
        timeout=600,
    )
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "debug" / "timber-collector"


def run_both(binary: Path, args: list[str], tmp_path: Path) -> list[tuple[int, str, str]]:
    """Runs the binary and `timber collect` with `args`; returns each one's exit
    code, stdout and stderr, with its own name replaced by PROG."""
    env = {k: v for k, v in os.environ.items() if k != "TIMBER_API_KEY"}
    results = []
    for prog, command in (
        ("timber-collector", [str(binary)]),
        ("timber collect", [sys.executable, "-m", "timber", "collect"]),
    ):
        run = subprocess.run(
            [*command, *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=tmp_path,
        )
        results.append(
            (run.returncode, run.stdout.replace(prog, "PROG"), run.stderr.replace(prog, "PROG"))
        )
    return results


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--max-body", "0"], 2, "at least 1 byte"),
        (["--max-body", "lots"], 2, "not a size"),
        (["--max-body=1.5MiB"], 2, "not a size"),
        (["--listen"], 2, "needs a value"),
        (["--fsync=yes"], 2, "takes no value"),
        (["--no-such-flag"], 2, "unknown argument"),
        (["stray"], 2, "unknown argument"),
        (["--listen", "nonsense"], 1, "invalid listen address"),
        (["--help"], 0, "--max-body SIZE"),
        (["-h"], 0, "usage: PROG"),
    ],
)
def test_both_command_lines_agree(
    collector_binary: Path, tmp_path: Path, args: list[str], code: int, needle: str
) -> None:
    binary, python = run_both(collector_binary, args, tmp_path)
    assert binary == python
    status, stdout, stderr = binary
    assert status == code, stderr
    assert needle in (stdout if code == 0 else stderr)
    if code:
        assert stderr.startswith("PROG: ")


GATEWAY_FLAGS = (
    "--clickhouse",
    "--table",
    "--create-table",
    "--username",
    "--password",
    "--spool-dir",
    "--spool-max-bytes",
)


def test_both_accept_the_same_flags(
    collector_binary: Path, tmp_path: Path, start_collector: Callable[..., Collector]
) -> None:
    """Every flag in the usage text starts the Python command; the binary
    documents the same list."""
    _, (_, usage, _) = run_both(collector_binary, ["--help"], tmp_path)
    flags = sorted(set(re.findall(r"^\s+(--[a-z-]+)", usage, re.M)))
    assert "--max-body" in flags and "--quiet" in flags
    values = {
        "--api-key": "k",
        "--max-body": "1MiB",
        "--root-source": "rooted",
        "--max-open-files": "8",
        "--max-connections": "16",
        "--read-timeout": "5s",
        "--idle-timeout": "5s",
        "--max-memory": "64MiB",
    }
    args: list[str] = []
    for flag in flags:
        if flag in ("--listen", "--out"):
            continue  # the fixture sets them
        if flag in GATEWAY_FLAGS:
            continue  # they need a ClickHouse server: test_gateway.py starts them
        args += [flag, values[flag]] if flag in values else [flag]
    c = start_collector(*args)
    status, _ = c.post(
        "/sources/a/frames", msgpack.packb({"m": 1}), headers={"Authorization": "Bearer k"}
    )
    assert status == 202
