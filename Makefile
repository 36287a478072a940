# podq: `make dev` runs the whole stack on an example; `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: dev test bench redis-server clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# The suite starts its own redis-server; install one from Debian's packages when it is missing.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server not on PATH: installing Debian's redis-server package"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q redis-server; \
	  else sudo apt-get update -q && sudo apt-get install -y -q redis-server; fi; }

test: $(STAMP) redis-server
	$(BIN)/python -m pytest

dev: $(STAMP) redis-server
	$(BIN)/podq dev examples/stream/handler.py --endpoint stream --workers 2

bench: $(STAMP) redis-server
	$(BIN)/python bench/store_roundtrip.py

clean:
	rm -rf $(VENV) *.egg-info
