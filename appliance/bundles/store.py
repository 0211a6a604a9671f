"""The model store: verified bundles under `NAME/VERSION`, which one is active, and rollback protection.

Every change happens under an exclusive lock on `.lock`. An import copies into `.tmp/` while hashing and
appears under its final name by one rename, so a crash (even SIGKILL) leaves either nothing or a complete
bundle; leftovers in `.tmp/` are swept by the next store operation. `state.json` records the active
versions and, per name, the highest version ever imported (the rollback high-water mark).

The store's own folders and files (`.tmp`, `.load`, `.lock`, each NAME folder) are never reached through a
symlink, and leftovers are removed through a descriptor of their folder: whoever owns the store (the
appliance's account) cannot make a root process that runs a store operation delete or create anything
outside it by planting links. (The installer runs store operations as that account anyway.)
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.bundles.metadata import SIGNATURE_FILE, BundleError, BundleMetadata, semver_key
from appliance.bundles.signing import VerifiedBundle, read_verified_metadata, verify_bundle
from appliance.files import atomic_write, fsync_dir, open_nofollow, real_dir, sweep
from appliance.signing import keys, oms
from appliance.signing.hashing import HeldFiles, Progress


@dataclass(frozen=True)
class StoredBundle:
    name: str
    version: str
    active: bool
    metadata: BundleMetadata
    size: int


class BundleStore:
    def __init__(self, root: Path, *, workers: int = 1, max_signature_bytes: int = 16 << 20) -> None:
        self.root = root
        self.workers = workers
        self.max_signature_bytes = max_signature_bytes

    # -- changes -------------------------------------------------------------------------------------
    def import_bundle(
        self,
        src: Path,
        trusted: list[keys.PublicKey],
        *,
        allow_downgrade: bool = False,
        progress: Progress | None = None,
        before_place: Callable[[VerifiedBundle], None] | None = None,
    ) -> VerifiedBundle:
        """Verify `src` while copying it in; refuse replays of old versions unless `allow_downgrade`.

        `before_place` runs once every byte is verified and before the bundle appears in the store or raises
        the version floor: the audit record goes there, so a record that cannot be written stops the import
        with nothing changed."""
        manifest, _ = oms.read_signature(
            src, trusted, signature_name=SIGNATURE_FILE, max_signature_bytes=self.max_signature_bytes
        )
        meta = read_verified_metadata(src, manifest)
        meta.check_compatible()
        with self._locked() as state:
            dest = self.root / meta.name / meta.version
            if dest.exists():
                raise BundleError(f"{meta.name} {meta.version} is already in the store")
            highest = self._highest(state, meta.name)
            if highest and semver_key(meta.version) <= semver_key(highest) and not allow_downgrade:
                raise BundleError(
                    f"{meta.name} {meta.version} is not newer than {highest}, already imported "
                    "(rollback protection; --allow-downgrade to override)"
                )
            _check_room(src, self.root)
            tmp = Path(tempfile.mkdtemp(prefix="import-", dir=self.root / ".tmp"))
            try:
                verified = verify_bundle(
                    src,
                    trusted,
                    workers=self.workers,
                    progress=progress,
                    max_signature_bytes=self.max_signature_bytes,
                    copy_to=tmp,
                )
                if verified.metadata != meta:
                    raise BundleError(f"{src} changed during import")
                shutil.copyfile(src / SIGNATURE_FILE, tmp / SIGNATURE_FILE, follow_symlinks=False)
                # The signature file was re-read: prove the copy is the one whose manifest we checked.
                copied, _ = oms.read_signature(
                    tmp, trusted, signature_name=SIGNATURE_FILE, max_signature_bytes=self.max_signature_bytes
                )
                if copied.digests != verified.manifest.digests:
                    raise BundleError(f"{src / SIGNATURE_FILE} changed during import")
                _fsync_tree(tmp)
                if before_place is not None:
                    before_place(verified)
                real_dir(dest.parent)
                os.rename(tmp, dest)
                fsync_dir(dest.parent)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            if not highest or semver_key(meta.version) > semver_key(highest):
                state.setdefault("highest", {})[meta.name] = meta.version
            self._write_state(state)
        return VerifiedBundle(dest, meta, verified.manifest, verified.signer_hint)

    def activate(self, name: str, version: str, trusted: list[keys.PublicKey]) -> None:
        """Mark `name`/`version` as the one to serve, after a full verification of what is stored."""
        self.open(name, version, trusted)
        self.mark_active(name, version)

    def mark_active(self, name: str, version: str) -> None:
        """The state change alone, for callers that verified (and audited) in between."""
        with self._locked() as state:
            self._require(name, version)
            state.setdefault("active", {})[name] = version
            self._write_state(state)

    def check_removable(self, name: str, version: str) -> Path:
        """The bundle's folder, if it exists and is not the active version (callers audit before removing)."""
        path = self._require(name, version)
        if self.active().get(name) == version:
            raise BundleError(f"{name} {version} is active; activate another version first")
        return path

    def remove(self, name: str, version: str) -> None:
        with self._locked():
            path = self.check_removable(name, version)
            os.rename(path, self.root / ".tmp" / f"remove-{name}-{version}")
            sweep(self.root / ".tmp")
            if not any(path.parent.iterdir()):
                path.parent.rmdir()

    # -- reads ---------------------------------------------------------------------------------------
    def open(
        self, name: str, version: str | None, trusted: list[keys.PublicKey], progress: Progress | None = None
    ) -> VerifiedBundle:
        """Re-verify every byte of a stored bundle before it is loaded (see docs/architecture.md)."""
        if version is None:
            version = self.active().get(name)
            if version is None:
                raise BundleError(f"no active version of {name}")
        path = self._require(name, version)
        verified = verify_bundle(
            path, trusted, workers=self.workers, progress=progress, max_signature_bytes=self.max_signature_bytes
        )
        if (verified.metadata.name, verified.metadata.version) != (name, version):
            raise BundleError(f"{path} holds {verified.metadata.name} {verified.metadata.version}, not its folder name")
        return verified

    @contextmanager
    def loading(self, name: str, version: str, trusted: list[keys.PublicKey]) -> Iterator[VerifiedBundle]:
        """A stored bundle to load from: every file opened once and verified through that descriptor, and
        `path` a private folder of hard links to those very inodes (made from the descriptors, so no name
        is looked up twice), so the loader reads the bytes that were hashed even if the store's files are
        swapped meanwhile. ONNX Runtime refuses external data reached through symlinks, hence links. Raises
        after loading if a file changed while held (written in place, or linked or renamed over, which
        could hide a write): the load must then be thrown away. On a read-only store (a Kubernetes volume
        mounted so) nothing can be swapped and the bundle loads in place. Loads from one store take turns
        (see `_load_links`), so a process must not nest them."""
        path = self._require(name, version)
        with self._load_links() as private:
            held = HeldFiles(private)
            try:
                verified = verify_bundle(
                    path, trusted, workers=self.workers, held=held, max_signature_bytes=self.max_signature_bytes
                )
                if (verified.metadata.name, verified.metadata.version) != (name, version):
                    raise BundleError(
                        f"{path} holds {verified.metadata.name} {verified.metadata.version}, not its folder name"
                    )
                yield VerifiedBundle(held.link_dir or path, verified.metadata, verified.manifest, verified.signer_hint)
                changed = held.changed()
                if changed is not None:
                    raise BundleError(
                        f"{path / changed} changed on disk while it was being loaded (written to, "
                        "or linked or renamed over)"
                    )
            finally:
                held.close()

    @contextmanager
    def _load_links(self) -> Iterator[Path | None]:
        """A new private folder under `.load` for one load's links (None on a read-only store), from before
        they are made until after they are removed under an exclusive lock on `.load`: a link made or
        removed by another load (or a sweep) would move the link count and ctime of files this one holds,
        which `HeldFiles.changed` must take for a possible write. Under the lock every other folder there
        was left by a load that died (its links would keep old inodes' space in use), and is swept."""
        if os.statvfs(self.root).f_flag & os.ST_RDONLY:
            yield None
            return
        loads = self.root / ".load"
        try:
            real_dir(loads)  # a planted symlink is removed, never followed
            fd = os.open(loads, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            raise BundleError(f"cannot prepare {loads} for loading: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            sweep(loads)
            private = loads / f"{os.getpid()}-{secrets.token_hex(4)}"
            try:
                private.mkdir(mode=0o700)
                yield private
            finally:
                shutil.rmtree(private, ignore_errors=True)
        finally:
            os.close(fd)

    def active(self) -> dict[str, str]:
        return dict(self._read_state().get("active", {}))

    def list(self) -> list[StoredBundle]:
        active = self.active()
        out = []
        for name_dir in sorted(self._bundle_dirs()):
            for version_dir in sorted(name_dir.iterdir(), key=lambda p: semver_key(p.name)):
                try:
                    meta = BundleMetadata.read(version_dir)
                except BundleError:
                    continue
                size = sum(f.stat().st_size for f in version_dir.rglob("*") if f.is_file())
                out.append(
                    StoredBundle(
                        name_dir.name, version_dir.name, active.get(name_dir.name) == version_dir.name, meta, size
                    )
                )
        return out

    # -- internals -----------------------------------------------------------------------------------
    def _require(self, name: str, version: str) -> Path:
        path = self.root / name / version
        if (
            not (_NAME.fullmatch(name) and _is_semver(version))
            or not path.is_dir()
            or path.is_symlink()
            or path.parent.is_symlink()
        ):
            raise BundleError(f"{name} {version} is not in the store")
        return path

    def _bundle_dirs(self) -> Iterator[Path]:
        if self.root.is_dir():
            yield from (p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def _highest(self, state: dict[str, Any], name: str) -> str | None:
        versions = [state.get("highest", {}).get(name)]
        if (self.root / name).is_dir():
            versions += [p.name for p in (self.root / name).iterdir()]
        versions = [v for v in versions if v]
        return max(versions, key=semver_key) if versions else None

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.root.mkdir(parents=True, exist_ok=True)
        real_dir(self.root / ".tmp")
        lock = open_nofollow(self.root / ".lock", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            sweep(self.root / ".tmp")  # leftovers of a killed import or removal
            yield self._read_state()
        finally:
            os.close(lock)

    def _read_state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads((self.root / "state.json").read_text())
            return state
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise BundleError(f"{self.root / 'state.json'} is corrupt") from exc

    def _write_state(self, state: dict[str, Any]) -> None:
        with atomic_write(self.root / "state.json") as f:
            json.dump(state, f, indent=2, sort_keys=True)
        fsync_dir(self.root)


_NAME = re.compile(BundleMetadata.model_fields["name"].metadata[0].pattern)


def _is_semver(version: str) -> bool:
    try:
        semver_key(version)
    except BundleError:
        return False
    return True


def _check_room(src: Path, root: Path) -> None:
    """Refuse before copying what the store's disk cannot hold: a listed file of any size would otherwise
    be copied in full before its digest fails (the OMS `files` method signs no sizes)."""
    need = sum(oms.scan_folder(src, {SIGNATURE_FILE}).values())
    free = shutil.disk_usage(root).free
    if need > free:
        raise BundleError(f"{src} holds {need / 2**20:.1f} MiB but the model store has {free / 2**20:.1f} MiB free")


def _fsync_tree(root: Path) -> None:
    """File contents were fsynced as written; make the directory entries durable too."""
    for dirpath, _, _ in os.walk(root):
        fsync_dir(Path(dirpath))
