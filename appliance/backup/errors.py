"""One error type for backup and restore: the CLI prints it as one line and changes nothing."""

from __future__ import annotations

from appliance.errors import ApplianceError


class BackupError(ApplianceError):
    """An archive that cannot be written, read, trusted or restored here."""
