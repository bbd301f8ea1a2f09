"""One version number: the installed package's, `timber.__version__`, each
crate's, the version every path dependency names, and `timber --version`."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import timber

ROOT = Path(__file__).resolve().parent.parent


def cargo_metadata() -> dict[str, Any]:
    proc = subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1", "--locked"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    metadata: dict[str, Any] = json.loads(proc.stdout)
    return metadata


def test_package_crates_and_command_share_one_version() -> None:
    packages = cargo_metadata()["packages"]
    crates = {p["name"]: p for p in packages}
    assert set(crates) >= {"timber-core", "timber-py", "timber-collector", "timber-tracing"}
    the_version = crates["timber-py"]["version"]

    assert version("timber") == the_version
    assert timber.__version__ == the_version
    assert {p["name"]: p["version"] for p in packages} == dict.fromkeys(crates, the_version)
    # A published crate depends on the version beside the path: the same one.
    path_deps = [d for p in packages for d in p["dependencies"] if d.get("path")]
    assert path_deps, "the crates depend on each other by path"
    assert {(d["name"], d["req"]) for d in path_deps} == {
        (d["name"], f"={the_version}") for d in path_deps
    }

    proc = subprocess.run(
        [sys.executable, "-m", "timber", "--version"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"timber {the_version}\n"
