"""`appliance media verify` hashes before it checks the signature: every tampering is still refused with one
line, and a problem with the files is reported only after the signature is known good."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.signing import keys
from tests.conftest import one_line_error, run_cli
from tests.media.conftest import sign_media


@pytest.fixture
def media(tmp_path) -> Path:
    root = tmp_path / "media"
    (root / "wheels").mkdir(parents=True)
    (root / "wheels" / "big.whl").write_bytes(os.urandom(9 << 20))  # several hashing chunks
    (root / "install.sh").write_text("#!/bin/sh\n")
    key = keys.generate_private_key()
    sign_media(root, key)
    keys.write_public_key(key.public_key(), tmp_path / "release.pub")
    return root


def verify(media: Path, pub: Path | None = None):
    pinned = ["--trust-release-key", str(pub)] if pub else []
    return run_cli("media", "verify", str(media), *pinned, data_dir=media.parent / "var")


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


def test_good_media_verifies(media):
    proc = verify(media, media.parent / "release.pub")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("OK media 1.0.0: 3 files")


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda m: _flip(m / "wheels" / "big.whl"), "file wheels/big.whl does not match its SHA-256"),
        (lambda m: (m / "wheels" / "extra.whl").write_bytes(b"PK"), "wheels/extra.whl is on the media but not in"),
        (lambda m: (m / "install.sh").unlink(), "file install.sh is missing from the media"),
        (lambda m: (m / "install.sh").write_text("#!/bin/sh\necho evil\n"), "file install.sh is longer than listed"),
    ],
)
def test_tampering_is_refused(media, tamper, message):
    tamper(media)
    assert message in one_line_error(verify(media, media.parent / "release.pub"))


def test_the_signature_comes_first(media, tmp_path):
    """Files that cannot even be listed (a symlink) still yield the signature's verdict first."""
    (media / "wheels" / "link.whl").symlink_to(media / "install.sh")
    other = keys.generate_private_key()
    keys.write_public_key(other.public_key(), tmp_path / "other.pub")
    assert "not trusted here" in one_line_error(verify(media, tmp_path / "other.pub"))
    assert "wheels/link.whl on the media is not a regular file" in one_line_error(verify(media))
