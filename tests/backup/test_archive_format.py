"""The archive each member is written into once: the manifest at its head names every member's real hash and
size, the staged copies are gone once archived, the signature member has one size whatever the key, and an
archive written the earlier way (tarfile, signature unpadded) still restores."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from appliance.backup import manifest as mf
from appliance.backup.create import Backup, staging_beside
from appliance.config import Settings
from appliance.signing import keys
from tests.backup.conftest import make_site


def test_the_manifest_at_the_head_names_each_member_as_archived(tmp_path: Path):
    site = make_site(tmp_path / "site")
    out = tmp_path / "b.tar"
    settings = Settings(data_dir=site.data, policy_dir=site.policies)
    seen: list[int] = []
    with staging_beside(out) as staging:
        job = Backup(settings, staging)
        total = job.stage(None)
        made = job.write(out, seen.append)
        assert not [p for p in staging.rglob("*") if p.is_file()]  # each staged copy removed once archived
    assert sum(seen) == total
    with tarfile.open(out) as tar:
        infos = tar.getmembers()
        data = {info.name: tar.extractfile(info).read() for info in infos}
    assert [i.name for i in infos[:2]] == [mf.NAME, mf.SIGNATURE]
    trusted = [keys.load_public_key(site.data / "keys" / "audit.pub")]
    manifest = mf.verify(data[mf.NAME], data[mf.SIGNATURE], trusted)
    assert manifest == made
    assert [m.path for m in manifest.members] == [i.name for i in infos[2:]]
    for m in manifest.members:
        assert (hashlib.sha256(data[m.path]).hexdigest(), len(data[m.path])) == (m.sha256, m.size), m.path


@pytest.mark.parametrize(
    "key",
    [keys.generate_private_key(), ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP384R1())],
    ids=["ed25519", "p256", "p384"],
)
def test_the_signature_member_has_one_size_for_every_key(key: keys.PrivateKey):
    """Its place is reserved before the manifest is signed: every kind of audit key must fit it."""
    manifests = [b'{"a": 1}\n' * n for n in (1, 3, 1000)]
    signatures = [mf.sign(body, key) for body in manifests]
    assert {len(s) for s in signatures} == {mf.SIGNATURE_BYTES}
    for body, sig in zip(manifests, signatures, strict=True):
        assert keys.verify(key.public_key(), bytes.fromhex(json.loads(sig)["signature"]), body)


def test_an_archive_written_the_earlier_way_restores(tmp_path: Path):
    """Before members were hashed in place, tarfile wrote the archive and the signature was not padded."""
    site = make_site(tmp_path / "site")
    good, old = tmp_path / "good.tar", tmp_path / "old.tar"
    site.cli("backup", "--out", str(good), check=True)
    head = site.head()
    with tarfile.open(good) as src, tarfile.open(old, "w", format=tarfile.PAX_FORMAT) as dest:
        for info in src.getmembers():
            data = src.extractfile(info).read()
            if info.name == mf.SIGNATURE:
                data = data.rstrip() + b"\n"
                info.size = len(data)
            dest.addfile(info, io.BytesIO(data))
    assert tarfile.open(old).getmember(mf.SIGNATURE).size < mf.SIGNATURE_BYTES
    site.cli("keys", "create", "--name", "later", "--role", "user", check=True)
    site.cli("restore", str(old), "--force", check=True)
    assert site.head()[0] == head[0] + 1  # its `admin.restored` record after the archived head
