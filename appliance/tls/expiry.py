"""How long the certificate in use has left, for the gauge on /metrics and the admin page's banner.

Read from the file (re-parsed only when it changes), so a rotated certificate is reflected without a
restart and every gateway replica on the host answers alike.
"""

from __future__ import annotations

import threading
from pathlib import Path

from appliance.config import Settings
from appliance.tls import certs
from appliance.tls.listen import tls_dir


class ExpiryWatch:
    def __init__(self, settings: Settings) -> None:
        self.path: Path = settings.tls_cert or tls_dir(settings) / certs.CERT_NAME
        self.warn_days = settings.tls_expiry_warning_days
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None
        self._info: certs.CertInfo | None = None

    def info(self) -> certs.CertInfo | None:
        """The certificate's details; None when there is none (plain HTTP) or it cannot be read."""
        try:
            st = self.path.stat()
        except OSError:
            return None
        with self._lock:
            if self._seen != (st.st_mtime_ns, st.st_size):
                try:
                    self._info = certs.describe(certs.load_certs(self.path)[0])
                except certs.CertificateError:
                    self._info = None
                self._seen = (st.st_mtime_ns, st.st_size)
            return self._info

    def days_left(self) -> float:
        """Days until expiry; NaN without a certificate (Prometheus shows no value rather than a false one)."""
        info = self.info()
        return float("nan") if info is None else float(info.days_left())

    def warning(self) -> str | None:
        info = self.info()
        if info is None or info.days_left() >= self.warn_days:
            return None
        left = info.days_left()
        when = "has EXPIRED" if left < 0 else f"expires in {left} days"
        return (
            f"The API's TLS certificate {when} ({info.not_after:%Y-%m-%d}); install a new one with "
            f"appliance tls install."
        )
