"""A real OpenLDAP `slapd` (Debian's), unprivileged on a free loopback port with LDAPS and StartTLS, a site
CA made by the test, users and groups for the admin page's directory sign-in (a locked account included)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import free_port
from tests.tls.conftest import SiteCA, make_ca

SUFFIX = "dc=site,dc=test"
SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SLAPADD = shutil.which("slapadd") or "/usr/sbin/slapadd"

CONFIG = """
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload ppolicy
pidfile {root}/slapd.pid
TLSCACertificateFile {ca}
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}
database mdb
suffix "{suffix}"
rootdn "cn=admin,{suffix}"
rootpw not-used-by-the-tests
directory {root}/db
overlay ppolicy
ppolicy_default "cn=default,ou=policies,{suffix}"
"""

PEOPLE = {
    "alice": ["auditors"],
    "bob": ["admins", "auditors"],
    "carol": [],
    "locked": ["admins"],
    "o'brien": ["auditors"],
}


def _entries() -> str:
    out = [f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: site\ndc: site\n"]
    out += [
        f"dn: ou={ou},{SUFFIX}\nobjectClass: organizationalUnit\nou: {ou}\n" for ou in ("people", "groups", "policies")
    ]
    out.append(
        f"dn: cn=default,ou=policies,{SUFFIX}\nobjectClass: pwdPolicy\nobjectClass: device\ncn: default\n"
        "pwdAttribute: userPassword\npwdLockout: TRUE\n"
    )
    for user in PEOPLE:
        lock = "pwdAccountLockedTime: 000001010000Z\n" if user == "locked" else ""
        out.append(
            f"dn: {user_dn(user)}\nobjectClass: inetOrgPerson\nuid: {user}\ncn: {user}\nsn: {user}\n"
            f"userPassword: {password(user)}\n{lock}"
        )
    for group in ("auditors", "admins", "others"):
        members = [u for u, groups in PEOPLE.items() if group in groups] or ["carol"]
        out.append(
            f"dn: cn={group},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: {group}\n"
            + "".join(f"member: {user_dn(u)}\n" for u in members)
        )
    return "\n".join(out)


def user_dn(user: str) -> str:
    return f"uid={user},ou=people,{SUFFIX}"


def group_dn(group: str) -> str:
    return f"cn={group},ou=groups,{SUFFIX}"


def password(user: str) -> str:
    return f"{user}-secret-pw"


@dataclass
class Directory:
    ldaps: str
    ldap: str  # StartTLS
    ca: SiteCA

    def settings(self, url: str | None = None, **extra) -> dict:
        return {
            "ldap_url": url or self.ldaps,
            "ldap_ca_file": self.ca.pem_path,
            "ldap_user_dn": f"uid={{user}},ou=people,{SUFFIX}",
            "ldap_group_base": f"ou=groups,{SUFFIX}",
            "ldap_group_roles": {group_dn("auditors"): "auditor", group_dn("admins"): "admin"},
            **extra,
        }


@pytest.fixture(scope="session")
def slapd(tmp_path_factory) -> Iterator[Directory]:
    if not Path(SLAPD).exists():
        pytest.skip("slapd is not installed (Debian package slapd; .ci/run installs it)")
    root = tmp_path_factory.mktemp("slapd")
    ca = make_ca(root / "ca")
    cert, key = ca.issue(root / "tls", "localhost", server=True)
    (root / "db").mkdir()
    conf = root / "slapd.conf"
    conf.write_text(CONFIG.format(root=root, ca=ca.pem_path, cert=cert, key=key, suffix=SUFFIX))
    (root / "data.ldif").write_text(_entries())
    subprocess.run([SLAPADD, "-f", str(conf), "-l", str(root / "data.ldif")], check=True, capture_output=True)
    plain, secure = free_port(), free_port()
    proc = subprocess.Popen(
        [SLAPD, "-f", str(conf), "-h", f"ldap://127.0.0.1:{plain}/ ldaps://127.0.0.1:{secure}/", "-d", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait(secure)
        yield Directory(f"ldaps://127.0.0.1:{secure}", f"ldap://127.0.0.1:{plain}", ca)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _wait(port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("slapd did not start")
