"""Quotas held in the database (ledger.py) and usage reports recomputed from the audit log (report.py)."""

from appliance.usage.ledger import Amounts, QuotaExceeded, QuotaLedger, QuotaUnavailable, Reservation, outcome

__all__ = ["Amounts", "QuotaExceeded", "QuotaLedger", "QuotaUnavailable", "Reservation", "outcome"]
