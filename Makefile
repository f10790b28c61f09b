# The two commands of the README: `make up` runs the platform, `make test` runs every check.
SHELL := /bin/bash
VENV := .venv/bin

.PHONY: setup up test lint typecheck layers pytest bench

setup:
	bash scripts/host-setup
	bash scripts/build-web

up: setup
	$(VENV)/meshvisor up

test: setup lint typecheck layers pytest

lint:
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .

typecheck:
	$(VENV)/mypy

layers:
	$(VENV)/lint-imports

# Two workers (pytest-xdist): tests/integration in turn on one (its tests share this host's daemons and root
# namespace), everything else in turn on the other (tests/conftest.py's scheduler).
pytest:
	$(VENV)/pytest -n 2

# Every benchmark against its baseline, measured in the same run: the table goes to bench/results/latest.md.
bench: setup
	$(VENV)/python bench/run.py --report bench/results
