"""CLI changes are recorded before they take effect: with the audit log unwritable, nothing changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from appliance import apikeys
from appliance.audit import AuditFilter, AuditLog
from appliance.bundles.metadata import BundleError
from appliance.config import Settings
from appliance.serving.local_backend import checked_active
from tests.bundles.conftest import store_is_empty
from tests.conftest import one_line_error, run_cli


@pytest.fixture
def broken_audit(data_dir: Path) -> Path:
    """A migrated database whose audit table is gone (the store is down as far as appends go)."""
    run_cli("db", "upgrade", data_dir=data_dir, check=True)
    url = Settings(data_dir=data_dir).database_url
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE audit_records"))
    engine.dispose()
    return data_dir


def test_import_is_not_placed_without_its_record(bundle, broken_audit):
    one_line_error(run_cli("bundle", "import", str(bundle), "--activate", data_dir=broken_audit))
    assert store_is_empty(broken_audit)


def test_trust_is_not_installed_without_its_record(broken_audit, signer):
    before = sorted((broken_audit / "trust").iterdir())
    one_line_error(run_cli("bundle", "trust", str(signer[2]), data_dir=broken_audit))
    one_line_error(
        run_cli("bundle", "keygen", "--out", str(broken_audit.parent / "k2"), "--trust", data_dir=broken_audit)
    )
    assert sorted((broken_audit / "trust").iterdir()) == before


def test_keys_are_neither_revoked_nor_left_usable_without_their_records(data_dir):
    run_cli("db", "upgrade", data_dir=data_dir, check=True)
    created = run_cli("keys", "create", "--name", "app", "--role", "user", data_dir=data_dir, check=True)
    token = created.stdout.strip()
    settings = Settings(data_dir=data_dir)
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_records RENAME TO audit_records_away"))
    key_id = token.split(".")[0].removeprefix("ak-")
    one_line_error(run_cli("keys", "revoke", key_id, data_dir=data_dir))
    one_line_error(run_cli("keys", "create", "--name", "ghost", "--role", "admin", data_dir=data_dir))
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_records_away RENAME TO audit_records"))
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        keys = {k.name: k.status for k in apikeys.list_keys(session)}
    assert keys["app"] == "active"  # the revocation nobody could see did not happen
    assert "ghost" not in keys  # the key nobody could see was created and discarded at once
    with AuditLog.from_settings(settings) as log:
        assert [r.event for r in log.query(AuditFilter()).records] == ["admin.key_created"]
    engine.dispose()


def test_an_edited_state_file_does_not_roll_back_the_served_version(tmp_path, template, signer, data_dir):
    """`state.json` names the active version; the audit log says which activation really happened."""
    from tests.bundles.conftest import make_bundle

    newer = make_bundle(tmp_path / "v2", signer[0], version="2.0.0", seed=1)
    run_cli("db", "upgrade", data_dir=data_dir, check=True)
    for src in (template, newer):
        run_cli("bundle", "import", str(src), "--activate", data_dir=data_dir, check=True)
    settings = Settings(data_dir=data_dir)
    assert checked_active(settings) == {"gpt-oss-test": "2.0.0"}
    state_file = data_dir / "models" / "state.json"
    state = json.loads(state_file.read_text())
    state["active"]["gpt-oss-test"] = "1.0.0"  # what someone with write access to the store might do
    state_file.write_text(json.dumps(state))
    with pytest.raises(BundleError, match="last activation of gpt-oss-test is 2.0.0"):
        checked_active(settings)
    run_cli("bundle", "activate", "gpt-oss-test", "1.0.0", data_dir=data_dir, check=True)  # recorded: served
    assert checked_active(settings) == {"gpt-oss-test": "1.0.0"}


def test_a_lowered_rollback_mark_does_not_let_an_old_version_back_in(tmp_path, template, signer, data_dir):
    from tests.bundles.conftest import make_bundle

    newer = make_bundle(tmp_path / "v2", signer[0], version="2.0.0", seed=1)
    run_cli("db", "upgrade", data_dir=data_dir, check=True)
    run_cli("bundle", "import", str(newer), data_dir=data_dir, check=True)
    run_cli("bundle", "remove", "gpt-oss-test", "2.0.0", data_dir=data_dir, check=True)
    (data_dir / "models" / "state.json").write_text("{}")  # the store's own mark, erased
    error = one_line_error(run_cli("bundle", "import", str(template), data_dir=data_dir))
    assert "not newer than 2.0.0, recorded as imported in the audit log" in error
    assert store_is_empty(data_dir)
