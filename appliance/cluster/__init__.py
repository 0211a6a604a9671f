"""A Ray cluster across hosts, closed to everyone else: the cluster CA and its members on the head (`ca.py`),
the sealed join file one host receives (`invite.py`), and the environment that makes Ray use mutual TLS and
the token (`ray_tls.py`). Standard library and `cryptography` only: the offline installer uses it too."""
