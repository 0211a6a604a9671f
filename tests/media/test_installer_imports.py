"""The installer runs on the host's Python before any venv exists: it may import only the standard library
and the wheels bootstrap.py unpacks (cryptography, cffi), rollback's audit carry-over included."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

REFUSE_OTHERS = """
import sys
allowed = set(sys.stdlib_module_names) | {"appliance", "cryptography", "cffi", "_cffi_backend"}

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in allowed:
            raise ImportError(f"the installer imports {name}")

sys.meta_path.insert(0, Refuse())
import appliance.media.installer
"""


def test_the_installer_imports_only_what_the_bootstrap_provides():
    proc = subprocess.run(
        [sys.executable, "-c", REFUSE_OTHERS],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
