"""Every snippet of the documentation, as written, against a local endpoint
(the host comes from TIMBER_HOST): each runs in its own interpreter and its
records arrive as documented."""

from __future__ import annotations

import json
import subprocess

from fault_server import FaultServer, run_python, timber_env


def run(server: FaultServer, code: str) -> subprocess.CompletedProcess[str]:
    env = timber_env(server.host, api_key="YOUR_API_KEY", source_id="YOUR_SOURCE_ID")
    proc = run_python(code, env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc


HTTP_INLINE = """
import logging
import timber

logger = logging.getLogger(__name__)
# Set to logging.DEBUG if you want all logs
logger.setLevel(logging.INFO)

timber_handler = timber.TimberHandler(source_id='YOUR_SOURCE_ID', api_key='YOUR_API_KEY')
logger.addHandler(timber_handler)
"""


def test_example_and_usage_snippets(server: FaultServer) -> None:
    run(
        server,
        HTTP_INLINE
        + """
def myFunc():
    with timber.context(user={'id': 123}):
        logger.info('Order #1234 placed, total: $520.23', extra={
          'order_placed': {
            'id': 1234,
            'total': 520.23
          }
        })
myFunc()

logger.info('Info message')

logger.info('Order #1234 placed, total: $520.23', extra={
  'order_placed': {
    'id': 1234,
    'total': 520.23
  }
})

with timber.context(job={'id': 123}):
  logger.info('Background job execution started')
  # ... code here
  logger.info('Background job execution completed')

with timber.context(job={'id': 123, 'count': 1}):
  # Sends a context {'job': {'id': 123, 'count': 1}}
  logger.info('Background job execution started')
  # ... code here
  with timber.context(job={'count': 2}):
    # Sends a context {'job': {'id': 123, 'count': 2}}
    logger.info('Background job in progress')
  # ... code here
  # Sends a context {'job': {'id': 123, 'count': 1}}
  logger.info('Background job execution completed')
""",
    )
    frames = server.frames
    assert [f["message"] for f in frames] == [
        "Order #1234 placed, total: $520.23",
        "Info message",
        "Order #1234 placed, total: $520.23",
        "Background job execution started",
        "Background job execution completed",
        "Background job execution started",
        "Background job in progress",
        "Background job execution completed",
    ]
    seed = frames[0]
    assert list(seed) == ["dt", "level", "severity", "message", "order_placed", "context"]
    assert seed["context"]["user"] == {"id": 123}
    assert seed["context"]["runtime"]["function"] == "myFunc"
    assert [f["context"].get("job") for f in frames[5:]] == [
        {"id": 123, "count": 1},
        {"id": 123, "count": 2},
        {"id": 123, "count": 1},
    ]
    assert all(r.path == "/sources/YOUR_SOURCE_ID/frames" for r in server.requests)


def test_configuration_snippets(server: FaultServer) -> None:
    run(
        server,
        """
import logging
import timber

logger = logging.getLogger("configured")
logger.setLevel(logging.INFO)

# Only respond to events as least as important as `warning`
timber_handler = timber.TimberHandler(level=logging.WARNING)
logger.addHandler(timber_handler)
logger.info('not sent')
logger.warning('sent')

# Never allow more than 50 outstanding log events
timber_handler = timber.TimberHandler(buffer_capacity=50)
# Send any outstanding log events at most every 60 seconds
timber_handler = timber.TimberHandler(flush_interval=60)
# Allow exceptions from internal log handling to propagate to the application,
# instead of suppressing them.
timber_handler = timber.TimberHandler(raise_exceptions=True)
# Make log statements block until the internal log event buffer is no longer full.
timber_handler = timber.TimberHandler(drop_extra_events=False)
""",
    )
    assert [f["message"] for f in server.frames] == ["sent"]


def test_custom_context_snippet(server: FaultServer) -> None:
    run(
        server,
        """
import logging
import timber

logger = logging.getLogger(__name__)

context = timber.TimberContext()
timber_handler = timber.TimberHandler(context=context)
logger.addHandler(timber_handler)

with context(job={'id': 123}):
  logger.critical('Background job execution started')
  # ... code here
  logger.critical('Background job execution completed')
""",
    )
    frames = server.frames
    assert [f["level"] for f in frames] == ["critical", "critical"]
    assert all(f["context"]["job"] == {"id": 123} for f in frames)


def test_http_config_snippet(server: FaultServer) -> None:
    run(
        server,
        """
import logging.config

LOGGING = {
    'version': 1,
    'handlers': {
        'timber': {
            'level': 'DEBUG',
            'class': 'timber.TimberHandler',
            'api_key': 'YOUR_API_KEY',
            'source_id': 'YOUR_SOURCE_ID'
        },
    },
    'loggers': {
        'my-app': {
            'handlers': ['timber'],
            'level': 'DEBUG',
        }
    },
}
logging.config.dictConfig(LOGGING)
logging.getLogger('my-app').debug('from dictConfig')
""",
    )
    assert [f["level"] for f in server.frames] == ["debug"]


def test_stdout_snippets(server: FaultServer) -> None:
    inline = run(
        server,
        """
import logging
import timber

logger = logging.getLogger(__name__)
# Set to logging.DEBUG if you want all logs
logger.setLevel(logging.INFO)

stream_handler = logging.StreamHandler()
formatter = timber.Formatter()
stream_handler.setFormatter(formatter)
logger.addHandler(stream_handler)
logger.info('to stderr')
""",
    )
    assert json.loads(inline.stderr)["message"] == "to stderr"
    # The documented config names its handler 'stderr' and then uses
    # 'stdout'; with the name corrected, it prints one JSON line per record.
    config = run(
        server,
        """
import logging.config

LOGGING = {
    'version': 1,
    'formatters': {
        'timber': {
            '()': 'timber.TimberFormatter',
        },
    },
    'handlers': {
        'stdout': {
            'level': 'DEBUG',
            'class': 'logging.StreamHandler',
            'stream': 'ext://sys.stdout',
            'formatter': 'timber',
        },
    },
    'loggers': {
        'my-app': {
            'handlers': ['stdout'],
            'level': 'DEBUG',
        },
    },
}
logging.config.dictConfig(LOGGING)
logging.getLogger('my-app').info('to stdout', extra={'event': {'ok': True}})
""",
    )
    frame = json.loads(config.stdout)
    assert frame["message"] == "to stdout" and frame["event"] == {"ok": True}
    assert server.frames == []
