#!/usr/bin/env bash
# The README's test command: ruff (lint and format), mypy, a throwaway PostgreSQL (when the machine has one), the default
# policy pack's own tests, then the suite (the import-layer contract is tests/test_layers.py). Extra
# arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/postgres.sh
pg_start_if_possible
trap pg_stop EXIT
# Lint and types first: seconds, and a failure says exactly where.
.venv/bin/ruff check appliance tests bench scripts installer
.venv/bin/ruff format --check appliance tests bench scripts installer  # one formatter over the tree
.venv/bin/mypy appliance
.venv/bin/appliance policy test policies/
.venv/bin/python -m pytest -q "$@"
