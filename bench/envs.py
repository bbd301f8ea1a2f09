"""The contenders' throwaway virtualenvs under ``bench/.venvs/``: created with
pip from the pinned ``requirements-*.txt`` beside this file, and reused while
the pins and the Python version are unchanged.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH = Path(__file__).resolve().parent
CACHE = BENCH / ".venvs"

#: Virtualenv name -> its requirements file.
ENVS = {
    "timber-2.1.0": "requirements-timber-2.1.0.txt",
    "logtail": "requirements-logtail.txt",
    "otel": "requirements-otel.txt",
    "json-logger": "requirements-json-logger.txt",
}

STAMP = ".bench-stamp"


def _fingerprint(name: str) -> str:
    pins = (BENCH / ENVS[name]).read_bytes()
    return hashlib.sha256(pins + sys.version.encode()).hexdigest()


def python_of(name: str) -> Path:
    """The interpreter of the virtualenv ``name``."""
    return CACHE / name / "bin" / "python"


def ensure(name: str) -> Path:
    """The interpreter of ``name``, creating or refreshing the virtualenv."""
    env = CACHE / name
    stamp = env / STAMP
    want = _fingerprint(name)
    if stamp.exists() and stamp.read_text() == want and python_of(name).exists():
        return python_of(name)
    shutil.rmtree(env, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    subprocess.run(
        [
            str(python_of(name)),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(BENCH / ENVS[name]),
        ],
        check=True,
    )
    stamp.write_text(want)
    return python_of(name)


def ensure_all(names: list[str]) -> dict[str, Path]:
    """Every virtualenv in ``names``, set up side by side (pip mostly waits
    on the network)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(names, pool.map(ensure, names), strict=True))


def versions(python: Path, packages: list[str]) -> dict[str, str]:
    """Installed versions of ``packages`` in the environment of ``python``."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for p in sys.argv[1:]:\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: out[p] = '-'\n"
        "print(json.dumps(out))\n"
    )
    import json

    done = subprocess.run(
        [str(python), "-c", code, *packages], capture_output=True, text=True, check=True
    )
    result: dict[str, str] = json.loads(done.stdout)
    return result
