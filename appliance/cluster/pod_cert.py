"""A Ray pod's own certificate on Kubernetes (the chart's `rayTLS.mode=secret`), issued when the pod starts.

Ray's gRPC clients check the server's name: workers reach the head by its Service name (KubeRay's
`FQ_RAY_IP`), the head reaches each worker by its pod IP, which exists only once the pod does. So no Secret
made beforehand can hold a worker's certificate; the chart's init container issues one from the site's CA
Secret (a kubernetes.io/tls Secret: `tls.crt` the CA certificate, `tls.key` its key, made by kubectl or by
cert-manager as an `isCA` Certificate), mounted read-only into that init container only. The Ray container
gets the pod's certificate, key and the CA certificate through a memory-backed volume: never the CA key.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from appliance.cluster.ca import _MUTUAL, LOOPBACK, NODE_DAYS, ClusterError, check_addresses
from appliance.files import atomic_write
from appliance.tls import certs


def issue_pod_cert(ca_dir: Path, out: Path, addresses: list[str], names: list[str]) -> str:
    """node.crt, node.key (0600) and ca.crt in `out`, for a pod at `addresses` named `names`; the fingerprint."""
    ca = certs.parse_certs(certs.read_pem(ca_dir / "tls.crt", "the Ray CA certificate (tls.crt)"), "tls.crt")[0]
    try:
        ca_key = serialization.load_pem_private_key(certs.read_pem(ca_dir / "tls.key", "the Ray CA key"), None)
    except (ValueError, TypeError):
        raise ClusterError(f"{ca_dir / 'tls.key'} is not an unencrypted PEM private key") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey) or ca_key.public_key() != ca.public_key():
        raise ClusterError(f"{ca_dir / 'tls.key'} is not the EC key of the CA certificate in {ca_dir / 'tls.crt'}")
    try:
        is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        ca.verify_directly_issued_by(ca)
    except (x509.ExtensionNotFound, ValueError, TypeError, InvalidSignature):
        is_ca = False
    if not is_ca:  # Ray's peers trust exactly this certificate: it must be the root, not an intermediate
        raise ClusterError(f"{ca_dir / 'tls.crt'} is not a self-signed CA certificate")
    key = certs.new_key()
    cert = certs.issue(
        certs.name_of(names[0] if names else addresses[0]),
        key.public_key(),
        ca.subject,
        ca_key,
        NODE_DAYS,
        names=list(dict.fromkeys([*names, "localhost"])),
        addresses=list(dict.fromkeys([*check_addresses(addresses), *LOOPBACK])),
        usages=_MUTUAL,
    )
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "node.key", binary=True, mode=0o600) as f:
        f.write(certs.pem_key(key))
    with atomic_write(out / "node.crt", binary=True, mode=0o644) as f:
        f.write(certs.pem(cert))
    with atomic_write(out / "ca.crt", binary=True, mode=0o644) as f:
        f.write(certs.pem(ca))
    return certs.describe(cert).fingerprint
