"""Signed offline weight bundles: format, signing, verification and the model store."""

from appliance.bundles.metadata import METADATA_FILE, PROFILES, SIGNATURE_FILE, BundleError, BundleMetadata
from appliance.bundles.signing import VerifiedBundle, sign_bundle, verify_bundle
from appliance.bundles.store import BundleStore, StoredBundle
from appliance.signing.keys import trusted_keys

__all__ = [
    "METADATA_FILE",
    "PROFILES",
    "SIGNATURE_FILE",
    "BundleError",
    "BundleMetadata",
    "BundleStore",
    "StoredBundle",
    "VerifiedBundle",
    "sign_bundle",
    "trusted_keys",
    "verify_bundle",
]
