# kvstore: `make run` serves on the embedded SQLite shards, `make test` runs the whole suite.
# Both set themselves up (virtualenv, install); `make test` also installs the PostgreSQL and
# MariaDB server binaries the suite starts its own instances from, and wrk, etcd and Redis for the
# benchmark harness's smoke test, and HAProxy, when it may (root + apt). The CLI is then .venv/bin/kvstore.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DB_PACKAGES := postgresql mariadb-server-core mariadb-client
# The benchmark's load generator and peers; the suite's smoke test of the harness needs them too.
BENCH_PACKAGES := wrk etcd-server redis-server redis-tools
BENCH_BINARIES := wrk etcd redis-server redis-benchmark redis-cli
# The console's browser tests drive the system's headless Chromium (Playwright cannot download its own here).
BROWSER_PACKAGES := chromium
# The HA managers the failover tests run: Patroni over etcd (PostgreSQL), Galera (MariaDB; its
# state transfer scripts come with mariadb-server, and use rsync).
HA_PACKAGES := patroni etcd-server galera-4 mariadb-server rsync
HA_FILES := /usr/bin/patroni /usr/bin/patronictl /usr/bin/etcd /usr/lib/galera/libgalera_smm.so /usr/bin/wsrep_sst_rsync /usr/bin/rsync

# As root, PostgreSQL runs as the `postgres` OS user, which must traverse every directory above its
# data, and kvstore changes none of them: from a checkout that user cannot reach (e.g. one under a
# private home directory: /root is 0700) the cluster goes to /var/tmp, named after the checkout.
CLUSTER_DIR ?= $(shell if [ "$$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$(CURDIR)" 2>/dev/null; then \
  echo /var/tmp/kvstore-cluster-$$(printf %s "$(CURDIR)" | cksum | cut -d' ' -f1); else echo .cluster; fi)

.PHONY: setup run test lint format db-binaries bench-binaries browser-binaries haproxy-binary ha-binaries bench bench-smoke cluster cluster-down clean

# Three stamps, so each target installs only what it uses: `make run` the runtime dependencies;
# `make setup` (tests, lint) adds the test and bench extras (the suite runs the benchmark's smoke
# test); `make bench` the bench extra.
setup: $(VENV)/.installed-test

$(VENV)/.installed-runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-runtime
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed-runtime
	$(BIN)/pip install --quiet -e '.[bench]'
	touch $@

run: $(VENV)/.installed-runtime
	$(BIN)/kvstore serve

test: setup db-binaries bench-binaries browser-binaries haproxy-binary ha-binaries
	$(BIN)/pytest

# A fresh local cluster (2 PostgreSQL shards x 1 streaming replica) and kvstore serving on it.
cluster: $(VENV)/.installed-runtime db-binaries
	-$(BIN)/kvstore cluster down --dir $(CLUSTER_DIR) --remove >/dev/null 2>&1
	$(BIN)/kvstore cluster up --backend postgres --shards 2 --replicas 1 --dir $(CLUSTER_DIR)
	$(BIN)/kvstore serve --config $(CLUSTER_DIR)/shards.yaml

cluster-down: $(VENV)/.installed-runtime
	$(BIN)/kvstore cluster down --dir $(CLUSTER_DIR) --remove

# kvstore against the raw driver, the HTTP floor, etcd and Redis, on PostgreSQL then MariaDB
# (about 10 minutes): results in benchmarks/results/. BENCH_ARGS adds options, e.g. --keys 1000000.
bench: $(VENV)/.installed-bench db-binaries bench-binaries
	$(BIN)/python -m benchmarks --backend both $(BENCH_ARGS)

# The same harness, tiny and quick, into a scratch directory (the test suite runs it too).
bench-smoke: $(VENV)/.installed-bench db-binaries bench-binaries
	$(BIN)/python -m benchmarks --backend postgres --smoke --out $$(mktemp -d)

lint: setup
	$(BIN)/ruff check kvstore tests benchmarks
	$(BIN)/ruff format --check kvstore tests benchmarks
	$(BIN)/mypy kvstore

format: setup
	$(BIN)/ruff format kvstore tests benchmarks
	$(BIN)/ruff check --fix kvstore tests benchmarks

db-binaries: $(VENV)/.installed-runtime
	@if ! $(BIN)/python -m kvstore.cluster; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing $(DB_PACKAGES) with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DB_PACKAGES) >/dev/null \
	      && $(BIN)/python -m kvstore.cluster; \
	  else \
	    echo "make test needs PostgreSQL and MariaDB server binaries: install them as root" \
	         "(Debian/Ubuntu: apt-get install $(DB_PACKAGES))" >&2; \
	    exit 1; \
	  fi; \
	fi

bench-binaries:
	@missing=""; for binary in $(BENCH_BINARIES); do command -v $$binary >/dev/null 2>&1 || missing="$$missing $$binary"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing $(BENCH_PACKAGES) with apt-get (missing:$$missing)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BENCH_PACKAGES) >/dev/null; \
	  else \
	    echo "make bench and make test need$$missing: install them as root" \
	         "(Debian/Ubuntu: apt-get install $(BENCH_PACKAGES))" >&2; \
	    exit 1; \
	  fi; \
	fi

browser-binaries:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing $(BROWSER_PACKAGES) with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BROWSER_PACKAGES) >/dev/null; \
	  else \
	    echo "make test needs chromium for the console's browser tests: install it as root" \
	         "(Debian/Ubuntu: apt-get install $(BROWSER_PACKAGES))" >&2; \
	    exit 1; \
	  fi; \
	fi

# The load balancer in front of several front ends (deploy/haproxy/), which the suite starts for real.
haproxy-binary:
	@if ! command -v haproxy >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing haproxy with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null; \
	  else \
	    echo "make test needs haproxy: install it as root (Debian/Ubuntu: apt-get install haproxy)" >&2; \
	    exit 1; \
	  fi; \
	fi

ha-binaries:
	@missing=""; for file in $(HA_FILES); do [ -e $$file ] || missing="$$missing $$file"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing $(HA_PACKAGES) with apt-get (missing:$$missing)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(HA_PACKAGES) >/dev/null; \
	  else \
	    echo "make test needs$$missing for the failover tests: install them as root" \
	         "(Debian/Ubuntu: apt-get install $(HA_PACKAGES))" >&2; \
	    exit 1; \
	  fi; \
	fi

clean:
	rm -rf $(VENV) data .pytest_cache .hypothesis
