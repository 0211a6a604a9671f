"""TLS on the API: certificates (made, installed, inspected), the server's SSL context, and the TLS front
that terminates client connections in front of Serve's loopback HTTP proxy (docs/architecture.md, "TLS")."""
