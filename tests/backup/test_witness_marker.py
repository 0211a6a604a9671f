"""A `restore` entry in the witness supersedes the earlier entries beyond its seq, and only those; the file's
order is held: a copy of an earlier line, or a line older than one before it, fails and cancels nothing."""

from __future__ import annotations

from pathlib import Path

from appliance.audit.chain import Checkpoint
from appliance.audit.witness import Witness, order


def _cp(kind: str, seq: int, minute: int) -> Checkpoint:
    return Checkpoint(kind, seq, f"{seq:064x}", f"2026-12-01T00:{minute:02d}:00.000000Z", "k" * 64, b"sig", "0" * 64)


def test_restore_entries_supersede_what_they_removed(tmp_path: Path):
    witness = Witness(tmp_path, use_syslog=False)
    for n, (kind, seq) in enumerate(
        [
            ("periodic", 10),
            ("periodic", 20),
            ("periodic", 30),
            ("restore", 15),
            ("periodic", 16),
            ("periodic", 25),
            ("restore", 12),
            ("periodic", 13),
        ]
    ):
        witness.append(_cp(kind, seq, n))
    read = Witness(tmp_path).read()
    assert [(c.kind, c.seq) for c in read.in_force] == [("periodic", 10), ("restore", 12), ("periodic", 13)]
    assert sorted(c.seq for c in read.superseded) == [15, 16, 20, 25, 30]
    assert read.problems == []
    assert Witness(tmp_path).newest() == _cp("periodic", 13, 7)
    assert len(list(Witness(tmp_path).lines())) == 8  # nothing is ever rewritten


def test_a_replayed_restore_line_cancels_nothing():
    restore = _cp("restore", 5, 2)
    read = order([_cp("periodic", 10, 0), restore, _cp("periodic", 8, 3), _cp("periodic", 12, 4), restore])
    assert [c.seq for c in read.in_force] == [5, 8, 12] and [c.seq for c in read.superseded] == [10]
    assert read.problems and "repeats line 2" in read.problems[0][1]


def test_a_restore_line_older_than_what_it_follows_cancels_nothing():
    """A restore never witnessed when it happened (taken from the database, say), appended later."""
    late = order([_cp("periodic", 10, 0), _cp("periodic", 12, 5), _cp("restore", 6, 3)])
    assert [c.seq for c in late.in_force] == [10, 12] and not late.superseded
    assert "older than a line before it" in late.problems[0][1]


def test_lines_in_commit_order_pass():
    read = order([_cp("periodic", 10, 0), _cp("anchor", 4, 1), _cp("periodic", 12, 1), _cp("closing", 12, 2)])
    assert read.problems == [] and len(read.in_force) == 4
