"""A `restore` entry in the witness supersedes the earlier entries beyond its seq, and only those."""

from __future__ import annotations

from pathlib import Path

from appliance.audit.chain import Checkpoint
from appliance.audit.witness import Witness


def _cp(kind: str, seq: int) -> Checkpoint:
    return Checkpoint(kind, seq, f"{seq:064x}", "2026-12-01T00:00:00.000000Z", "k" * 64, b"sig", "0" * 64)


def test_restore_entries_supersede_what_they_removed(tmp_path: Path):
    witness = Witness(tmp_path, use_syslog=False)
    for cp in (_cp("periodic", 10), _cp("periodic", 20), _cp("periodic", 30), _cp("restore", 15),
               _cp("periodic", 16), _cp("periodic", 25), _cp("restore", 12), _cp("periodic", 13)):
        witness.append(cp)
    kept, superseded = Witness(tmp_path).split()
    assert [(c.kind, c.seq) for c in kept] == [("periodic", 10), ("restore", 12), ("periodic", 13)]
    assert sorted(c.seq for c in superseded) == [15, 16, 20, 25, 30]
    assert Witness(tmp_path).newest() == _cp("periodic", 13)
    assert len(list(Witness(tmp_path).lines())) == 8  # nothing is ever rewritten
