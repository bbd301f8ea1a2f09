"""`timber demo` end to end: a collector child, the documented snippet, and
every record stored exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_demo_ships_every_record(tmp_path: Path) -> None:
    out = tmp_path / "logs"
    proc = subprocess.run(
        [sys.executable, "-m", "timber", "demo", "--records", "3000", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK: every record arrived exactly once." in proc.stdout
    lines = (out / "demo.ndjson").read_text().splitlines()
    assert len(lines) == 3001
    example = json.loads(lines[0])
    assert example["order_placed"] == {"id": 1234, "total": 520.23}
    assert example["context"]["user"] == {"id": 123}
