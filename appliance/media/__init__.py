"""Offline installation media: a signed manifest of files and parts, its build, verification and install.

Everything here imports only the standard library and `cryptography` (plus rich/typer in the CLI layer):
the installer runs these modules straight from the appliance wheel on the media, on a host where nothing
else is installed yet.
"""
