"""Keys, DSSE envelopes and OpenSSF Model Signing (OMS) signatures over a folder.

Shared by bundles (model.sig), policy packs and the audit log's checkpoints.
"""
