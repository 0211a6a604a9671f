"""Sign-in to the admin page with the site's directory (Active Directory or another LDAP server), by `ldap3`.

A user binds as themself (the DN from `ldap_user_dn` with their name escaped in), over LDAPS or StartTLS
checked against the site CA: plain LDAP would carry the password in clear, so it is never used. The role
comes from the groups the user is in (`memberOf` on their entry, or groups under `ldap_group_base` naming
them as `member`/`uniqueMember`), mapped by `ldap_group_roles`; the strongest mapped role wins. An empty
password is refused before any bind: LDAP treats a bind with a name and no password as anonymous, and
that "succeeds".
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from appliance.config import Settings
from appliance.errors import ApplianceError

ROLES = ("admin", "auditor")  # strongest first: a user in both groups signs in as admin


class DirectoryUnavailable(ApplianceError):
    """The directory could not be asked (down, TLS refused, timed out): not the user's fault."""


KEY_PREFIX = "dir:"  # a directory user's key id: no API key stands behind the session


@dataclass(frozen=True)
class DirectoryUser:
    dn: str
    role: str
    group: str  # the group that granted the role

    @property
    def key_id(self) -> str:
        """16 characters, stable per user: their records and sessions link up as a key's do."""
        return KEY_PREFIX + hashlib.sha256(normalise(self.dn).encode()).hexdigest()[:12]


def authenticate(settings: Settings, user: str, password: str) -> DirectoryUser | None:
    """The directory user for these credentials with the page role a group grants them; None for wrong
    credentials, a locked account or no mapped group (the caller cannot tell which: neither can an
    attacker). Blocking: run it in a thread."""
    if not settings.ldap_url or not user or not password:
        return None
    dn = settings.ldap_user_dn.replace("{user}", escape_rdn(user))
    conn = ldap3.Connection(
        _server(settings, settings.ldap_url),
        user=dn,
        password=password,
        raise_exceptions=False,
        receive_timeout=settings.ldap_timeout_s,
    )
    try:
        conn.open()
        if not settings.ldap_url.lower().startswith("ldaps://") and not conn.start_tls():
            raise DirectoryUnavailable(f"the directory at {settings.ldap_url} refused StartTLS")
        if not conn.bind():
            if conn.result.get("description") in ("invalidCredentials", "inappropriateAuthentication"):
                return None
            raise DirectoryUnavailable(f"the directory refused the bind: {conn.result.get('description')}")
        granted = _mapped(settings, _groups(settings, conn, dn))
    except LDAPException as exc:
        raise DirectoryUnavailable(f"the directory at {settings.ldap_url} cannot be reached: {exc}") from exc
    finally:
        conn.unbind()
    return DirectoryUser(dn, *granted) if granted else None


def _server(settings: Settings, url: str) -> ldap3.Server:
    tls = ldap3.Tls(
        validate=ssl.CERT_REQUIRED,
        version=ssl.PROTOCOL_TLS_CLIENT,
        ca_certs_file=str(settings.ldap_ca_file) if settings.ldap_ca_file else None,
    )
    return ldap3.Server(
        url,
        use_ssl=url.lower().startswith("ldaps://"),
        tls=tls,
        connect_timeout=settings.ldap_timeout_s,
        get_info=ldap3.NONE,
    )


def _groups(settings: Settings, conn: ldap3.Connection, dn: str) -> set[str]:
    """The DNs of the groups `dn` belongs to, as the directory says (normalised)."""
    found: set[str] = set()
    if conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["memberOf"]) and conn.entries:
        found |= {str(g) for g in conn.entries[0].entry_attributes_as_dict.get("memberOf", [])}
    if settings.ldap_group_base:
        me = escape_filter_chars(dn)
        conn.search(settings.ldap_group_base, f"(|(member={me})(uniqueMember={me}))", attributes=[])
        found |= {e.entry_dn for e in conn.entries}
    return {normalise(g) for g in found}


def _mapped(settings: Settings, groups: set[str]) -> tuple[str, str] | None:
    """(role, group) of the strongest role a mapped group grants."""
    mapped = {normalise(group): role for group, role in settings.ldap_group_roles.items()}
    for role in ROLES:
        for group in sorted(groups):
            if mapped.get(group) == role:
                return role, group
    return None


def normalise(dn: str) -> str:
    """A DN compared as directories compare them here: case and spaces around separators do not count."""
    return ",".join("=".join(part.strip() for part in rdn.split("=", 1)) for rdn in dn.split(",")).lower()
