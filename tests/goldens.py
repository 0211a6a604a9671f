"""Golden files: the bytes other systems depend on stay the same unless a change means them to.

Run with `APPLIANCE_UPDATE_GOLDENS=1` to rewrite them after a deliberate change (tests/golden/).
"""

from __future__ import annotations

import os
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("APPLIANCE_UPDATE_GOLDENS") == "1"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE or not path.exists():
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; rerun with APPLIANCE_UPDATE_GOLDENS=1 if meant"
