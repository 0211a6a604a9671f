"""`bundle verify` hashes before it checks the signature (`hashing.Ahead`): those digests count only when the
verified manifest names exactly the files hashed; any other case is hashed again, so the verdicts stay."""

from __future__ import annotations

import pytest

from appliance.bundles import verify_bundle
from appliance.signing import oms
from appliance.signing.hashing import Ahead
from tests.bundles.conftest import LARGE, flip_byte, make_bundle
from tests.conftest import one_line_error, run_cli


def _ahead(folder, sizes=None) -> Ahead:
    return Ahead(folder, sizes or oms.scan_folder(folder, {oms.SIGNATURE_NAME}), workers=2, progress=None)


def test_digests_hashed_ahead_are_the_ones_checked(bundle, signer):
    with _ahead(bundle) as ahead:
        assert verify_bundle(bundle, [signer[0].public_key()], workers=2, ahead=ahead).metadata.name == "gpt-oss-test"
    flip_byte(bundle / "onnx" / "model.onnx.data", LARGE - 1)
    with _ahead(bundle) as ahead, pytest.raises(oms.SignatureError, match="onnx/model.onnx.data does not match"):
        verify_bundle(bundle, [signer[0].public_key()], workers=2, ahead=ahead)


def test_a_file_list_that_moved_since_hashing_began_is_hashed_again(bundle, signer):
    """Hashed ahead: a file since removed, and one other than the signed one; the verdict is the folder's own."""
    sizes = oms.scan_folder(bundle, {oms.SIGNATURE_NAME})
    stale = {**sizes, "onnx/model.onnx": sizes["onnx/model.onnx"] - 1}
    with _ahead(bundle, stale) as ahead:
        assert verify_bundle(bundle, [signer[0].public_key()], workers=2, ahead=ahead).metadata.version == "1.0.0"
    (bundle / "extra.bin").write_bytes(b"x")
    with _ahead(bundle, sizes) as ahead, pytest.raises(oms.SignatureError, match="extra.bin is not listed"):
        verify_bundle(bundle, [signer[0].public_key()], workers=2, ahead=ahead)


def test_hashing_stopped_early_is_never_taken_for_done(bundle, signer):
    """A stopped `Ahead` (its pieces cut short) hands out no digests: the verification hashes again."""
    ahead = _ahead(bundle)
    ahead.stop()
    assert ahead.digests(ahead.pieces) is None
    assert verify_bundle(bundle, [signer[0].public_key()], workers=2, ahead=ahead).metadata.name == "gpt-oss-test"


def test_hashing_ahead_trusts_nothing_before_the_signature(bundle, signer):
    """An untrusted signer is refused although every file was already hashed."""
    with _ahead(bundle) as ahead:
        ahead.digests(ahead.pieces)  # all hashed
        with pytest.raises(oms.SignatureError, match="no trusted public keys"):
            verify_bundle(bundle, [], workers=2, ahead=ahead)


def test_a_sharded_signature_verifies_through_the_cli(tmp_path, signer):
    """Shards are not what was hashed ahead (whole files): verified all the same, and tampering still found."""
    folder = make_bundle(tmp_path / "sharded", signer[0], shard_size=1 << 20)
    ok = run_cli("bundle", "verify", str(folder), "--trust", str(signer[2]), data_dir=tmp_path / "var", check=True)
    assert ok.stdout.startswith("OK gpt-oss-test 1.0.0")
    flip_byte(folder / "onnx" / "model.onnx.data", 3 << 20)
    bad = run_cli("bundle", "verify", str(folder), "--trust", str(signer[2]), data_dir=tmp_path / "var")
    assert "onnx/model.onnx.data does not match its signed digest" in one_line_error(bad)
