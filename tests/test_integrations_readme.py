"""The Integrations page's examples (docs/integrations.md), as written, each
in a fresh interpreter against a local endpoint (TIMBER_HOST): their records
arrive with the fields the page promises. (Django's settings are run by
test_integrations_django; Celery's needs a Redis broker.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fault_server import FaultServer, run_python, timber_env

INTEGRATIONS = Path(__file__).resolve().parent.parent / "docs" / "integrations.md"


def examples() -> dict[str, str]:
    """The first python block under each ## heading of the Integrations page."""
    text = INTEGRATIONS.read_text("utf-8")
    assert text.startswith("# Integrations\n")
    found = {}
    for part in text.split("\n## ")[1:]:
        title, body = part.split("\n", 1)
        block = re.search(r"```python\n(.*?)```", body, re.S)
        if block:
            found[title.split(":")[0]] = block.group(1)
    return found


def run(server: FaultServer, code: str) -> None:
    env = timber_env(server.host, api_key="YOUR_API_KEY", source_id="YOUR_SOURCE_ID")
    proc = run_python(code, env, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_every_integration_has_an_example() -> None:
    assert set(examples()) == {
        "ASGI",
        "WSGI",
        "Django",
        "Celery",
        "structlog",
        "loguru",
        "Short-lived runtimes",
    }


@pytest.mark.parametrize(
    ("name", "client"),
    [
        (
            "ASGI",
            "from starlette.testclient import TestClient\n"
            "print(TestClient(app).get('/orders/5', headers={'X-Request-ID': 'r1'}).json())\n",
        ),
        (
            "WSGI",
            "print(app.test_client().get('/hello', headers={'X-Request-ID': 'r1'},"
            " buffered=True).text)\n",
        ),
    ],
)
def test_web_examples(server: FaultServer, name: str, client: str) -> None:
    run(server, examples()[name] + client)
    logged, access = server.wait_for_frames(2)
    assert logged["context"]["request"]["id"] == "r1"
    assert access["context"]["request"]["id"] == "r1"
    assert access["status"] == 200


def test_structlog_example(server: FaultServer) -> None:
    run(server, examples()["structlog"])
    (frame,) = server.wait_for_frames(1)
    assert frame["message"] == "Order placed"
    assert frame["order"] == {"id": 1234, "total": 520.23}


def test_loguru_example(server: FaultServer) -> None:
    run(server, examples()["loguru"])
    (frame,) = server.wait_for_frames(1)
    assert frame["message"] == "Order 1234 placed"
    assert frame["order"] == {"id": 1234}


def test_flush_after_example(server: FaultServer) -> None:
    code = examples()["Short-lived runtimes"]
    run(server, code + "lambda_handler({'n': 1}, None)\nimport os\nos._exit(0)\n")
    (frame,) = server.wait_for_frames(1)
    assert frame["message"] == "Invoked"
    assert frame["event"] == {"n": 1}
