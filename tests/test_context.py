"""Context: nests and merges per top-level key, unwinds on exit and on
exceptions, and is isolated per thread and per asyncio task."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

import pytest

import timber


def frame_context(ctx: timber.TimberContext | None = None) -> dict[str, Any]:
    record = logging.getLogger("ctx").makeRecord("ctx", 20, "f.py", 1, "m", (), None)
    frame = json.loads(timber.Formatter(context=ctx).format(record))
    custom = dict(frame["context"])
    del custom["runtime"], custom["system"]
    return custom


def test_nests_and_merges_as_documented() -> None:
    with timber.context(job={"id": 123, "count": 1}):
        assert frame_context() == {"job": {"id": 123, "count": 1}}
        with timber.context(job={"count": 2}):
            assert frame_context() == {"job": {"id": 123, "count": 2}}
            with timber.context(user={"id": 9}):
                assert timber.context.collapse() == {
                    "job": {"id": 123, "count": 2},
                    "user": {"id": 9},
                }
        assert frame_context() == {"job": {"id": 123, "count": 1}}
    assert frame_context() == {}
    assert not timber.context.exists()


def test_unwinds_when_an_exception_leaves_the_block() -> None:
    with pytest.raises(RuntimeError):
        with timber.context(request={"id": 1}):
            assert timber.context.exists()
            raise RuntimeError("boom")
    assert not timber.context.exists()
    assert frame_context() == {}


def test_one_block_object_entered_by_several_tasks() -> None:
    async def use(block: Any, name: str) -> tuple[str, Any]:
        with block, timber.context(who={"name": name}):
            await asyncio.sleep(0.01)
            return name, timber.context.collapse()["who"]

    async def main() -> list[tuple[str, Any]]:
        shared = timber.context(req={"id": 1})
        return await asyncio.gather(use(shared, "a"), use(shared, "b"))

    for name, who in asyncio.run(main()):
        assert who == {"name": name}
    assert not timber.context.exists()


def test_reserved_keys_raise_value_error() -> None:
    with pytest.raises(ValueError, match="reserved"):
        timber.context(runtime={"x": 1})


def test_bad_arguments_raise_value_error() -> None:
    with pytest.raises(ValueError, match="keyword"):
        timber.context({"job": 1})
    with pytest.raises(ValueError, match="must be a dict"):
        timber.context(job=5)
    with pytest.raises(ValueError, match="TimberContext"):
        timber.Formatter(context={"not": "a context"})  # type: ignore[arg-type]


def test_independent_context_objects() -> None:
    mine = timber.TimberContext()
    with mine(job={"id": 1}):
        assert frame_context(mine) == {"job": {"id": 1}}
        assert frame_context() == {}
        assert mine.exists() and not timber.context.exists()


def test_global_context_is_seen_by_every_thread() -> None:
    ctx = timber.TimberContext()
    ctx.set_global(service={"name": "api"})
    seen: list[dict[str, Any]] = []
    t = threading.Thread(target=lambda: seen.append(frame_context(ctx)))
    t.start()
    t.join()
    assert seen == [{"service": {"name": "api"}}]
    with ctx(service={"version": "1.2"}):
        assert frame_context(ctx) == {"service": {"name": "api", "version": "1.2"}}
    ctx.clear_global()
    assert frame_context(ctx) == {}


def test_threads_never_see_each_others_context() -> None:
    barrier = threading.Barrier(16)
    wrong: list[Any] = []

    def work(i: int) -> None:
        with timber.context(request={"id": i}):
            barrier.wait()
            for _ in range(50):
                got = frame_context()
                if got != {"request": {"id": i}}:
                    wrong.append(got)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_asyncio_tasks_never_see_each_others_context() -> None:
    async def task(i: int) -> bool:
        with timber.context(task={"id": i}):
            await asyncio.sleep(0)
            ok = frame_context() == {"task": {"id": i}}
            await asyncio.sleep(0)
            return ok and frame_context() == {"task": {"id": i}}

    async def main() -> list[bool]:
        return await asyncio.gather(*(task(i) for i in range(1000)))

    assert all(asyncio.run(main()))
