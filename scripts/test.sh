#!/usr/bin/env bash
# The README's test command: a throwaway PostgreSQL (when the machine has one), then the suite and the
# default policy pack's own tests. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/postgres.sh
pg_start_if_possible
trap pg_stop EXIT
.venv/bin/appliance policy test policies/
.venv/bin/python -m pytest -q "$@"
