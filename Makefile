# Every target sets itself up from nothing: a virtualenv in .venv with the
# pinned tools, then a release build of the extension installed into it.

VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.setup-stamp
DSTAMP  := $(VENV)/.dist-stamp
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup clickhouse build lint test test-rust test-py demo bench bench-quick fuzz dist dist-check clean

setup: $(STAMP) clickhouse

# The ClickHouse tests run a real server, Debian's package (apt needs root);
# nothing is done when one is installed already.
clickhouse:
	@command -v clickhouse-server >/dev/null || test -x /usr/sbin/clickhouse-server || \
		{ SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq clickhouse-server; }

$(STAMP): requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

build: setup
	maturin develop --release --locked --quiet

lint: setup
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	ruff check python tests bench
	ruff format --check python tests bench

test-rust:
	cargo test --workspace --exclude timber-py --locked

test-py: build
	$(PY) -m mypy.stubtest timber._engine
	$(PY) -m mypy
	$(PY) -m pytest

test: lint test-rust test-py

demo: build
	timber demo

bench: build
	$(PY) bench/run.py
	$(PY) bench/collector.py
	$(PY) bench/asgi.py
	$(PY) bench/gateway.py
	$(PY) bench/gateway_outage.py
	cargo bench -p timber-tracing --bench app_thread --locked

bench-quick: build
	$(PY) bench/run.py --quick
	$(PY) bench/collector.py --quick
	$(PY) bench/asgi.py --quick
	$(PY) bench/gateway.py --quick
	$(PY) bench/gateway_outage.py --seconds 10
	cargo bench -p timber-tracing --bench app_thread --locked -- --quick

# Coverage-guided fuzzing of the collector's body decoders (libFuzzer).
# cargo-fuzz wants nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain
# accept them. FUZZ_SECONDS bounds the run.
FUZZ_SECONDS ?= 60
fuzz:
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run body -- -max_total_time=$(FUZZ_SECONDS)

# Release artefacts: an abi3 wheel for manylinux2014 (glibc 2.17), linked
# by zig (from PyPI) so that it runs on hosts older than this one, and the
# sdist. Stripped: the symbols and line tables of the release profile would
# make the wheel four times larger. Only the dist tools are needed, not the
# test requirements.
$(DSTAMP): requirements-dist.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dist.txt
	touch $(DSTAMP)

dist: $(DSTAMP)
	rm -rf dist
	maturin build --release --locked --strip --zig --compatibility manylinux2014 \
		--target x86_64-unknown-linux-gnu --out dist
	maturin sdist --out dist

# The wheel audited, installed without Rust into CPython 3.10 to 3.13 (pyenv)
# and shipping the seed example to its own collector; the sdist built and
# installed on its own.
dist-check: dist
	$(PY) tests/dist_check.py

clean:
	rm -rf $(VENV) target dist
