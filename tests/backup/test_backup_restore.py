"""Backup under load restores to a verifying chain; older archives need --force; the removed tail stays
provable; private keys are never archived in clear."""

from __future__ import annotations

import tarfile
import threading
from pathlib import Path

from appliance.audit import AuditEvent, AuditLog
from appliance.signing import keys
from tests.audit.conftest import request_event
from tests.backup.conftest import Site, make_site
from tests.conftest import one_line_error


def _log(site: Site) -> AuditLog:
    url = site.database_url or f"sqlite:///{site.data / 'appliance.db'}"
    return AuditLog(url, site.data / "keys" / "audit.key", checkpoint_every=200, checkpoint_seconds=1.0)


def _archive_head(stdout: str) -> int:
    return int(stdout.split("audit head ")[1].split(":")[0])


def test_backup_under_load_restores_to_a_verifying_chain(site: Site, tmp_path: Path):
    archive = tmp_path / "backup.tar"
    log, stop, appended = _log(site), threading.Event(), []

    def client(n: int) -> None:  # a bounded client loop: at most 400 records per thread
        for i in range(400):
            if stop.is_set():
                return
            appended.append(log.append(request_event(n * 1000 + i)).seq)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        while len(appended) < 50 and any(t.is_alive() for t in threads):
            threading.Event().wait(0.01)
        made = site.cli("backup", "--out", str(archive), check=True)
    finally:
        stop.set()
        for t in threads:
            t.join()
    for i in range(3):  # written after the backup for sure: the restore must remove and report them
        log.append(AuditEvent(event="request", request_id=f"after-{i}"))
    log.close()
    archived = _archive_head(made.stdout)
    before = site.head()
    assert before[0] > archived

    refused = one_line_error(site.cli("restore", str(archive)))
    assert "older than the data" in refused and "--force" in refused
    assert site.head() == before

    last = site.last_seq()  # `before` and the verifications' own records since
    done = site.cli("restore", str(archive), "--force", check=True)
    assert f"records {archived + 1}..{last + 1}" in done.stdout  # and the attempt's own record
    verified = site.cli("audit", "verify", check=True).stdout
    assert f"head {archived + 1}:" in verified  # the archived log plus its `admin.restored` record
    assert "a restore removed" in verified
    removed = next(Path(w) for w in done.stdout.split() if w.endswith("removed-records.jsonl"))
    assert site.cli("audit", "verify", "--file", str(removed), check=True).stdout.startswith("ok:")
    restored = site.cli("audit", "show", str(archived + 1), check=True).stdout
    assert "admin.restored" in restored

    site.cli("keys", "create", "--name", "after-restore", "--role", "user", check=True)  # the log goes on
    site.cli("audit", "verify", check=True)


def test_private_keys_only_with_the_flag_and_never_in_clear(tmp_path: Path):
    site = make_site(tmp_path / "site")
    publisher = tmp_path / "publisher.pub"
    keys.write_public_key(keys.generate_private_key().public_key(), publisher)
    site.cli("bundle", "trust", str(publisher), check=True)
    site.cli("tls", "self-signed", "--name", "appliance.site", "--address", "127.0.0.1", check=True)
    tls_key = next((site.data / "keys" / "tls").glob("*.key")).read_bytes()
    key_pem = (site.data / "keys" / "audit.key").read_bytes()
    plain, sealed = tmp_path / "plain.tar", tmp_path / "sealed.tar"
    secret = tmp_path / "pass"
    secret.write_text("correct horse battery staple\n")
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase\n")

    assert "go together" in one_line_error(site.cli("backup", "--out", str(plain), "--include-private-keys"))
    assert not plain.exists()
    site.cli("backup", "--out", str(plain), check=True)
    made = site.cli(
        "backup", "--out", str(sealed), "--include-private-keys", "--passphrase-file", str(secret), check=True
    )
    with tarfile.open(plain) as tar:
        names = tar.getnames()
        assert not [n for n in names if n.startswith("private/") or n.endswith(".key")]
        assert [n for n in names if n.startswith("keys/tls/")]  # the certificate is public
    with tarfile.open(sealed) as tar:
        assert "private/keys.sealed" in tar.getnames()
    for archive in (plain, sealed):
        data = archive.read_bytes()
        for pem in (key_pem, tls_key):  # (the policy pack itself names "PRIVATE KEY": it detects them)
            assert b"".join(pem.splitlines()[1:-1]) not in data

    # a new host (no audit key of its own): the archive's key comes back only with the passphrase
    fresh = Site(tmp_path / "fresh")
    fresh.policies.mkdir(parents=True)
    trust = ("--trust", str(site.data / "keys" / "audit.pub"))
    assert "no audit key" in one_line_error(fresh.cli("restore", str(plain), *trust))
    assert "wrong passphrase" in one_line_error(
        fresh.cli("restore", str(sealed), *trust, "--passphrase-file", str(wrong))
    )
    assert not (fresh.data / "appliance.db").exists()
    fresh.cli("restore", str(sealed), *trust, "--passphrase-file", str(secret), check=True)
    assert (fresh.data / "keys" / "audit.key").read_bytes() == key_pem
    assert next((fresh.data / "keys" / "tls").glob("*.key")).read_bytes() == tls_key
    assert fresh.head()[0] == _archive_head(made.stdout) + 1  # with its `admin.restored` record
    assert fresh.policy_digest() == site.policy_digest()
    assert [p.name for p in (fresh.data / "trust").iterdir()] == [p.name for p in (site.data / "trust").iterdir()]
