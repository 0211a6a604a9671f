"""`python -m tests.backup.crashing POINT ARGS...`: the `appliance` command, killed (SIGKILL) when a restore
reaches POINT. The hook is installed here, in the test's own process image: the appliance reads none."""

from __future__ import annotations

import os
import signal
import sys

from appliance.backup import journal
from appliance.cli import main

point = sys.argv.pop(1)


def _kill(name: str) -> None:
    if name == point:
        os.kill(os.getpid(), signal.SIGKILL)


journal.crash_hook = _kill
main()
