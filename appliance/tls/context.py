"""The server's SSL context: TLS 1.2 minimum, AEAD ciphers with forward secrecy only, client certificates
verified against the site's CA when mTLS is on.

TLS 1.3's suites are all AEAD already (OpenSSL offers AES-GCM and ChaCha20-Poly1305); for 1.2 the list is
Mozilla's "intermediate" set: ECDHE key exchange, AES-GCM or ChaCha20-Poly1305. No CBC, no RSA key
exchange, no SHA-1 MACs. Compression and renegotiation are off (CRIME, renegotiation DoS).
"""

from __future__ import annotations

import ssl

from appliance.tls.listen import TlsFiles

TLS12_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)
_CLIENT_AUTH = {"off": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def server_context(files: TlsFiles, client_auth: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_alpn_protocols(["http/1.1"])
    load_pair(ctx, files)
    if files.client_ca is not None and client_auth != "off":
        ctx.load_verify_locations(cafile=str(files.client_ca))
        ctx.verify_mode = _CLIENT_AUTH[client_auth]
    return ctx


def load_pair(ctx: ssl.SSLContext, files: TlsFiles) -> None:
    """(Re)load the certificate chain into `ctx`: new handshakes use it, open connections keep theirs."""
    ctx.load_cert_chain(str(files.cert), str(files.key), password=files.password or _no_password)


def _no_password() -> bytes:
    """Without this, OpenSSL would prompt on the terminal for an encrypted key's password."""
    raise ssl.SSLError("the TLS key is encrypted and no password is set")
