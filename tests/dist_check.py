"""`make dist-check`: the wheel in dist/ is what it says.

- `auditwheel show` finds it consistent with manylinux2014 (glibc 2.17) or
  older, and its name says manylinux2014 and abi3;
- it installs into a fresh venv of each of CPython 3.10 to 3.13 (from pyenv)
  and, with no cargo or rustc on PATH, imports from that venv and delivers
  the README's seed example to a `timber collect` (the wheel's own) on
  127.0.0.1, whose stored frames are checked;
- the sdist builds and installs on its own in a fresh venv (with Rust), and
  the package it installs delivers the same example.

Run by `make dist-check` with the build venv's Python; prints the wheel's
size and each step's time. Exits non-zero at the first failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"
VERSIONS = ["3.10", "3.11", "3.12", "3.13"]
# manylinux2014 is glibc 2.17: a wheel needing no newer glibc installs on
# every host that policy covers.
NEWEST_GLIBC = (2, 17)

SEED = """
import logging
import timber

logger = logging.getLogger(__name__)
# Set to logging.DEBUG if you want all logs
logger.setLevel(logging.INFO)

timber_handler = timber.TimberHandler(source_id='YOUR_SOURCE_ID', api_key='YOUR_API_KEY')
logger.addHandler(timber_handler)

def myFunc():
    with timber.context(user={'id': 123}):
        logger.info('Order #1234 placed, total: $520.23', extra={
          'order_placed': {
            'id': 1234,
            'total': 520.23
          }
        })
myFunc()
"""


def fail(message: str) -> NoReturn:
    print(f"dist-check: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        fail(f"{' '.join(command)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc


def the_one(pattern: str) -> Path:
    found = sorted(DIST.glob(pattern))
    if len(found) != 1:
        fail(f"expected one {pattern} in dist/, found {[p.name for p in found]} (run make dist)")
    return found[0]


def pyenv_python(version: str) -> Path:
    """The newest pyenv CPython `version`; pyenv's root asked of pyenv itself
    when it is installed, else the default under the home directory."""
    root = os.environ.get("PYENV_ROOT")
    if root is None and shutil.which("pyenv"):
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip()
    base = Path(root or Path.home() / ".pyenv") / "versions"
    candidates = sorted(
        base.glob(f"{version}.*/bin/python{version}"),
        key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.parent.name)],
    )
    if not candidates:
        fail(f"no CPython {version} under {base}")
    return candidates[-1]


def without_rust(path: str) -> str:
    """`path` without the directories that hold cargo or rustc."""
    kept = [
        d
        for d in path.split(os.pathsep)
        if d and not any(os.access(Path(d) / tool, os.X_OK) for tool in ("cargo", "rustc"))
    ]
    return os.pathsep.join(kept)


def check_auditwheel(wheel: Path) -> None:
    proc = run([sys.executable, "-m", "auditwheel", "show", str(wheel)])
    text = " ".join(proc.stdout.split())
    print(f"auditwheel show: {text}")
    tags = re.findall(r'platform tag(?: to)?:? "(manylinux_(\d+)_(\d+)_x86_64)"', text)
    if not tags:
        fail(f"auditwheel names no manylinux platform tag: {text}")
    for tag, major, minor in tags:
        if (int(major), int(minor)) > NEWEST_GLIBC:
            fail(f"the wheel needs {tag}, newer than manylinux2014")
    if "manylinux2014_x86_64" not in wheel.name or "-abi3-" not in wheel.name:
        fail(f"{wheel.name} is not tagged abi3 manylinux2014_x86_64")


def venv(python: Path, where: Path, env: dict[str, str]) -> Path:
    run([str(python), "-m", "venv", str(where)], env=env)
    return where / "bin"


def ship_seed(bin_dir: Path, work: Path, env: dict[str, str]) -> None:
    """Starts the venv's `timber collect`, runs the seed example with the
    venv's Python and checks the stored frame."""
    out = work / "logs"
    collector = subprocess.Popen(
        [str(bin_dir / "timber"), "collect", "--listen", "127.0.0.1:0", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "TIMBER_API_KEY": "YOUR_API_KEY"},
        cwd=work,
    )
    try:
        assert collector.stdout is not None
        banner = collector.stdout.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", banner)
        if match is None:
            fail(f"timber collect did not start: {banner!r}")
        where = run(
            [str(bin_dir / "python"), "-c", "import timber._engine as e; print(e.__file__)"],
            env=env,
            cwd=work,
        ).stdout.strip()
        if not Path(where).is_relative_to(bin_dir.parent):
            fail(f"timber was imported from {where}, not from the fresh venv")
        run([str(bin_dir / "python"), "-c", SEED], env={**env, "TIMBER_HOST": match[1]}, cwd=work)
    finally:
        collector.send_signal(signal.SIGTERM)
        try:
            collector.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            collector.kill()
            collector.communicate()
    stored = out / "YOUR_SOURCE_ID.ndjson"
    if not stored.exists():
        found = sorted(p.name for p in out.glob("*"))
        fail(f"the collector stored nothing for YOUR_SOURCE_ID (found {found})")
    frames = [json.loads(line) for line in stored.read_text("utf-8").splitlines()]
    if len(frames) != 1:
        fail(f"expected the seed frame, {stored} holds {len(frames)}")
    frame = frames[0]
    expected = {
        "level": "info",
        "severity": 2,
        "message": "Order #1234 placed, total: $520.23",
        "order_placed": {"id": 1234, "total": 520.23},
    }
    # The seed's keys, with `severity` after `level` as the original client
    # wrote it.
    if list(frame) != ["dt", "level", "severity", "message", "order_placed", "context"]:
        fail(f"the stored frame's keys are not the seed's: {frame}")
    if {k: frame[k] for k in expected} != expected:
        fail(f"the stored frame is not the seed's: {frame}")
    context = frame["context"]
    if context["user"] != {"id": 123} or context["runtime"]["function"] != "myFunc":
        fail(f"the stored frame's context is not the seed's: {frame['context']}")


def check_wheel_on(version: str, wheel: Path, base: Path) -> None:
    started = time.monotonic()
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    env = {k: v for k, v in env.items() if not k.startswith(("CARGO", "RUSTUP"))}
    env["PATH"] = without_rust(env.get("PATH", ""))
    python = pyenv_python(version)
    work = base / f"py{version}"
    work.mkdir()
    bin_dir = venv(python, work / "venv", env)
    env["PATH"] = os.pathsep.join([str(bin_dir), env["PATH"]])
    for tool in ("cargo", "rustc"):
        if shutil.which(tool, path=env["PATH"]) is not None:
            fail(f"{tool} is still on PATH")
    run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-index", str(wheel)], env=env)
    ship_seed(bin_dir, work, env)
    print(
        f"CPython {version} ({python.parent.parent.name}): wheel installed without Rust, "
        f"seed frame delivered ({time.monotonic() - started:.1f} s)"
    )


def check_sdist(sdist: Path, base: Path) -> None:
    started = time.monotonic()
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    # Its own build: none of this checkout's compiled artefacts.
    env.pop("CARGO_TARGET_DIR", None)
    work = base / "sdist"
    work.mkdir()
    bin_dir = venv(Path(sys.executable).resolve(), work / "venv", env)
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    run([str(bin_dir / "python"), "-m", "pip", "install", "-q", str(sdist)], env=env, cwd=work)
    ship_seed(bin_dir, work, env)
    print(
        f"sdist {sdist.name}: built and installed in a fresh venv, seed frame delivered "
        f"({time.monotonic() - started:.1f} s)"
    )


def main(argv: list[str]) -> int:
    wheel = the_one("timber-*-cp310-abi3-*.whl")
    sdist = the_one("timber-*.tar.gz")
    print(f"{wheel.name}: {wheel.stat().st_size / 1e6:.2f} MB")
    print(f"{sdist.name}: {sdist.stat().st_size / 1e6:.2f} MB")
    check_auditwheel(wheel)
    with tempfile.TemporaryDirectory(prefix="timber-dist-check-") as tmp:
        for version in VERSIONS:
            check_wheel_on(version, wheel, Path(tmp))
        if "--no-sdist" not in argv:
            check_sdist(sdist, Path(tmp))
    print("dist-check: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
