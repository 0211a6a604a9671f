"""Failures of the audit log, each one line for an operator."""

from appliance.errors import ApplianceError


class AuditError(ApplianceError):
    """Bad input to the audit log: an unknown event, a bad filter, an unreadable export file."""


class AuditUnavailable(ApplianceError):
    """The record could not be committed durably; the caller must fail closed (refuse the request)."""

    exit_code = 3


class AuditTampered(ApplianceError):
    """Verification found a record or checkpoint that does not match the chain."""

    exit_code = 4


def first_line(exc: BaseException) -> str:
    """The driver's own first line for a database error (SQLAlchemy appends SQL and links below it)."""
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]
