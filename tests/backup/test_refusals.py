"""A tampered, truncated or foreign archive is refused in one line before anything changes, and a restore
killed (SIGKILL) at any point leaves the old data in place or, past its commit point, the new data complete."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from appliance.backup import archive as archive_module
from appliance.backup import manifest as mf
from appliance.backup.create import Backup, staging_beside
from appliance.backup.errors import BackupError
from appliance.backup.restore import restore
from appliance.config import Settings
from appliance.signing import keys
from tests.backup.conftest import Site, make_site
from tests.conftest import one_line_error


def _tree(root: Path) -> dict[str, str]:
    """Every file under `root` with its digest: what "nothing changed" means."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _members(archive: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(archive) as tar:
        return [(info, tar.extractfile(info).read() if info.isreg() else b"") for info in tar.getmembers()]


def _write(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if info.isreg():
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def _resigned(members, key: keys.PrivateKey, edit) -> list:
    """The archive with its manifest edited by `edit(dict)` and signed again by `key`."""
    manifest = json.loads(members[0][1])
    edit(manifest)
    body = json.dumps(manifest).encode()
    return [(members[0][0], body), (members[1][0], mf.sign(body, key)), *members[2:]]


def _variants(site: Site, good: Path, other: Path, out: Path) -> dict[str, Path]:
    out.mkdir()
    members, key = _members(good), keys.load_private_key(site.data / "keys" / "audit.key")
    db = next(i for i, (info, _) in enumerate(members) if info.name == "db/appliance.db")
    flipped = list(members)
    data = bytearray(flipped[db][1])
    data[len(data) // 2] ^= 0x01
    flipped[db] = (flipped[db][0], bytes(data))
    altered = list(members)
    altered[0] = (altered[0][0], altered[0][1].replace(b'"size": ', b'"size": 1', 1))
    swapped = [members[0], _members(other)[1], *members[2:]]
    evil = tarfile.TarInfo("../evil.sh")

    def traverse(m: dict) -> None:
        m["members"].append({"path": "../evil.sh", "sha256": hashlib.sha256(b"x").hexdigest(), "size": 1})

    traversal = [*_resigned(members, key, traverse), (evil, b"x")]
    link = tarfile.TarInfo("policy/access.yaml")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
    linked = [(link, b"") if info.name == "policy/access.yaml" else (info, d) for info, d in members]
    extra = [*members, (tarfile.TarInfo("../../outside"), b"")]
    stranger = keys.generate_private_key()
    foreign = _resigned(members, stranger, lambda m: m.update(audit_key_id=keys.key_hint(stranger.public_key())))
    sparse = [(_as_sparse(info), d) if info.name == "db/appliance.db" else (info, d) for info, d in members]
    return {
        **_truncated(good, out),
        "flipped byte in a member": _write(out / "flipped.tar", flipped),
        "altered manifest": _write(out / "altered.tar", altered),
        "swapped signature": _write(out / "swapped.tar", swapped),
        "path traversal in a signed manifest": _write(out / "traversal.tar", traversal),
        "a link member": _write(out / "linked.tar", linked),
        "a member the manifest does not list": _write(out / "extra.tar", extra),
        "signed by an untrusted key": _write(out / "foreign.tar", foreign),
        "a sparse member": _write(out / "sparse.tar", sparse),
        "not an archive": good.parent / "missing.tar",
    }


def _truncated(good: Path, out: Path) -> dict[str, Path]:
    """`good` cut short at each kind of place: in the manifest, in a header, in the database, in the last
    member, and exactly before the last member's header."""
    data = good.read_bytes()
    with tarfile.open(good) as tar:
        infos = tar.getmembers()
    assert infos[2].name == "db/appliance.db"
    cuts = {
        "truncated in its manifest": infos[0].offset_data + 100,
        "truncated in a member's header": infos[2].offset + 100,
        "truncated in the database": infos[2].offset_data + infos[2].size // 2,
        "truncated in its last member": infos[-1].offset_data + infos[-1].size - 1,
        "truncated before its last member": infos[-1].offset,
    }
    for name, cut in cuts.items():
        (out / f"{name}.tar").write_bytes(data[:cut])
    return {name: out / f"{name}.tar" for name in cuts}


def _as_sparse(info: tarfile.TarInfo) -> tarfile.TarInfo:
    sparse = tarfile.TarInfo(info.name)
    sparse.type, sparse.size = tarfile.GNUTYPE_SPARSE, info.size
    return sparse


EXPECTED = {
    "flipped byte in a member": "does not match its SHA-256",
    "altered manifest": "does not match its signature",
    "swapped signature": "does not match its signature",
    "path traversal in a signed manifest": "unsafe path",
    "a link member": "not a regular file",
    "a member the manifest does not list": "unsafe path",
    "signed by an untrusted key": "does not trust",
    "truncated in its manifest": "truncated",
    "truncated in a member's header": "truncated",
    "truncated in the database": "truncated",
    "truncated in its last member": "truncated",
    "truncated before its last member": "truncated",
    "a sparse member": "not a regular file",
    "not an archive": "does not exist",
}


def test_bad_archives_are_refused_before_anything_changes(tmp_path: Path, monkeypatch):
    site = make_site(tmp_path / "site")
    good, other = tmp_path / "good.tar", tmp_path / "other.tar"
    site.cli("backup", "--out", str(good), check=True)
    site.cli("backup", "--out", str(other), check=True)
    variants = _variants(site, good, other, tmp_path / "bad")
    before = _tree(site.root)
    for name, archive in variants.items():
        error = one_line_error(site.cli("restore", str(archive), "--force"))
        assert EXPECTED[name] in error, (name, error)
        assert _tree(site.root) == before, name  # no debris either
    # a full disk, in-process (the file system's answer is the only thing replaced)
    monkeypatch.setattr(
        archive_module.shutil, "disk_usage", lambda _p: shutil._ntuple_diskusage(1 << 40, 1 << 40, 4096)
    )
    settings = Settings(data_dir=site.data, policy_dir=site.policies)
    with pytest.raises(BackupError, match="not enough space"):
        restore(settings, good, force=True, passphrase=None, trust=[], progress=lambda _d, _t: lambda _n: None)
    with pytest.raises(BackupError, match="not enough space"), staging_beside(tmp_path / "full" / "b.tar") as folder:
        Backup(settings, folder).stage(None)
    assert _tree(site.root) == before and not (tmp_path / "full" / "b.tar").exists()
    monkeypatch.undo()
    site.cli("restore", str(good), "--force", check=True)  # the good one still restores


# Named points in appliance/backup/restore.py and journal.py; steps: database, policy pack, witness, record.
BEFORE_COMMIT = ["staged", "recorded", "prepared"]
AFTER_COMMIT = ["committed", "step-0", "step-1", "step-2", "step-3"]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> tuple[Site, Path, tuple[int, str], str, tuple[int, str], str]:
    """A site whose archive (state A) is older than its data (state B: another key, an edited pack)."""
    root = tmp_path_factory.mktemp("kill")
    site = make_site(root / "site")
    archive = site.root / "a.tar"
    site.cli("backup", "--out", str(archive), check=True)
    head_a, pack_a = site.head(), site.policy_digest()
    site.cli("keys", "create", "--name", "later", "--role", "user", check=True)
    with open(site.policies / "access.yaml", "a") as f:
        f.write("# edited after the backup\n")
    return site, archive, head_a, pack_a, site.head(), site.policy_digest()


@pytest.mark.parametrize("point", BEFORE_COMMIT + AFTER_COMMIT)
def test_restore_killed_leaves_old_data_or_completes(template, tmp_path: Path, point: str):
    site0, archive0, head_a, pack_a, head_b, pack_b = template
    site = Site(tmp_path / "site")
    shutil.copytree(site0.root, site.root, symlinks=True)
    archive = site.root / archive0.name
    last = site.last_seq()  # head_b, then the reads of the log since
    killed = site.killed_at(point, "restore", str(archive), "--force")
    assert killed.returncode in (-9, 137), killed.stderr
    after = site.cli("audit", "verify", check=True)  # any command first finishes a committed restore
    seq = int(after.stdout.split("head ")[1].split(":")[0])
    if point in BEFORE_COMMIT:
        assert site.policy_digest() == pack_b
        assert seq in (last, last + 1)  # + the restore's own record, written first
        assert json.loads(site.cli("audit", "show", str(head_b[0]), check=True).stdout)["hash"] == head_b[1]
        site.cli("restore", str(archive), "--force", check=True)  # debris does not block a new attempt
    else:
        assert "completed the interrupted restore" in after.stderr
    assert site.head()[0] == head_a[0] + 1  # the archived log and its `admin.restored` record (reads left out)
    assert json.loads(site.cli("audit", "show", str(head_a[0]), check=True).stdout)["hash"] == head_a[1]
    assert site.policy_digest() == pack_a
    assert not list(site.data.glob(".restore-*")) and not (site.data / "restore-pending.json").exists()
