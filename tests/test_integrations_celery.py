"""Celery: a real worker process (prefork pool, one task per child, so each
child ends with os._exit) on kombu's filesystem broker, no result backend.
Tasks published from this process inside ``timber.context(...)`` log, in the
worker, records carrying that context and ``task={id, name}``; outcome
records say how each task ended; the per-task flush delivers them although
the handler's flush interval is a minute."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import Any

import timber
from conftest import Collector
from integration_support import Process, logger_name, wait_for, write_module

WORKER_APP = """
import logging, os
import timber
from celery import Celery
from timber.integrations import celery as timber_celery

from broker import configure

app = configure(Celery("celery_app"))
# Celery leaves the root logger alone, and timber's handler with it.
app.conf.worker_hijack_root_logger = False

handler = timber.TimberHandler(flush_interval=60)
for name in ("tasks", "timber.celery"):
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
# Pool children end with os._exit(): flush after each task.
timber_celery.setup(handler, flush=True)


@app.task(name="work")
def work(n):
    logging.getLogger("tasks").info("working on %s", n, extra={"n": n})
    return n


@app.task(name="fail")
def fail():
    raise ValueError("task failed on purpose")
"""

BROKER = """
import os

def configure(app):
    folder = os.environ["BROKER_FOLDER"]
    app.conf.update(
        broker_url="filesystem://",
        broker_transport_options={
            "data_folder_in": os.path.join(folder, "queue"),
            "data_folder_out": os.path.join(folder, "queue"),
            "control_folder": os.path.join(folder, "control"),
            "processed_folder": os.path.join(folder, "processed"),
            "store_processed": True,
            "polling_interval": 0.1,
        },
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        worker_enable_remote_control=False,
    )
    return app
"""


def test_context_travels_with_tasks_to_a_prefork_worker(
    tmp_path: Path, collector: Collector, monkeypatch: Any
) -> None:
    for folder in ("queue", "control", "processed"):
        (tmp_path / "broker" / folder).mkdir(parents=True)
    write_module(tmp_path, "broker", BROKER)
    write_module(tmp_path, "celery_app", WORKER_APP)
    monkeypatch.setenv("BROKER_FOLDER", str(tmp_path / "broker"))
    monkeypatch.syspath_prepend(str(tmp_path))

    # The publishing side: its own app on the same broker, and setup().
    from broker import configure  # type: ignore[import-not-found]
    from celery import Celery

    from timber.integrations import celery as timber_celery

    timber_celery.setup()
    publisher = configure(Celery("publisher"))
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    with timber.context(user={"id": 7}, job={"when": when}):
        first = publisher.send_task("work", args=[1])
    second = publisher.send_task("work", args=[2])
    with timber.context(user={"id": 8}):
        failed = publisher.send_task("fail")
    publisher.close()

    worker = Process(
        [
            *(sys.executable, "-m", "celery", "-A", "celery_app", "worker", "-n", "w@localhost"),
            *("--pool=prefork", "--concurrency=1", "--max-tasks-per-child=1"),
            *("--without-heartbeat", "--without-gossip", "--without-mingle", "--loglevel=WARNING"),
        ],
        tmp_path,
        collector,
        "celery",
        BROKER_FOLDER=str(tmp_path / "broker"),
    )
    try:
        frames = wait_for(collector, "celery", lambda frames: len(frames) >= 5)
    finally:
        worker.stop()
    assert len(frames) == 5, worker.stderr()

    tasks = {f["n"]: f for f in frames if logger_name(f) == "tasks"}
    assert tasks[1]["context"]["user"] == {"id": 7}
    assert tasks[1]["context"]["job"] == {"when": str(when)}
    assert tasks[1]["context"]["task"] == {"id": first.id, "name": "work"}
    assert "user" not in tasks[2]["context"]
    assert tasks[2]["context"]["task"] == {"id": second.id, "name": "work"}
    assert tasks[1]["context"]["system"]["pid"] != tasks[2]["context"]["system"]["pid"]

    outcomes = {f["context"]["task"]["id"]: f for f in frames if logger_name(f) == "timber.celery"}
    assert outcomes[first.id]["level"] == "info"
    assert outcomes[first.id]["message"] == "Task work succeeded"
    assert outcomes[first.id]["context"]["user"] == {"id": 7}
    assert outcomes[second.id]["level"] == "info"
    bad = outcomes[failed.id]
    assert bad["level"] == "error"
    assert bad["context"]["user"] == {"id": 8}
    assert bad["error"]["name"] == "ValueError"
    assert bad["error"]["message"] == "task failed on purpose"
    assert bad["error"]["backtrace"][-1]["function"] == "fail"
