"""The bundle commands from key generation to removal, and verification at every load."""

from __future__ import annotations

import pytest

from appliance.bundles import BundleStore, trusted_keys
from appliance.signing.dsse import SignatureError
from tests.bundles.conftest import flip_byte, make_bundle
from tests.conftest import one_line_error, run_cli


def test_keygen_sign_verify_import_activate_remove(tmp_path):
    data = tmp_path / "var"
    key = tmp_path / "publisher.key"
    out = run_cli("bundle", "keygen", "--out", str(key), "--trust", data_dir=data, check=True).stdout
    assert "key hint" in out
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert len(list((data / "trust").glob("*.pub"))) == 1

    from appliance.signing import keys

    bundle = make_bundle(tmp_path / "b", keys.load_private_key(key))
    (bundle / "model.sig").unlink()
    run_cli("bundle", "sign", str(bundle), "--key", str(key), data_dir=data, check=True)
    assert "OK gpt-oss-test 1.0.0" in run_cli("bundle", "verify", str(bundle), data_dir=data, check=True).stdout
    run_cli("bundle", "import", str(bundle), "--activate", data_dir=data, check=True)
    listing = run_cli("bundle", "list", data_dir=data, check=True).stdout
    assert "gpt-oss-test" in listing and "1.0.0" in listing and "*" in listing
    line = one_line_error(run_cli("bundle", "remove", "gpt-oss-test", "1.0.0", data_dir=data))
    assert "is active" in line
    bundle2 = make_bundle(tmp_path / "b2", keys.load_private_key(key), version="1.1.0")
    run_cli("bundle", "import", str(bundle2), data_dir=data, check=True)
    run_cli("bundle", "activate", "gpt-oss-test", "1.1.0", data_dir=data, check=True)
    run_cli("bundle", "remove", "gpt-oss-test", "1.0.0", data_dir=data, check=True)
    assert not (data / "models" / "gpt-oss-test" / "1.0.0").exists()
    assert "no key" not in one_line_error(run_cli("bundle", "remove", "nope", "1.0.0", data_dir=data))


def test_keygen_refuses_to_overwrite(tmp_path):
    run_cli("bundle", "keygen", "--out", str(tmp_path / "k"), data_dir=tmp_path, check=True)
    assert "already exists" in one_line_error(
        run_cli("bundle", "keygen", "--out", str(tmp_path / "k"), data_dir=tmp_path)
    )


def test_verify_with_explicit_trust_and_wrong_key(bundle, signer, tmp_path):
    ok = run_cli("bundle", "verify", str(bundle), "--trust", str(signer[2]), data_dir=tmp_path, check=True)
    assert ok.returncode == 0
    run_cli("bundle", "keygen", "--out", str(tmp_path / "other"), data_dir=tmp_path, check=True)
    line = one_line_error(
        run_cli("bundle", "verify", str(bundle), "--trust", str(tmp_path / "other.pub"), data_dir=tmp_path)
    )
    assert "untrusted key" in line


def test_no_trusted_keys_is_a_clear_error(bundle, tmp_path):
    assert "no trusted public keys" in one_line_error(run_cli("bundle", "verify", str(bundle), data_dir=tmp_path))


def test_file_changed_after_import_is_caught_at_load(bundle, data_dir):
    store = BundleStore(data_dir / "models", workers=2)
    trusted = trusted_keys(data_dir / "trust")
    store.import_bundle(bundle, trusted)
    store.activate("gpt-oss-test", "1.0.0", trusted)
    assert store.open("gpt-oss-test", None, trusted).metadata.version == "1.0.0"
    flip_byte(data_dir / "models" / "gpt-oss-test" / "1.0.0" / "onnx" / "model.onnx", 100)
    with pytest.raises(SignatureError, match="onnx/model.onnx does not match"):
        store.open("gpt-oss-test", None, trusted)


def test_sharded_signature_round_trip(tmp_path, signer, data_dir):
    bundle = make_bundle(tmp_path / "b", signer[0], shard_size=3 * 1024 * 1024)
    store = BundleStore(data_dir / "models", workers=2)
    vb = store.import_bundle(bundle, trusted_keys(data_dir / "trust"))
    assert vb.manifest.method == "shards" and len(vb.manifest.digests) > 4
    flip_byte(vb.path / "onnx" / "model.onnx.data", 5 * 1024 * 1024)
    with pytest.raises(SignatureError, match="does not match"):
        store.open("gpt-oss-test", "1.0.0", trusted_keys(data_dir / "trust"))


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["bundle", "verify"], "give either a bundle FOLDER or --active"),
        (["bundle", "verify", "--nope", "x"], "No such option: --nope"),
        (["nope"], "No such command 'nope'"),
        (["keys", "create", "--name", "x", "--role", "root"], "table api_keys does not exist"),
        (["bundle", "trust", "/dev/zero"], "cannot read key file /dev/zero: larger than"),  # a bounded read
        (["bundle", "trust", "/"], "key file / is a directory"),
    ],
)
def test_usage_errors_are_one_line(tmp_path, args, says):
    line = one_line_error(run_cli(*args, data_dir=tmp_path, offline=False))
    assert says in line
