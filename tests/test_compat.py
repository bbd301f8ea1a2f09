"""The collector accepts what real clients send: the original ``timber``
2.1.0 and Better Stack's ``logtail-python`` 0.5.3, each installed from PyPI
into a throwaway virtualenv (cached under .venv/compat), log records of every
shape to a real collector, and every record arrives intact."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from conftest import Collector

ROOT = Path(__file__).resolve().parent.parent
RECORDS = 300


def client_python(name: str) -> Path:
    """The interpreter of a virtualenv holding the pinned client `name`."""
    requirements = ROOT / "bench" / f"requirements-{name}.txt"
    env = ROOT / ".venv" / "compat" / name
    python = env / "bin" / "python"
    stamp = env / "installed.txt"
    wanted = requirements.read_text()
    if not (python.exists() and stamp.exists() and stamp.read_text() == wanted):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(env)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run(
            [*pip, "-r", str(requirements)],
            check=True,
            timeout=600,
        )
        stamp.write_text(wanted)
    return python


def expected(i: int) -> dict[str, Any]:
    return {
        "i": i,
        "text": f'record {i}: ünïcödé ✓ "quoted"\nsecond line',
        "numbers": [1, -2, 2.5, 10**12, None, True, False],
        "nested": {"deep": {"deeper": {"list": [{"k": "v"}]}}},
    }


BODY = """
for i in range(RECORDS):
    event = {
        "i": i,
        "text": f"record {i}: ünïcödé ✓ \\"quoted\\"\\nsecond line",
        "numbers": [1, -2, 2.5, 10**12, None, True, False],
        "nested": {"deep": {"deeper": {"list": [{"k": "v"}]}}},
    }
    log.info("message %d ✓", i, extra={"event": event})
"""


def run_client(python: Path, setup: str, finish: str) -> None:
    code = "\n".join(
        [
            "import logging, time",
            textwrap.dedent(setup),
            "log = logging.getLogger('compat')",
            "log.setLevel(logging.INFO)",
            "log.addHandler(handler)",
            f"RECORDS = {RECORDS}",
            BODY,
            textwrap.dedent(finish),
        ]
    )
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def check(frames: list[dict[str, Any]]) -> None:
    assert len(frames) == RECORDS
    by_i = {f["event"]["i"]: f for f in frames}
    assert sorted(by_i) == list(range(RECORDS))
    for i, frame in by_i.items():
        assert frame["event"] == expected(i)
        assert frame["message"] == f"message {i} ✓"


@pytest.mark.timeout(900)
def test_timber_2_1_0(collector: Collector) -> None:
    python = client_python("timber-2.1.0")
    run_client(
        python,
        f"""
        import timber
        handler = timber.TimberHandler(api_key="k", source_id="legacy", host="{collector.url}",
                                       flush_interval=0.5, drop_extra_events=False)
        """,
        """
        handler.pipe.join()   # its flush thread has taken everything
        time.sleep(2.0)       # and a partial batch goes out one interval later
        """,
    )
    check(collector.frames("legacy"))


@pytest.mark.timeout(900)
def test_logtail_python_0_5_3(collector: Collector) -> None:
    python = client_python("logtail")
    run_client(
        python,
        f"""
        from logtail import LogtailHandler
        handler = LogtailHandler(source_token="better-stack", host="{collector.url}",
                                 drop_extra_events=False)
        """,
        """
        handler.flush()
        time.sleep(0.5)
        """,
    )
    # POST / stores under the collector's root source, never under the token.
    check(collector.frames("betterstack"))


def test_our_handler_exactly_once(collector: Collector) -> None:
    run_client(
        Path(sys.executable),
        f"""
        import timber
        handler = timber.TimberHandler(api_key="k", source_id="ours", host="{collector.url}")
        """,
        """
        handler.flush()
        """,
    )
    check(collector.frames("ours"))
