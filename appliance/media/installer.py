"""`install.sh`: preflight, then idempotent steps recorded in a state file; upgrade, rollback, stop.

Layout under the prefix: `releases/VERSION/` (venv, joined wheels, the media's manifest), `current` and
`previous` symlinks (switched by an atomic rename), `etc/appliance.yaml`, `state.json`, `trust/release/`,
`run/`, `logs/`; the data folder (default PREFIX/data) keeps the database, model store, keys and policy
pack across versions, and `snapshots/` holds the database as it was before each upgrade's migrations.
A step that is done is recorded before the next one starts, so a run killed at any point (SIGKILL included)
is finished by running it again; nothing before the switch touches the running version.

This module holds the order of the steps and the state file that records them; the options are
`install_args`, each step's body `steps`, the release's virtual environment `venv`, the rollback `rollback`
(with `appliance.audit.carry`), and the prefix, data folder and account they all act on `target`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from appliance.errors import ApplianceError
from appliance.files import atomic_write
from appliance.media import preflight, steps, venv, worker
from appliance.media.install_args import parse
from appliance.media.manifest import MediaError
from appliance.media.rollback import rollback
from appliance.media.target import Target, say
from appliance.media.verify import VerifiedMedia, media_key, read_manifest, stored_bytes, verify_media
from appliance.signing import keys


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


class Installer:
    def __init__(self, media: Path, args: argparse.Namespace) -> None:
        self.args = args
        self.target = Target(media, args)
        self.state_file = self.target.prefix / "state.json"
        self.join: tuple[worker.Join, str] | None = None  # a worker's join file and its fingerprint

    # -- entry -----------------------------------------------------------------------------------------
    def run(self) -> None:
        if self.args.stop:
            say("stopped" if self.target.stop_detached() else "not running")
            return
        if self.args.rollback:
            return self.rollback()
        if self.args.leave:
            return worker.leave(self.target)
        self.join = worker.read_join(self.args) if self.args.join else None  # first: a wrong passphrase costs nothing
        verified = self.preflight()
        if self.args.verify_only:
            return
        self.install(verified)

    def trusted(self) -> list[keys.PublicKey]:
        found = keys.trusted_keys(self.target.prefix / "trust" / "release")
        if self.args.trust_release_key:
            found.append(keys.load_public_key(self.args.trust_release_key))
        return found

    def preflight(self) -> VerifiedMedia:
        """Everything that can refuse the install, before anything is written."""
        t = self.target
        trusted = self.trusted()
        if not trusted and not self.args.verify_only:
            hint = keys.key_hint(media_key(t.media))
            raise MediaError(
                f"no release key is trusted here yet; the media is signed by {hint}: compare it with "
                "the fingerprint your release team published, then pass --trust-release-key FILE"
            )
        if self.args.verify_only and not trusted:
            trusted = [media_key(t.media)]
        total = stored_bytes(read_manifest(t.media, trusted).manifest)
        say(f"verifying {total / 2**20:.1f} MiB on {t.media} ...")
        verified = verify_media(t.media, trusted, workers=os.cpu_count() or 1)
        m = verified.manifest
        say(f"media {m.version} OK, release key fingerprint {verified.key_hint}")
        if self.args.verify_only:
            return verified
        preflight.check_platform(m)
        driver = preflight.check_gpu(m)
        if driver:
            say(f"NVIDIA driver {driver}")
        if self.join is not None:
            worker.check_version(self.join[0], m)
            worker.check_host(t, self.join[0])
            worker.check_rejoin(t, self.join[0])
        installed = t.installed_version()
        if installed != m.version:
            preflight.check_versions(m, installed, allow_downgrade=self.args.allow_downgrade)
            if self.join is None and installed is not None:
                worker.check_workers_follow(t, m.version)
        wheels = sum(f.size for f in m.files if f.path.startswith("wheels/"))
        joined = sum(f.size for f in m.files if f.parts and f.path.startswith("wheels/"))
        bundles = sum(f.size for f in m.files if f.path.startswith("bundles/"))
        db = t.data / "appliance.db"
        preflight.check_space(
            {
                t.prefix: joined + wheels * preflight.VENV_FACTOR,
                t.data: 2 * bundles + (db.stat().st_size if db.exists() and self.join is None else 0),
                Path(tempfile.gettempdir()): 32 << 20,
            }
        )
        return verified

    # -- install / upgrade ----------------------------------------------------------------------------
    def install(self, verified: VerifiedMedia) -> None:
        t, m = self.target, verified.manifest
        release = t.prefix / "releases" / m.version
        state = self.load_state()
        joined = self.join[1] if self.join else None
        if (
            state.get("target") != m.version
            or state.get("manifest") != verified.manifest_sha256
            or state.get("join") != joined
        ):
            state = {
                **state,
                "target": m.version,
                "manifest": verified.manifest_sha256,
                "join": joined,
                "done": [],
                "from": t.installed_version(),
            }
        if state["done"] == ["complete"]:
            say(f"{m.version} from this media is already installed in {t.prefix}: nothing to do")
            return
        upgrading_from = state["from"]
        plan = (
            f"{'upgrade ' + upgrading_from + ' -> ' if upgrading_from else 'install '}{m.version} into "
            f"{t.prefix} (data in {t.data})"
        )
        if not self.args.yes and sys.stdin.isatty() and input(f"{plan}? [y/N] ").strip().lower() != "y":
            raise MediaError("not confirmed; nothing was changed")
        say(plan.replace("upgrade ", "upgrading ", 1).replace("install ", "installing ", 1))
        order: list[tuple[str, Callable[[], object]]] = [
            ("trust", lambda: steps.trust_release_key(t, verified)),
            ("wheels", lambda: venv.join_wheels(t.media, m.files, release)),
            ("venv", lambda: venv.make_venv(t.media, m.gpu, release)),
            ("config", lambda: steps.write_config(t)),
            ("stop", t.stop_running),
            ("account", lambda: steps.own_data(t)),
            ("snapshot", lambda: t.as_account(lambda: steps.snapshot(t, upgrading_from))),
            ("migrate", lambda: t.appliance(release, "db", "upgrade")),
            ("tls", lambda: steps.install_tls(t, release)),
            ("bundles", lambda: t.as_account(lambda: steps.import_bundles(t, m.bundles, m.files, release))),
            ("policy", lambda: steps.install_policy(t, state)),
            ("switch", lambda: steps.switch(t, m.version, upgrading_from)),
            ("systemd", lambda: steps.install_units(t)),
            ("admin-key", lambda: steps.first_admin_key(t)),
        ]
        if self.join is not None:
            order = worker.order(t, verified, self.join[0])
        try:
            for name, step in order:
                if name in state["done"]:
                    continue
                say(f"- {name}")
                step()
                state["done"].append(name)
                self.save_state(state)
        except ApplianceError as exc:
            if "switch" not in state["done"] and upgrading_from and "stop" in state["done"]:
                say(f"step failed; starting {upgrading_from} again")
                t.start_and_check(t.prefix / "current", check=False)
            raise MediaError(f"install step {name!r} failed: {exc}") from None
        if self.join is not None:
            if not self.args.no_start:
                worker.start(t)
        elif not self.args.no_start:
            t.start_and_check(t.prefix / "current", check=True)
        state["done"] = ["complete"]
        state["installed"] = m.version
        self.save_state(state)
        say(f"installed {m.version}")

    def rollback(self) -> None:
        t = self.target
        version = rollback(t)
        state = self.load_state()
        state.update(target=version, installed=version, done=["complete"], manifest=None, policy_digest=None)
        self.save_state(state)
        if not self.args.no_start:
            t.start_and_check(t.prefix / "current", check=True)
        say(f"rolled back to {version}")

    # -- the state file -------------------------------------------------------------------------------
    def load_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        except ValueError:
            raise MediaError(f"{self.state_file} is corrupt; move it away to start the install afresh") from None

    def save_state(self, state: dict) -> None:
        with atomic_write(self.state_file, mode=0o644) as f:
            json.dump(state, f, indent=1, sort_keys=True)
