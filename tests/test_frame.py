"""The frame: the seed's shape, the same from the handler (msgpack) and the
formatter (JSON), and values JSON cannot hold never losing their record."""

from __future__ import annotations

import datetime
import json
import logging
import random
import re
import sys
from typing import Any

import pytest

import timber
from fault_server import FaultServer

DT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def make_record(
    msg: str = "hello %s",
    args: Any = ("world",),
    level: int = logging.INFO,
    extra: dict[str, Any] | None = None,
    exc_info: Any = None,
) -> logging.LogRecord:
    logger = logging.getLogger("frame.test")
    return logger.makeRecord(
        "frame.test", level, "/src/app/file.py", 23, msg, args, exc_info, "myFunc", extra
    )


def ship(server: FaultServer, *records: logging.LogRecord, **kw: Any) -> list[dict[str, Any]]:
    h = timber.TimberHandler(api_key="k", source_id="s", host=server.host, **kw)
    for r in records:
        h.handle(r)
    h.flush()
    h.close()
    return server.wait_for_frames(len(records))


def test_seed_example_produces_the_documented_frame(server: FaultServer) -> None:
    logger = logging.getLogger("logger")
    logger.setLevel(logging.INFO)
    handler = timber.TimberHandler(source_id="YOUR_SOURCE_ID", api_key="KEY", host=server.host)
    logger.addHandler(handler)
    try:

        def myFunc() -> None:
            with timber.context(user={"id": 123}):
                logger.info(
                    "Order #1234 placed, total: $520.23",
                    extra={"order_placed": {"id": 1234, "total": 520.23}},
                )

        myFunc()
        handler.flush()
    finally:
        logger.removeHandler(handler)
        handler.close()
    [frame] = server.wait_for_frames(1)
    assert list(frame) == ["dt", "level", "severity", "message", "order_placed", "context"]
    assert DT.match(frame["dt"])
    assert frame["level"] == "info"
    assert frame["severity"] == 2
    assert frame["message"] == "Order #1234 placed, total: $520.23"
    assert frame["order_placed"] == {"id": 1234, "total": 520.23}
    ctx = frame["context"]
    assert list(ctx) == ["runtime", "system", "user"]
    runtime = ctx["runtime"]
    assert runtime["function"] == "myFunc"
    assert runtime["file"] == "test_frame.py"
    assert isinstance(runtime["line"], int)
    assert isinstance(runtime["thread_id"], str) and runtime["thread_id"].isdigit()
    assert runtime["thread_name"] == "MainThread"
    assert runtime["logger_name"] == "logger"
    assert set(ctx["system"]) == {"pid", "process_name", "hostname"}
    assert ctx["user"] == {"id": 123}
    [req] = server.requests
    assert req.path == "/sources/YOUR_SOURCE_ID/frames"
    assert req.headers["authorization"] == "Bearer KEY"
    assert req.headers["content-type"] == "application/msgpack"


def test_handler_and_formatter_produce_the_same_frame(server: FaultServer) -> None:
    class Odd:
        def __str__(self) -> str:
            return "odd!"

    cyclic: dict[str, Any] = {"name": "loop"}
    cyclic["self"] = cyclic
    record = make_record(
        extra={
            "event": {"when": datetime.datetime(2020, 1, 2, 3, 4, 5), "tags": {"b"}},
            "values": [b"\xffok", (1, 2), float("nan"), float("-inf"), 2**70, "\udc80", Odd()],
            "cyclic": cyclic,
            "plain": 5,
        }
    )
    with timber.context(request={"id": "r1"}):
        text = timber.Formatter().format(record)
        [shipped] = ship(server, record)
    formatted = json.loads(text)
    assert formatted == shipped
    assert "\n" not in text
    assert formatted["event"] == {"when": "2020-01-02T03:04:05", "tags": ["b"]}
    assert formatted["values"] == [
        "\\xffok",
        [1, 2],
        "NaN",
        "-Infinity",
        str(2**70),
        "\\udc80",
        "odd!",
    ]
    assert formatted["cyclic"] == {"name": "loop", "self": "<cycle>"}
    assert formatted["plain"] == 5
    assert formatted["context"]["request"] == {"id": "r1"}


def test_deep_nesting_is_cut_with_a_marker() -> None:
    deep: Any = "bottom"
    for _ in range(100):
        deep = [deep]
    frame = json.loads(timber.Formatter().format(make_record(extra={"deep": deep})))
    text = json.dumps(frame["deep"])
    assert "<too deep>" in text
    assert "bottom" not in text


def test_levels_including_custom_names() -> None:
    logging.addLevelName(25, "NOTICE")
    names = {}
    for level in (logging.DEBUG, logging.INFO, 25, logging.WARNING, logging.ERROR, 50, 7):
        names[level] = json.loads(timber.Formatter().format(make_record(level=level)))["level"]
    assert names == {
        10: "debug",
        20: "info",
        25: "notice",
        30: "warn",
        40: "error",
        50: "critical",
        7: "level 7",
    }


LEVELS = (logging.DEBUG, logging.INFO, 25, logging.WARNING, logging.ERROR, 50, 7, 0)


def test_severity_as_the_original_timber_client_sent_it(server: FaultServer) -> None:
    # timber 2.1.0's create_frame: frame['severity'] = int(r['levelno'] / 10),
    # right after `level`, custom levels included.
    frames = ship(server, *(make_record(level=level) for level in LEVELS))
    assert [f["severity"] for f in frames] == [int(level / 10) for level in LEVELS]
    assert all(list(f)[:4] == ["dt", "level", "severity", "message"] for f in frames)
    # The formatter writes the same frame.
    formatted = [json.loads(timber.Formatter().format(make_record(level=lv))) for lv in LEVELS]
    assert [f["severity"] for f in formatted] == [int(level / 10) for level in LEVELS]


def test_severity_as_logtail_python_sends_it_to_better_stack(server: FaultServer) -> None:
    # logtail-python 0.5.3's create_frame sends the same field, computed the
    # same way, beside its lower-case level name.
    h = timber.TimberHandler(destination="betterstack", api_key="tok", host=server.host)
    for level in LEVELS:
        h.handle(make_record(level=level))
    h.flush()
    h.close()
    frames = server.wait_for_frames(len(LEVELS))
    assert [f["severity"] for f in frames] == [int(level / 10) for level in LEVELS]
    assert [f["level"] for f in frames][:2] == ["debug", "info"]


def test_an_extra_named_severity_never_replaces_it() -> None:
    frame = json.loads(timber.Formatter().format(make_record(extra={"severity": "high"})))
    assert frame["severity"] == 2
    assert frame["extra_severity"] == "high"


def test_exception_becomes_structured_error() -> None:
    def inner() -> None:
        raise KeyError("missing")

    try:
        inner()
    except KeyError:
        record = make_record(msg="lookup failed", args=(), exc_info=sys.exc_info())
    frame = json.loads(timber.Formatter().format(record))
    assert frame["message"] == "lookup failed"
    error = frame["error"]
    assert error["name"] == "KeyError"
    assert error["message"] == "'missing'"
    assert [f["function"] for f in error["backtrace"]] == [
        "test_exception_becomes_structured_error",
        "inner",
    ]
    assert all(f["file"].endswith("test_frame.py") for f in error["backtrace"])
    assert list(frame)[-2:] == ["error", "context"]


def test_extras_named_like_frame_fields_do_not_overwrite_them() -> None:
    frame = json.loads(
        timber.Formatter().format(make_record(extra={"level": {"x": 1}, "dt": "never"}))
    )
    assert frame["level"] == "info"
    assert frame["extra_level"] == {"x": 1}
    assert frame["extra_dt"] == "never"
    both = json.loads(
        timber.Formatter().format(make_record(extra={"dt": "mine", "extra_dt": "also mine"}))
    )
    assert both["extra_dt"] == "also mine"
    assert both["_extra_dt"] == "mine"


def test_task_name_is_an_extra_before_python_3_12() -> None:
    if sys.version_info >= (3, 12):
        # LogRecord has its own taskName there, and logging refuses the extra.
        with pytest.raises(KeyError):
            make_record(extra={"taskName": "job-7"})
        return
    frame = json.loads(timber.Formatter().format(make_record(extra={"taskName": "job-7"})))
    assert frame["taskName"] == "job-7"


def test_include_extra_attributes_false_keeps_only_dict_extras(server: FaultServer) -> None:
    record = make_record(extra={"event": {"id": 1}, "user_id": 7})
    [frame] = ship(server, record, include_extra_attributes=False)
    assert frame["event"] == {"id": 1}
    assert "user_id" not in frame


def test_bad_format_arguments_still_send_the_record(server: FaultServer) -> None:
    record = make_record(msg="%d items", args=("many",))
    [frame] = ship(server, record)
    assert frame["message"].startswith("%d items (message formatting failed:")
    assert "'many'" in frame["message"]


def test_json_default_and_encoder_take_precedence() -> None:
    class Money:
        def __init__(self, cents: int) -> None:
            self.cents = cents

    def default(o: Any) -> Any:
        if isinstance(o, Money):
            return {"cents": o.cents}
        raise TypeError

    record = make_record(extra={"price": Money(520), "when": datetime.date(2020, 1, 1)})
    frame = json.loads(timber.Formatter(json_default=default).format(record))
    assert frame["price"] == {"cents": 520}
    assert frame["when"] == "2020-01-01"

    class Encoder(json.JSONEncoder):
        def default(self, o: Any) -> Any:
            if isinstance(o, Money):
                return f"${o.cents / 100:.2f}"
            if isinstance(o, datetime.date):
                return "a date"
            return super().default(o)

    frame = json.loads(timber.Formatter(json_encoder=Encoder).format(record))
    assert frame["price"] == "$5.20"
    assert frame["when"] == "a date"
    assert list(frame)[:6] == ["dt", "level", "severity", "message", "price", "when"]

    class Failing(json.JSONEncoder):
        pass

    # An encoder that cannot encode a value falls back to timber's conversion.
    frame = json.loads(timber.Formatter(json_encoder=Failing).format(record))
    assert frame["when"] == "2020-01-01"
    assert frame["price"].startswith("<")


def test_a_created_time_that_is_no_time_becomes_the_time_of_the_call(
    server: FaultServer,
) -> None:
    def no_time(record: logging.LogRecord) -> bool:
        record.created = float("nan") if record.msg == "nan" else float("inf")
        return True

    h = timber.TimberHandler(api_key="k", source_id="s", host=server.host)
    h.addFilter(no_time)
    before = datetime.datetime.now(datetime.timezone.utc)
    h.handle(make_record("nan", ()))
    h.handle(make_record("inf", ()))
    after = datetime.datetime.now(datetime.timezone.utc)
    h.close()
    frames = server.wait_for_frames(2)
    assert [f["message"] for f in frames] == ["nan", "inf"]
    for f in frames:
        dt = datetime.datetime.strptime(f["dt"], "%Y-%m-%dT%H:%M:%S.%fZ")
        dt = dt.replace(tzinfo=datetime.timezone.utc)
        assert before - datetime.timedelta(seconds=1) <= dt <= after + datetime.timedelta(seconds=1)


def test_dt_is_what_python_shows_for_record_created(server: FaultServer) -> None:
    rng = random.Random(18)
    # Whole range of plausible times, before and after the epoch, and values
    # that sit on a rounding edge (x.5 microseconds, just under a second).
    times = [rng.uniform(-2e9, 4e9) for _ in range(9_000)]
    times += [
        rng.randrange(-(10**9), 4 * 10**9) + rng.randrange(10**6) / 1e6 + 5e-7 for _ in range(500)
    ]
    times += [rng.randrange(-(10**9), 4 * 10**9) + 0.9999996 for _ in range(500)]
    records = []
    for i, created in enumerate(times):
        r = make_record("t %s", (i,))
        r.created = created
        records.append(r)
    frames = ship(server, *records, buffer_capacity=1000)
    assert len(frames) == len(times)
    for f in frames:
        created = times[int(f["message"][2:])]
        expected = datetime.datetime.fromtimestamp(created, datetime.timezone.utc)
        assert f["dt"] == expected.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), created
