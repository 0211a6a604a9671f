#!/usr/bin/env bash
# The README's run command: an embedded appliance (local Ray, SQLite, the demo bundle) on 127.0.0.1:8000.
# Everything it needs is on this machine after `make setup`; nothing is downloaded at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
export APPLIANCE_DATA_DIR="${APPLIANCE_DATA_DIR:-$PWD/var}"
exec .venv/bin/appliance demo
