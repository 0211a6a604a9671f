"""`appliance backup`: gather the appliance's state into a staging folder, describe it, sign, archive.

What goes in, and why:
- the database (every table: audit log, API keys, sessions) as one consistent snapshot (snapshot.py);
- the model store's *state* (`state.json`: active versions and rollback high-water marks) and, per
  installed bundle, the SHA-256 of its `model.sig`. The weights themselves stay out: they are large, signed,
  and already kept on the site's release media; the signature digest pins every byte, so a restore can say
  exactly which bundle to re-import when one is missing;
- the trust folders (public keys only), the policy pack and its version floor, the audit witness, and the
  effective settings (passwords masked) for rebuilding a host;
- private keys (the audit key, the admin page's CSRF secret, any other non-public file of the keys folder)
  only when asked, sealed with a passphrase (sealed.py).
Everything is copied into the staging folder first (the database snapshot without an fsync: the staged copy
is removed once archived), so each member is archived exactly as hashed, in one pass, however the live files
change meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from appliance.audit import signer
from appliance.audit.store import now_ts
from appliance.audit.witness import FILE as WITNESS_FILE
from appliance.backup import archive, sealed, snapshot
from appliance.backup import manifest as mf
from appliance.backup.errors import BackupError
from appliance.config import Settings
from appliance.db import sqlite_path
from appliance.policy.pack import floor_file
from appliance.signing import keys

SEALED_KEYS = "private/keys.sealed"
_SECRET_WORDS = ("password", "passphrase", "secret")


class Backup:
    """One backup in two steps, so the caller can show progress over a known total: `stage`, then `write`."""

    def __init__(self, settings: Settings, staging: Path) -> None:
        self.settings, self.staging = settings, staging

    def stage(self, passphrase: bytes | None) -> int:
        """Snapshot and copy everything into the staging folder; returns the archive's payload bytes."""
        s = self.settings
        db = sqlite_path(s.database_url)
        if db is not None and db.exists():  # the staged copy, then the archive
            archive.check_space(self.staging, 2 * db.stat().st_size, "the backup")
        db_member, head = snapshot.take(s.database_url, self.staging)
        paths = [db_member]
        paths += self._copy_file(s.model_store / "state.json", "models/state.json")
        paths += self._copy_tree(s.trust_dir, "trust", public_only=True)
        if not s.policy_trust_dir.resolve().is_relative_to(s.trust_dir.resolve()):
            paths += self._copy_tree(s.policy_trust_dir, "policy-trust", public_only=True)
        paths += self._copy_tree(s.policy_dir, "policy")
        paths += self._copy_file(floor_file(s), "policy-version-floor")
        paths += self._copy_file(s.audit_witness_dir / WITNESS_FILE, f"witness/{WITNESS_FILE}")
        paths += self._copy_tree(s.keys_dir, "keys", public_only=True)  # audit.pub, TLS certificates
        paths += self._settings_member()
        if passphrase is not None:
            paths += self._seal_private_keys(passphrase)
        self._paths, self._key = paths, signer.load_or_create(s.audit_key_path)
        self._manifest = mf.Manifest(  # its members' lines are made while they are archived
            created=now_ts(),
            appliance_version=_version(),
            database=snapshot.kind(s.database_url),
            audit_head=head,
            audit_key_id=keys.key_hint(self._key.public_key()),
            bundles=self._bundles(),
            private_keys=passphrase is not None,
            members=[],
        )
        return sum((self.staging / p).stat().st_size for p in paths)

    def write(self, out: Path, advance: Callable[[int], None]) -> mf.Manifest:
        """Archive what `stage` gathered, each member hashed while it is written (archive.py)."""

        def seal(members: list[mf.Member]) -> tuple[bytes, bytes]:
            body = self._manifest.model_copy(update={"members": members}).to_bytes()
            return body, mf.sign(body, self._key)

        return self._manifest.model_copy(
            update={"members": archive.write(out, self.staging, self._paths, seal, advance)}
        )

    def _copy_file(self, src: Path, member: str) -> list[str]:
        if not src.is_file() or src.is_symlink():
            return []
        dest = self.staging / member
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        return [member]

    def _copy_tree(self, root: Path, prefix: str, *, public_only: bool = False) -> list[str]:
        """Regular files under `root` (links, dot files and the witness skipped); `public_only`: public keys
        and certificates only."""
        return [
            m
            for rel, path in _files(root, self.settings)
            if not public_only or _public(path)
            for m in self._copy_file(path, f"{prefix}/{rel}")
        ]

    def _seal_private_keys(self, passphrase: bytes) -> list[str]:
        """Every other file of the keys folder (audit key, CSRF secret, Ray token, TLS key), sealed."""
        folder = self.settings.keys_dir
        files = {rel: path.read_bytes() for rel, path in _files(folder, self.settings) if not _public(path)}
        if self.settings.audit_key_path.parent.resolve() != folder.resolve() and self.settings.audit_key_path.exists():
            files[self.settings.audit_key_path.name] = self.settings.audit_key_path.read_bytes()
        dest = self.staging / SEALED_KEYS
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(sealed.seal(files, passphrase))
        return [SEALED_KEYS]

    def _settings_member(self) -> list[str]:
        """The effective settings, for rebuilding a host (a restore never rewrites this host's settings:
        they decide where it restores to)."""
        from sqlalchemy.engine import make_url

        values = self.settings.model_dump(mode="json")
        values["database_url"] = make_url(self.settings.database_url).render_as_string(hide_password=True)
        values = {k: ("***" if any(w in k for w in _SECRET_WORDS) and v else v) for k, v in values.items()}
        dest = self.staging / "config" / "settings.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(values, indent=1, sort_keys=True) + "\n")
        return ["config/settings.json"]

    def _bundles(self) -> list[mf.BundleRef]:
        root, refs = self.settings.model_store, []
        for sig in sorted(root.glob("*/*/model.sig")) if root.is_dir() else []:
            name, ver = sig.parent.parent.name, sig.parent.name
            if not name.startswith("."):
                refs.append(
                    mf.BundleRef(name=name, version=ver, model_sig_sha256=hashlib.sha256(sig.read_bytes()).hexdigest())
                )
        return refs


def _files(root: Path, settings: Settings) -> list[tuple[str, Path]]:
    if not root.is_dir():
        return []
    witness = (settings.audit_witness_dir / WITNESS_FILE).resolve()
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if (
            not path.is_symlink()
            and path.is_file()
            and path.resolve() != witness
            and not any(p.startswith(".") for p in rel.split("/"))
        ):
            out.append((rel, path))
    return out


def _public(path: Path) -> bool:
    """A public key or certificate: never a file that holds a private key, whatever its name."""
    return path.suffix in (".pub", ".crt", ".pem") and b"PRIVATE KEY" not in path.read_bytes()


@contextmanager
def staging_beside(out: Path) -> Iterator[Path]:
    """A private folder beside the archive (same file system, so the space check is the one that matters);
    removed afterwards whatever happens."""
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.staging-"))
    try:
        yield folder
    except OSError as exc:
        raise BackupError(f"backup failed: {exc.strerror or exc} ({getattr(exc, 'filename', '')})") from exc
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _version() -> str:
    try:
        return version("appliance")
    except PackageNotFoundError:
        return "unknown"
