"""`install.sh`: preflight, then idempotent steps recorded in a state file; upgrade, rollback, stop.

Layout under the prefix: `releases/VERSION/` (venv, joined wheels, the media's manifest), `current` and
`previous` symlinks (switched by an atomic rename), `etc/appliance.yaml`, `state.json`, `trust/release/`,
`run/`, `logs/`; the data folder (default PREFIX/data) keeps the database, model store, keys and policy
pack across versions, and `snapshots/` holds the database as it was before each upgrade's migrations.
A step that is done is recorded before the next one starts, so a run killed at any point (SIGKILL included)
is finished by running it again; nothing before the switch touches the running version.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pwd
import shutil
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from appliance.errors import ApplianceError
from appliance.files import atomic_write
from appliance.media import account, host, preflight
from appliance.media.join import join_parts
from appliance.media.manifest import MediaError, MediaFile
from appliance.media.verify import VerifiedMedia, media_key, read_manifest, stored_bytes, verify_media
from appliance.media.wheelhouse import serving_requirements
from appliance.signing import keys
from appliance.sqlitecopy import sqlite_backup

ADMIN_KEY = "installer-admin"


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="install.sh", description="Install the appliance from this media.")
    p.add_argument("--prefix", type=Path, default=Path("/opt/appliance"))
    p.add_argument("--data-dir", type=Path, help="default: PREFIX/data")
    p.add_argument(
        "--no-systemd", action="store_true", help="run `appliance serve` detached instead of units"
    )
    p.add_argument("--trust-release-key", type=Path, help="release public key to trust (fingerprint shown)")
    p.add_argument("--yes", action="store_true", help="do not ask before changing anything")
    p.add_argument("--verify-only", action="store_true", help="check the media and stop; writes nothing")
    p.add_argument("--rollback", action="store_true", help="return to the previous version and its data")
    p.add_argument("--allow-downgrade", action="store_true")
    p.add_argument("--no-start", action="store_true", help="install but do not start or call the appliance")
    p.add_argument("--stop", action="store_true", help="stop an appliance started with --no-systemd")
    p.add_argument("--user", help="with --no-systemd, run the appliance as this account (made when missing; "
                   "default appliance; root only on purpose). Ignored without root: it runs as you")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    tls = p.add_mutually_exclusive_group()
    tls.add_argument("--tls-cert", type=Path, help="the site CA's server certificate (PEM; with --tls-key)")
    tls.add_argument("--tls-self-signed", action="store_true",
                     help="make a self-signed certificate for this host (its fingerprint is printed, to pin)")
    p.add_argument("--tls-key", type=Path, help="the key of --tls-cert (PEM, mode 0600)")
    p.add_argument("--tls-ca", type=Path, help="CA bundle for client certificates (mTLS)")
    args = p.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        p.error("--tls-cert and --tls-key go together")
    if args.user not in (None, account.USER) and not args.no_systemd:
        p.error(f"--user goes with --no-systemd (the systemd units run as {account.USER})")
    return args


def main(media: Path, argv: list[str]) -> int:
    try:
        args = parse(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        Installer(media, args).run()
    except ApplianceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted (run the same command again to finish)", file=sys.stderr)
        return 130
    return 0


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Installer:
    def __init__(self, media: Path, args: argparse.Namespace) -> None:
        self.media, self.args = media.resolve(), args
        self.prefix = args.prefix.absolute()
        self.data = (args.data_dir or self.prefix / "data").absolute()
        self.state_file = self.prefix / "state.json"
        self.token: str | None = None
        self.user = account.account_name(args.user, os.geteuid(), pwd.getpwuid(os.geteuid()).pw_name)
        self._account: account.Account | None = None

    # -- entry -----------------------------------------------------------------------------------------
    def run(self) -> None:
        if self.args.stop:
            say("stopped" if self.stop_detached() else "not running")
            return
        if self.args.rollback:
            return self.rollback()
        verified = self.preflight()
        if self.args.verify_only:
            return
        self.install(verified)

    def trusted(self) -> list[keys.PublicKey]:
        found = keys.trusted_keys(self.prefix / "trust" / "release")
        if self.args.trust_release_key:
            found.append(keys.load_public_key(self.args.trust_release_key))
        return found

    def preflight(self) -> VerifiedMedia:
        """Everything that can refuse the install, before anything is written."""
        trusted = self.trusted()
        if not trusted and not self.args.verify_only:
            hint = keys.key_hint(media_key(self.media))
            raise MediaError(
                f"no release key is trusted here yet; the media is signed by {hint}: compare it with "
                "the fingerprint your release team published, then pass --trust-release-key FILE"
            )
        if self.args.verify_only and not trusted:
            trusted = [media_key(self.media)]
        total = stored_bytes(read_manifest(self.media, trusted).manifest)
        say(f"verifying {total / 2**20:.1f} MiB on {self.media} ...")
        verified = verify_media(self.media, trusted, workers=os.cpu_count() or 1)
        m = verified.manifest
        say(f"media {m.version} OK, release key fingerprint {verified.key_hint}")
        if self.args.verify_only:
            return verified
        preflight.check_platform(m)
        driver = preflight.check_gpu(m)
        if driver:
            say(f"NVIDIA driver {driver}")
        installed = self.installed_version()
        if installed != m.version:
            preflight.check_versions(m, installed, allow_downgrade=self.args.allow_downgrade)
        wheels = sum(f.size for f in m.files if f.path.startswith("wheels/"))
        joined = sum(f.size for f in m.files if f.parts and f.path.startswith("wheels/"))
        bundles = sum(f.size for f in m.files if f.path.startswith("bundles/"))
        db = self.data / "appliance.db"
        preflight.check_space(
            {
                self.prefix: joined + wheels * preflight.VENV_FACTOR,
                self.data: 2 * bundles + (db.stat().st_size if db.exists() else 0),
                Path(tempfile.gettempdir()): 32 << 20,
            }
        )
        return verified

    # -- install / upgrade ----------------------------------------------------------------------------
    def install(self, verified: VerifiedMedia) -> None:
        m = verified.manifest
        release = self.prefix / "releases" / m.version
        state = self.load_state()
        if state.get("target") != m.version or state.get("manifest") != verified.manifest_sha256:
            state = {
                **state,
                "target": m.version,
                "manifest": verified.manifest_sha256,
                "done": [],
                "from": self.installed_version(),
            }
        if state["done"] == ["complete"]:
            say(f"{m.version} from this media is already installed in {self.prefix}: nothing to do")
            return
        upgrading_from = state["from"]
        plan = (
            f"{'upgrade ' + upgrading_from + ' -> ' if upgrading_from else 'install '}{m.version} into "
            f"{self.prefix} (data in {self.data})"
        )
        if not self.args.yes and sys.stdin.isatty() and input(f"{plan}? [y/N] ").strip().lower() != "y":
            raise MediaError("not confirmed; nothing was changed")
        say(plan.replace("upgrade ", "upgrading ", 1).replace("install ", "installing ", 1))
        steps = [
            ("trust", lambda: self.trust_release_key(verified)),
            ("wheels", lambda: self.join_wheels(m.files, release)),
            ("venv", lambda: self.make_venv(m.gpu, release)),
            ("config", self.write_config),
            ("stop", self.stop_running),
            ("account", self.own_data),
            ("snapshot", lambda: self.as_account(lambda: self.snapshot(upgrading_from))),
            ("migrate", lambda: self.appliance(release, "db", "upgrade")),
            ("tls", lambda: self.install_tls(release)),
            ("bundles", lambda: self.as_account(lambda: self.import_bundles(m.bundles, m.files, release))),
            ("policy", lambda: self.install_policy(state)),
            ("switch", lambda: self.switch(m.version, upgrading_from)),
            ("systemd", self.install_units),
            ("admin-key", self.first_admin_key),
        ]
        try:
            for name, step in steps:
                if name in state["done"]:
                    continue
                say(f"- {name}")
                step()
                state["done"].append(name)
                self.save_state(state)
        except ApplianceError as exc:
            if "switch" not in state["done"] and upgrading_from and "stop" in state["done"]:
                say(f"step failed; starting {upgrading_from} again")
                self.start_and_check(self.prefix / "current", check=False)
            raise MediaError(f"install step {name!r} failed: {exc}") from None
        if not self.args.no_start:
            self.start_and_check(self.prefix / "current", check=True)
        state["done"] = ["complete"]
        state["installed"] = m.version
        self.save_state(state)
        say(f"installed {m.version}")

    def trust_release_key(self, verified: VerifiedMedia) -> None:
        key = media_key(self.media)
        if keys.key_hint(key) != verified.key_hint:
            raise MediaError("release.pub on the media is not the key that signed MANIFEST.json")
        keys.write_public_key(key, self.prefix / "trust" / "release" / f"{verified.key_hint[:16]}.pub")

    def join_wheels(self, files: tuple[MediaFile, ...], release: Path) -> None:
        (release / "wheels").mkdir(parents=True, exist_ok=True)  # a find-links folder even when none is split
        for f in files:
            if f.parts and f.path.startswith("wheels/"):
                join_parts(self.media, f, release / f.path)

    def make_venv(self, gpu: bool, release: Path) -> None:
        """uv (a static binary from its own wheel on the media): no python3-venv or ensurepip needed.

        Made in place (scripts carry absolute paths); an interrupted attempt has no `.complete` and is redone.
        """
        venv = release / "venv"
        if (venv / ".complete").exists():
            return
        shutil.rmtree(venv, ignore_errors=True)
        uv = self.unpack_uv(release)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "UV_NO_CONFIG": "1",
            "UV_OFFLINE": "1",
            "UV_CACHE_DIR": str(release / ".uv-cache"),
            "UV_PYTHON_DOWNLOADS": "never",
            "HOME": str(release),
        }
        self.exec([str(uv), "venv", "--quiet", "--python", sys.executable, str(venv)], env)
        self.exec(
            [
                str(uv),
                "pip",
                "install",
                "--quiet",
                "--offline",
                "--no-index",
                "--python",
                str(venv / "bin/python"),
                "--find-links",
                str(self.media / "wheels"),
                "--find-links",
                str(release / "wheels"),
                *serving_requirements(release.name, gpu),
            ],
            env,
        )
        shutil.rmtree(release / ".uv-cache", ignore_errors=True)
        (venv / ".complete").write_text("")

    def unpack_uv(self, release: Path) -> Path:
        found = [*(release / "wheels").glob("uv-*.whl"), *(self.media / "wheels").glob("uv-*.whl")]
        wheel = found[0] if found else None  # joined from its parts, or whole on the media
        if wheel is None:
            raise MediaError("the media has no uv wheel")
        dest = release / "tools" / "uv"
        if not dest.exists():
            with zipfile.ZipFile(wheel) as z:
                name = next(n for n in z.namelist() if n.endswith("/scripts/uv"))
                dest.parent.mkdir(parents=True, exist_ok=True)
                with z.open(name) as src, atomic_write(dest, binary=True, mode=0o755) as out:
                    shutil.copyfileobj(src, out)
        return dest

    def write_config(self) -> None:
        config = {
            "data_dir": str(self.data),
            "policy_dir": str(self.data / "policies"),
            "host": self.args.host,
            "port": self.args.port,
        }
        with atomic_write(self.prefix / "etc" / "appliance.yaml", mode=0o644) as f:
            f.write("".join(f"{k}: {json.dumps(v)}\n" for k, v in config.items()))

    def install_tls(self, release: Path) -> None:
        """The site's certificate (replacing one installed before: rotation), or a self-signed one made
        once (an upgrade keeps it, so clients' pins stay valid). Nothing when neither was asked for. The
        operator's files are handed over as private copies the appliance's account can read."""
        a = self.args
        if a.tls_cert is not None:
            with tempfile.TemporaryDirectory(prefix="appliance-tls-") as tmp:
                names = {"--cert": a.tls_cert, "--key": a.tls_key, **({"--ca": a.tls_ca} if a.tls_ca else {})}
                argv = []
                for flag, src in names.items():
                    copy = Path(tmp) / flag.strip("-")
                    shutil.copyfile(src, copy)
                    copy.chmod(0o600)
                    argv += [flag, str(copy)]
                Path(tmp).chmod(0o711)  # root's folder: the account reads its copies, changes nothing else
                self.give(*Path(tmp).iterdir())
                out = self.appliance(release, "tls", "install", *argv)
        elif a.tls_self_signed and not self.server_cert().exists():
            out = self.appliance(release, "tls", "self-signed")
        else:
            return
        say(f"  {out.strip()}")

    def server_cert(self) -> Path:
        return self.data / "keys" / "tls" / "server.crt"

    def stop_running(self) -> None:
        if self.stop_detached():
            say("  stopped the running appliance")

    def stop_detached(self) -> bool:
        """Stop a server started with --no-systemd: only a process of the account it runs as."""
        found = account.lookup(self.user) if self.user else None
        return host.stop_detached(self.prefix / "run" / "serve.pid", found.uid if found else os.geteuid())

    # -- acting as the appliance's account -------------------------------------------------------------
    def service(self) -> account.Account | None:
        """The account that owns the data folder and acts in it; None without root (or root on purpose)."""
        if self.user is None:
            return None
        if self._account is None:
            self._account = account.ensure(self.user, self.data)
            account.as_account(self._account, lambda: (self.data / "home").mkdir(exist_ok=True))
        return self._account

    def own_data(self) -> None:
        if self.service() is None:
            (self.data / "home").mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                say("warning: the appliance will run as root, unsandboxed (--user root)")

    def as_account(self, action: Callable[[], None]) -> None:
        account.as_account(self.service(), action)

    def give(self, *paths: Path) -> None:
        """Hand files root made in a folder of its own to the account."""
        found = self.service()
        if found is not None:
            for path in paths:
                os.chown(path, found.uid, found.gid, follow_symlinks=False)

    def snapshot(self, from_version: str | None) -> None:
        """The database before this upgrade's migrations, for `--rollback` (SQLite's online backup)."""
        db = self.data / "appliance.db"
        if from_version is None or not db.exists():
            return
        dest = self.data / "snapshots" / f"{from_version}.db"
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".partial")
        sqlite_backup(db, tmp)
        os.replace(tmp, dest)

    def import_bundles(self, folders: tuple[str, ...], files: tuple[MediaFile, ...], release: Path) -> None:
        for pub in sorted((self.media / "trust" / "bundles").glob("*.pub")):
            if not (self.data / "trust" / pub.name).exists():
                self.appliance(release, "bundle", "trust", str(pub))
        for folder in folders:
            name_version = folder.split("/", 1)[1]
            name, version = name_version.rsplit("-", 1)
            if (self.data / "models" / name / version).exists():
                continue
            src = self.media / folder
            split = [f for f in files if f.parts and f.path.startswith(folder + "/")]
            if split:  # a folder of its own: the whole files linked beside the joined ones
                staging = self.data / ".staging" / name_version
                for f in files:
                    if f.path.startswith(folder + "/"):
                        target = staging / f.path[len(folder) + 1 :]
                        if f.parts:
                            join_parts(self.media, f, target)
                        elif not target.exists():
                            target.parent.mkdir(parents=True, exist_ok=True)
                            shutil.copyfile(self.media / f.path, target)
                src = staging
            self.appliance(release, "bundle", "import", str(src), "--activate")
            shutil.rmtree(self.data / ".staging", ignore_errors=True)

    def install_policy(self, state: dict) -> None:
        """The media's pack replaces the installed one only when it differs from what earlier media brought:
        a pack edited on site is kept through upgrades that ship the same pack."""
        digest = _tree_digest(self.media / "policies")
        if state.get("policy_digest") != digest:
            self.as_account(self.replace_policy)
        state["policy_digest"] = digest

    def replace_policy(self) -> None:
        dest = self.data / "policies"
        tmp = self.data / ".policies.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(self.media / "policies", tmp)
        old = self.data / "policies.previous"
        if dest.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.rename(dest, old)
        os.rename(tmp, dest)

    def switch(self, version: str, from_version: str | None) -> None:
        if from_version and from_version != version:
            _symlink(self.prefix / "previous", Path("releases") / from_version)
        _symlink(self.prefix / "current", Path("releases") / version)

    def install_units(self) -> None:
        if self.args.no_systemd:
            return
        from appliance.media.units import install_units

        install_units(self.media / "installer" / "systemd", self.prefix, self.data)

    def first_admin_key(self) -> None:
        marker = self.data / "installer" / "admin-key-issued"
        if marker.exists():
            return
        self.token = self.appliance(
            self.prefix / "current", "keys", "create", "--name", ADMIN_KEY, "--role", "admin"
        ).strip()

        def mark() -> None:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("the first admin key was printed once by install.sh\n")

        self.as_account(mark)
        print(f"First admin API key (shown once, store it now): {self.token}", flush=True)

    # -- rollback -------------------------------------------------------------------------------------
    def rollback(self) -> None:
        previous = self.prefix / "previous"
        if not previous.is_symlink():
            raise MediaError(f"there is no previous version under {self.prefix} to roll back to")
        version, current = os.readlink(previous).rsplit("/", 1)[-1], self.installed_version()
        snapshot = self.data / "snapshots" / f"{version}.db"
        if not snapshot.exists():
            raise MediaError(f"no database snapshot of {version} in {snapshot.parent}")
        say(f"rolling back {current} -> {version}")
        self.stop_running()
        self.as_account(lambda: self.restore_data(snapshot))
        _symlink(self.prefix / "current", Path("releases") / version)
        previous.unlink()
        state = self.load_state()
        state.update(target=version, installed=version, done=["complete"], manifest=None, policy_digest=None)
        self.save_state(state)
        if not self.args.no_start:
            self.start_and_check(self.prefix / "current", check=True)
        say(f"rolled back to {version}")

    def restore_data(self, snapshot: Path) -> None:
        db = self.data / "appliance.db"
        tmp = db.with_name("appliance.db.rollback")
        sqlite_backup(snapshot, tmp)
        carried = _carry_audit(db, tmp)
        for suffix in ("-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        os.replace(tmp, db)
        if (self.data / "policies.previous").exists():
            shutil.rmtree(self.data / "policies", ignore_errors=True)
            os.rename(self.data / "policies.previous", self.data / "policies")
        say(f"database restored to its state before the upgrade; {carried} audit records since carried over")

    # -- helpers --------------------------------------------------------------------------------------
    def start_and_check(self, release: Path, *, check: bool) -> None:
        context = host.pinned_context(self.server_cert()) if self.server_cert().exists() else None
        base = f"{'https' if context else 'http'}://{self.args.host}:{self.args.port}"
        log = self.prefix / "logs" / "serve.log"
        if self.args.no_systemd:
            host.start_detached(release / "venv" / "bin" / "appliance", self.env(), self.prefix / "run" / "serve.pid",
                                log, self.service())
        else:
            from appliance.media.units import start_units

            start_units()
        host.wait_ready(base, log, context)
        if not check:
            return
        token, temporary = self.token, self.token is None
        if temporary:  # an upgrade or a resumed install: the first admin key was printed earlier
            token = self.appliance(
                release, "keys", "create", "--name", "installer-check", "--role", "admin"
            ).strip()
        assert token is not None  # printed by this install, or the temporary one just made
        try:
            model = self.first_model(base, token, context)
            answer, seq = host.first_answer(base, token, model, context)
        finally:
            if temporary:  # tokens are ak-KEYID.SECRET
                self.appliance(release, "keys", "revoke", token[3:].split(".")[0], check=False)
        print(f"answer from {model}: {answer}\naudit record seq {seq}", flush=True)

    def first_model(self, base: str, token: str, context: ssl.SSLContext | None) -> str:
        data, _ = host._call(base, "/v1/models", token, context=context)
        if not data["data"]:
            raise MediaError("the appliance serves no model (the media carried no bundle)")
        return data["data"][0]["id"]

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.data / "home"),
            "LANG": "C.UTF-8",
            "APPLIANCE_CONFIG": str(self.prefix / "etc" / "appliance.yaml"),
            "PIP_NO_INDEX": "1",
            "PIP_CONFIG_FILE": os.devnull,
        }

    def appliance(self, release: Path, *args: str, check: bool = True) -> str:
        """An `appliance` command as the account (root only: a step already run as it is that account)."""
        found = self.service() if os.geteuid() == 0 else None
        proc = subprocess.run(
            [str(release / "venv" / "bin" / "appliance"), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            cwd=self.data if found is not None else None,  # the account may not enter the operator's folder
            **(found.popen_args() if found is not None else {}),
        )
        if proc.returncode != 0 and check:
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            raise MediaError(f"appliance {' '.join(args[:2])}: {lines[-1] if lines else proc.returncode}")
        return proc.stdout

    def exec(self, argv: list[str], env: dict[str, str]) -> None:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
            raise MediaError(f"{Path(argv[0]).name} {argv[1]}: {lines[-1] if lines else proc.returncode}")

    def installed_version(self) -> str | None:
        current = self.prefix / "current"
        return os.readlink(current).rsplit("/", 1)[-1] if current.is_symlink() else None

    def load_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        except ValueError:
            raise MediaError(
                f"{self.state_file} is corrupt; move it away to start the install afresh"
            ) from None

    def save_state(self, state: dict) -> None:
        with atomic_write(self.state_file, mode=0o644) as f:
            json.dump(state, f, indent=1, sort_keys=True)


def _symlink(link: Path, target: Path) -> None:
    tmp = link.with_name(f".{link.name}.new")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _carry_audit(current: Path, restored: Path) -> int:
    """Audit records appended after the snapshot continue its chain: copy them into the restored database."""
    if not current.exists():
        return 0
    with sqlite3.connect(restored) as dst:
        cols = [r[1] for r in dst.execute("PRAGMA table_info(audit_records)")]
        if not cols:
            return 0
        head = dst.execute("SELECT COALESCE(MAX(seq), 0) FROM audit_records").fetchone()[0]
        dst.execute("ATTACH DATABASE ? AS cur", (str(current),))
        names = ", ".join(cols)
        n = dst.execute(
            f"INSERT INTO audit_records ({names}) SELECT {names} FROM cur.audit_records WHERE seq > ?",
            (head,),
        ).rowcount
        # Their checkpoints too: the witness holds them, and verify requires the database to keep them.
        own = {r[1] for r in dst.execute("PRAGMA table_info(audit_checkpoints)")}
        theirs = [r[1] for r in dst.execute("PRAGMA cur.table_info(audit_checkpoints)")]
        shared = ", ".join(c for c in theirs if c in own)
        if shared:
            dst.execute(
                f"INSERT INTO audit_checkpoints ({shared}) SELECT {shared} FROM cur.audit_checkpoints c "
                "WHERE c.seq >= ? AND NOT EXISTS (SELECT 1 FROM main.audit_checkpoints m "
                "WHERE m.kind = c.kind AND m.seq = c.seq)", (head,))
        dst.commit()
        dst.execute("DETACH DATABASE cur")
    dst.close()
    return n


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(
                p.relative_to(root).as_posix().encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest()
            )
    return h.hexdigest()
