"""Every attack on a bundle is refused by `appliance bundle import` with one line and an empty store, and by
`appliance bundle verify` (which starts hashing before it checks the signature) with the same line."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from appliance.signing import dsse, keys
from tests.bundles.conftest import LARGE, flip_byte, make_bundle, store_is_empty
from tests.conftest import APPLIANCE, clean_env, one_line_error, run_cli


def refused(bundle: Path, data_dir: Path, *extra: str) -> str:
    checked = one_line_error(run_cli("bundle", "verify", str(bundle), *extra, data_dir=data_dir))
    line = one_line_error(run_cli("bundle", "import", str(bundle), *extra, data_dir=data_dir))
    assert checked == line
    assert store_is_empty(data_dir)
    return line


def test_flipped_byte_in_large_file(bundle, data_dir):
    flip_byte(bundle / "onnx" / "model.onnx.data", LARGE // 2 + 7)
    assert "onnx/model.onnx.data does not match its signed digest" in refused(bundle, data_dir)


def test_truncated_file(bundle, data_dir):
    os.truncate(bundle / "onnx" / "model.onnx.data", LARGE - 1)
    assert "onnx/model.onnx.data does not match" in refused(bundle, data_dir)


def test_missing_file(bundle, data_dir):
    (bundle / "tokenizer.json").unlink()
    assert "tokenizer.json is listed in the signature but missing" in refused(bundle, data_dir)


def test_extra_unlisted_file(bundle, data_dir):
    (bundle / "onnx" / "backdoor.py").write_text("import os")
    assert "onnx/backdoor.py is not listed in the signature" in refused(bundle, data_dir)


def test_symlink_in_bundle(bundle, data_dir, tmp_path):
    (tmp_path / "outside").write_text('{"version": "1.0"}')
    (bundle / "tokenizer.json").unlink()
    (bundle / "tokenizer.json").symlink_to(tmp_path / "outside")
    assert "tokenizer.json is a symlink" in refused(bundle, data_dir)


def test_symlinked_bundle_folder(bundle, data_dir, tmp_path):
    (tmp_path / "link").symlink_to(bundle)
    assert "is a symlink" in refused(tmp_path / "link", data_dir)


def _resign_with_paths(bundle: Path, key: keys.PrivateKey, extra_names: list[str]) -> None:
    """A signature by the TRUSTED key whose manifest also names paths outside the folder."""
    raw = json.loads((bundle / "model.sig").read_text())
    statement = json.loads(base64.b64decode(raw["dsseEnvelope"]["payload"]))
    resources = statement["predicate"]["resources"]
    resources += [{"name": n, "algorithm": "sha256", "digest": hashlib.sha256(b"x").hexdigest()} for n in extra_names]
    root = hashlib.sha256(b"".join(bytes.fromhex(r["digest"]) for r in resources)).hexdigest()
    statement["subject"][0]["digest"]["sha256"] = root
    (bundle / "model.sig").write_text(json.dumps(dsse.seal(json.dumps(statement).encode(), key)))


@pytest.mark.parametrize("evil", ["../outside.bin", "/etc/passwd", "onnx/../../x", "a//b", "./x"])
def test_manifest_path_escaping_folder(bundle, data_dir, signer, evil):
    _resign_with_paths(bundle, signer[0], [evil])
    assert "unsafe path" in refused(bundle, data_dir)


def test_untrusted_key(bundle, data_dir):
    from appliance.bundles import sign_bundle

    sign_bundle(bundle, keys.generate_private_key(), workers=2)
    assert "untrusted key" in refused(bundle, data_dir)


def test_edited_bundle_json(bundle, data_dir):
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["version"] = "9.9.9"
    (bundle / "bundle.json").write_text(json.dumps(meta))
    assert "bundle.json does not match its signed digest" in refused(bundle, data_dir)


def test_signature_of_another_bundle(bundle, data_dir, signer, tmp_path):
    other = make_bundle(tmp_path / "other", signer[0], name="gpt-oss-test", version="1.0.0", seed=99)
    shutil.copy(other / "model.sig", bundle / "model.sig")
    assert "does not match its signed digest" in refused(bundle, data_dir)


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"mediaType": "x"}', b"\x00\xff" * 100])
def test_corrupt_signature(bundle, data_dir, content):
    (bundle / "model.sig").write_bytes(content)
    line = refused(bundle, data_dir)
    assert "signature" in line


def test_signature_with_tampered_payload(bundle, data_dir):
    raw = json.loads((bundle / "model.sig").read_text())
    payload = bytearray(base64.b64decode(raw["dsseEnvelope"]["payload"]))
    payload[-3] ^= 1
    raw["dsseEnvelope"]["payload"] = base64.b64encode(bytes(payload)).decode()
    (bundle / "model.sig").write_text(json.dumps(raw))
    assert "does not verify" in refused(bundle, data_dir)


def test_oversized_signature(bundle, data_dir):
    with open(bundle / "model.sig", "ab") as f:
        f.truncate(17 * 1024 * 1024)
    assert "over the 16777216 limit" in refused(bundle, data_dir)


def test_missing_signature(bundle, data_dir):
    (bundle / "model.sig").unlink()
    assert "no signature file model.sig" in refused(bundle, data_dir)


def test_empty_folder(tmp_path, data_dir):
    (tmp_path / "empty").mkdir()
    assert "is empty" in refused(tmp_path / "empty", data_dir)


def test_not_a_folder(tmp_path, data_dir):
    assert "is not a folder" in refused(tmp_path / "nope", data_dir)


def test_older_version_replayed(tmp_path, data_dir, signer):
    new = make_bundle(tmp_path / "v2", signer[0], version="2.0.0")
    old = make_bundle(tmp_path / "v1", signer[0], version="1.0.0")
    run_cli("bundle", "import", str(new), data_dir=data_dir, check=True)
    line = one_line_error(run_cli("bundle", "import", str(old), data_dir=data_dir))
    assert "rollback protection" in line
    assert not (data_dir / "models" / "gpt-oss-test" / "1.0.0").exists()
    # The same version again is refused too, and an explicit downgrade is allowed.
    assert "already in the store" in one_line_error(run_cli("bundle", "import", str(new), data_dir=data_dir))
    run_cli("bundle", "import", str(old), "--allow-downgrade", data_dir=data_dir, check=True)


def test_rollback_mark_survives_removal(tmp_path, data_dir, signer):
    """Removing the newest version must not reopen the door to replaying an older one."""
    run_cli(
        "bundle", "import", str(make_bundle(tmp_path / "v2", signer[0], version="2.0.0")), data_dir=data_dir, check=True
    )
    run_cli("bundle", "remove", "gpt-oss-test", "2.0.0", data_dir=data_dir, check=True)
    line = one_line_error(run_cli("bundle", "import", str(make_bundle(tmp_path / "v1", signer[0])), data_dir=data_dir))
    assert "rollback protection" in line


def test_import_killed_half_way_then_rerun(tmp_path, data_dir, signer):
    big = make_bundle(tmp_path / "big", signer[0])
    with open(big / "onnx" / "model.onnx.data", "ab") as f:  # grow it so the copy takes a while
        for _ in range(24):
            f.write(os.urandom(16 * 1024 * 1024))
    from appliance.bundles import sign_bundle

    sign_bundle(big, signer[0], workers=2)
    proc = subprocess.Popen(
        [APPLIANCE, "bundle", "import", str(big)],
        env=clean_env(data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    tmp = data_dir / "models" / ".tmp"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        partial = [p for p in tmp.glob("import-*/onnx/model.onnx.data")] if tmp.exists() else []
        if partial:
            break
        time.sleep(0.002)
    assert proc.poll() is None, "import finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (data_dir / "models" / "gpt-oss-test").exists()
    run_cli("bundle", "import", str(big), data_dir=data_dir, check=True)
    assert store_is_empty(data_dir) is False
    assert list(tmp.iterdir()) == []
    run_cli("bundle", "activate", "gpt-oss-test", "1.0.0", data_dir=data_dir, check=True)


def test_signature_that_excludes_a_model_file_from_verification(bundle, data_dir, signer):
    """A trusted signer's `ignore_paths` naming a model file: that file would load unverified. Refused."""
    raw = json.loads((bundle / "model.sig").read_text())
    statement = json.loads(base64.b64decode(raw["dsseEnvelope"]["payload"]))
    victim = statement["predicate"]["resources"].pop()["name"]
    statement["predicate"]["serialization"]["ignore_paths"] = ["model.sig", victim]
    resources = statement["predicate"]["resources"]
    statement["subject"][0]["digest"]["sha256"] = hashlib.sha256(
        b"".join(bytes.fromhex(r["digest"]) for r in resources)
    ).hexdigest()
    (bundle / "model.sig").write_text(json.dumps(dsse.seal(json.dumps(statement).encode(), signer[0])))
    assert f"excludes {victim} from verification" in refused(bundle, data_dir)
