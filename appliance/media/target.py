"""What the installer installs into: the prefix and data folder, the account the appliance runs as, the
`appliance` commands run as that account, and starting and checking the installed version.

Shared by the install steps and the rollback. Standard library only (the installer runs before any venv
exists).
"""

from __future__ import annotations

import argparse
import os
import pwd
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from appliance.media import account, host
from appliance.media.manifest import MediaError


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def symlink(link: Path, target: Path) -> None:
    """Point `link` at `target` by an atomic rename: readers see the old link or the new one."""
    tmp = link.with_name(f".{link.name}.new")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


class Target:
    def __init__(self, media: Path, args: argparse.Namespace) -> None:
        self.media, self.args = media.resolve(), args
        self.prefix = args.prefix.absolute()
        self.data = (args.data_dir or self.prefix / "data").absolute()
        self.token: str | None = None
        self.user = account.account_name(args.user, os.geteuid(), pwd.getpwuid(os.geteuid()).pw_name)
        self._account: account.Account | None = None

    def installed_version(self) -> str | None:
        current = self.prefix / "current"
        return os.readlink(current).rsplit("/", 1)[-1] if current.is_symlink() else None

    def server_cert(self) -> Path:
        return self.data / "keys" / "tls" / "server.crt"

    # -- acting as the appliance's account -------------------------------------------------------------
    def service(self) -> account.Account | None:
        """The account that owns the data folder and acts in it; None without root (or root on purpose)."""
        if self.user is None:
            return None
        if self._account is None:
            self._account = account.ensure(self.user, self.data)
            account.as_account(self._account, lambda: (self.data / "home").mkdir(exist_ok=True))
        return self._account

    def as_account(self, action: Callable[[], None]) -> None:
        account.as_account(self.service(), action)

    def give(self, *paths: Path) -> None:
        """Hand files root made in a folder of its own to the account."""
        found = self.service()
        if found is not None:
            for path in paths:
                os.chown(path, found.uid, found.gid, follow_symlinks=False)

    def env(self) -> dict[str, str]:
        """The settings file where the head's install wrote it; a worker has none (no API), only its data folder."""
        config = self.prefix / "etc" / "appliance.yaml"
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.data / "home"),
            "LANG": "C.UTF-8",
            **({"APPLIANCE_CONFIG": str(config)} if config.exists() else {"APPLIANCE_DATA_DIR": str(self.data)}),
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

    # -- the running appliance -------------------------------------------------------------------------
    def stop_running(self) -> None:
        if self.stop_detached():
            say("  stopped the running appliance")

    def stop_detached(self) -> bool:
        """Stop a server started with --no-systemd: only a process of the account it runs as."""
        found = account.lookup(self.user) if self.user else None
        return host.stop_detached(self.prefix / "run" / "serve.pid", found.uid if found else os.geteuid())

    def start_and_check(self, release: Path, *, check: bool) -> None:
        context = host.pinned_context(self.server_cert()) if self.server_cert().exists() else None
        base = f"{'https' if context else 'http'}://{self.args.host}:{self.args.port}"
        log = self.prefix / "logs" / "serve.log"
        if self.args.no_systemd:
            host.start_detached(
                release / "venv" / "bin" / "appliance",
                self.env(),
                self.prefix / "run" / "serve.pid",
                log,
                self.service(),
            )
        else:
            from appliance.media.units import start_units

            start_units()
        host.wait_ready(base, log, context)
        if not check:
            return
        token, temporary = self.token, self.token is None
        if temporary:  # an upgrade or a resumed install: the first admin key was printed earlier
            token = self.appliance(release, "keys", "create", "--name", "installer-check", "--role", "admin").strip()
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
