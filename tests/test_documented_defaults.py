"""The defaults docs/architecture.md promises are the defaults `Settings()` has."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from appliance.config import Settings


def test_documented_defaults_hold():
    s = Settings()
    assert s.ray_auth_mode == "token"  # "RAY_AUTH_MODE=token ... (default; APPLIANCE_RAY_AUTH_MODE=disabled ...)"
    assert s.host == "127.0.0.1" and s.port == 8000  # "binds the HTTP proxy to 127.0.0.1:8000 by default"
    assert (s.audit_checkpoint_every, s.audit_checkpoint_seconds) == (1000, 1.0)  # "every 1,000 records, or 1 s"
    assert s.audit_witness_dir == s.keys_dir  # "by default beside the keys"
    assert s.audit_min_retention_days == 90  # "newer than `audit_min_retention_days` (90) days ago is refused"
    assert (s.auth_failure_rate, s.auth_failure_burst, s.auth_failure_window_s) == (1.0, 20, 60.0)
    assert (s.audit_export_concurrency, s.audit_export_deadline_s) == (2, 1800.0)  # "default 2", "default 1800 s"
    assert s.audit_forward == [] and s.audit_forward_confirm_s == 1.0  # "stayed open audit_forward_confirm_s (1 s)"
    assert s.audit_forward_lag_warning == 10_000 and s.audit_read_window_s == 300.0  # "(10,000)", "(300 s)"
    # "default `key`: a prompt is reused only for the same API key"; "default 0.25 of the budget on CPU, off on CUDA"
    assert s.engine_prefix_cache_scope == "key" and s.engine_prefix_cache is None


def test_documented_tls_defaults_hold():
    s = Settings()
    assert s.tls_cert is None and s.tls_client_auth == "off"  # "Plain HTTP is served on loopback only"
    assert s.allow_plain_http is False
    assert s.tls_reload_seconds == 30.0  # "loads the new pair within tls_reload_seconds (30 s)"
    assert s.tls_expiry_warning_days == 30  # "A certificate within 30 days of expiry is a warning"
    assert (s.front_idle_timeout_s, s.front_header_timeout_s) == (60.0, 10.0)  # "front_idle_timeout_s (60 s)"
    assert (s.front_max_connections_per_client, s.front_max_connections) == (128, 2048)  # "128 ... 2048 in all"


def test_documented_quota_defaults_hold():
    s = Settings()
    assert s.site_timezone == "UTC"  # README: "APPLIANCE_SITE_TIMEZONE=Europe/Berlin (default UTC)"
    assert s.quota_reservation_ttl_s == 3600.0  # "expire after `quota_reservation_ttl_s` (default 1 h)"


def test_documented_stored_responses_defaults_hold():
    s = Settings()
    assert s.responses_store is True  # README: "`store`, default true"
    assert s.responses_retention_days == 30  # "`responses_retention_days` (30, as OpenAI)"


def test_an_unknown_site_timezone_is_refused_by_name():
    with pytest.raises(ValidationError, match="unknown time zone 'Mars/Olympus'"):
        Settings(site_timezone="Mars/Olympus")
