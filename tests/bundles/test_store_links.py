"""Symlinks planted in the model store by whoever owns it (the appliance's account) never make a store
operation, run by root or anyone, delete or create anything outside the store; the operations still work."""

from __future__ import annotations

import os
import pwd

import pytest

from appliance.bundles import BundleError, BundleStore
from tests.bundles.conftest import make_bundle
from tests.conftest import one_line_error, run_cli

DEAD_LOADER = "4194305-beef"  # a `.load` entry of a pid above Linux's pid_max: swept as a dead loader's


def test_planted_links_are_never_followed(tmp_path, bundle, signer):
    store_dir = tmp_path / "models"
    store_dir.mkdir()
    victim, elsewhere, empty = tmp_path / "victim", tmp_path / "elsewhere", tmp_path / "empty"
    for d in (victim / DEAD_LOADER, elsewhere, empty):
        d.mkdir(parents=True)
    (victim / "precious").write_text("keep")
    (store_dir / ".tmp").symlink_to(victim)  # the sweep of leftovers would empty it
    (store_dir / ".load").symlink_to(victim)  # the sweep of dead loaders' links would remove DEAD_LOADER
    (store_dir / ".lock").symlink_to(elsewhere / "created-by-root")  # root would create this file
    (store_dir / "gpt-oss-test").symlink_to(empty)  # the bundle would be placed in there

    store, trusted = BundleStore(store_dir, workers=2), [signer[0].public_key()]
    first = store.import_bundle(bundle, trusted)
    second = make_bundle(tmp_path / "v2", signer[0], version="1.1.0", seed=1)
    store.import_bundle(second, trusted)
    store.activate("gpt-oss-test", "1.1.0", trusted)
    with store.loading("gpt-oss-test", "1.1.0", trusted) as held:
        assert (held.path / "tokenizer.json").read_text() == '{"version": "1.0"}'
    store.remove("gpt-oss-test", "1.0.0")

    assert (victim / "precious").read_text() == "keep" and (victim / DEAD_LOADER).is_dir()
    assert not (elsewhere / "created-by-root").exists() and not any(empty.iterdir())
    for own in (".tmp", ".load", ".lock", "gpt-oss-test"):  # each link was replaced by the real thing
        assert not (store_dir / own).is_symlink()
    assert first.path == store_dir / "gpt-oss-test" / "1.0.0" and not first.path.exists()
    assert [(b.version, b.active) for b in store.list()] == [("1.1.0", True)]


def test_a_linked_version_folder_is_not_in_the_store(tmp_path, bundle, signer):
    """A version folder that is a link (to a copy of a real bundle) is neither opened nor removed."""
    store_dir = tmp_path / "models"
    store, trusted = BundleStore(store_dir, workers=2), [signer[0].public_key()]
    store.import_bundle(bundle, trusted)
    (store_dir / "gpt-oss-test" / "2.0.0").symlink_to(store_dir / "gpt-oss-test" / "1.0.0")
    with pytest.raises(BundleError, match="is not in the store"):
        store.open("gpt-oss-test", "2.0.0", trusted)
    with pytest.raises(BundleError, match="is not in the store"):
        store.remove("gpt-oss-test", "2.0.0")
    assert (store_dir / "gpt-oss-test" / "1.0.0" / "tokenizer.json").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the CLI as root")
def test_root_does_not_run_store_commands_in_a_store_another_account_owns(tmp_path, bundle, signer):
    data = tmp_path / "var"
    (data / "models").mkdir(parents=True)
    nobody = pwd.getpwnam("nobody")
    for p in (data, data / "models"):
        os.chown(p, nobody.pw_uid, nobody.pw_gid)
    (data / "models" / ".lock").symlink_to(tmp_path / "created-by-root")
    proc = run_cli("bundle", "import", str(bundle), "--trust", str(signer[2]), data_dir=data)
    assert proc.returncode == 1 and one_line_error(proc) == (
        f"error: refusing to run as root in {data}, which belongs to nobody: run this as that account "
        "(e.g. sudo -u nobody ...)"
    )
    assert not (tmp_path / "created-by-root").exists() and not (data / "models" / "gpt-oss-test").exists()
