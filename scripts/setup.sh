#!/usr/bin/env bash
# Creates .venv with the serving install plus the build and dev extras (idempotent; quick when done).
# This is the connected build machine's step: the air-gapped host installs from the offline media instead.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ -f "$stamp" ]; then exit 0; fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# torch first and pinned: the CPU wheel lies on this machine's disk; any other version downloads GBs.
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e '.[cpu,build,dev]'
rm -f .venv/.installed-*
touch "$stamp"
