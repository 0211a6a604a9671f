#!/bin/sh
# Installs, upgrades or rolls back the appliance from this media, with no network. Runs from read-only
# media and never writes to it. Finds a Python >= 3.11 and hands over to installer/bootstrap.py, which
# checks the installer's own wheels against MANIFEST.json and runs the appliance's install steps.
#   ./install.sh --verify-only                      check the signature and every file and part
#   ./install.sh [--prefix DIR] [--no-systemd] [--trust-release-key PUB] [--yes]
#   ./install.sh --rollback [--prefix DIR]          the previous version and its data
# All options: ./install.sh --help
set -eu
media=$(cd "$(dirname "$0")" && pwd)
for py in "${APPLIANCE_PYTHON:-}" python3.12 python3.11 python3; do
  [ -n "$py" ] || continue
  command -v "$py" >/dev/null 2>&1 || continue
  if "$py" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else 1)' 2>/dev/null; then
    exec "$py" -I -B "$media/installer/bootstrap.py" "$media" "$@"
  fi
done
echo "error: no Python 3.11 or newer on this host (install python3 from the OS media, or set APPLIANCE_PYTHON)" >&2
exit 1
