"""The one settings object.

Every value comes from an `APPLIANCE_*` environment variable, then from the YAML file named by
`APPLIANCE_CONFIG`, then from the defaults below. No other module reads the environment (but
`appliance.config_core`, for its own fields): they take a `Settings` (or the values they need) as
arguments, so tests can build any configuration in-process.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from appliance.config_core import (
    DEFAULT_DATA_DIR,
    DEFAULT_MAX_SIGNATURE_BYTES,
    default_hash_workers,
    default_model_store,
    default_trust_dir,
    read_config_file,
)


class _YamlFileSource(PydanticBaseSettingsSource):
    """Values from the YAML file named by APPLIANCE_CONFIG (lower priority than the environment)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return read_config_file()


class SyslogCollector(BaseModel):
    """One SIEM collector that receives every audit record and checkpoint (appliance/audit/forward.py).

    `tls` (RFC 5425) checks the collector's certificate against `ca_file` (the site CA; required, since an
    air-gapped host has no public roots to fall back on) and the name `server_name` (default `host`);
    `client_cert`/`client_key` are presented when the collector asks. `tcp` is plain RFC 6587 TCP, chosen on
    purpose: records cross the network in clear.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="", max_length=128, pattern=r"^[^\x00-\x1f\x7f]*$")  # the cursor's key; default host:port
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=6514, ge=1, le=65535)
    transport: Literal["tls", "tcp"] = "tls"
    ca_file: Path | None = None
    server_name: str | None = None
    client_cert: Path | None = None
    client_key: Path | None = None

    @model_validator(mode="after")
    def _complete(self) -> SyslogCollector:
        if not self.name:
            object.__setattr__(self, "name", f"{self.host}:{self.port}")
        if self.transport == "tls" and self.ca_file is None:
            raise ValueError(f"collector {self.name}: transport tls needs ca_file (the site CA)")
        if self.transport == "tcp" and (self.ca_file or self.client_cert or self.client_key or self.server_name):
            raise ValueError(
                f"collector {self.name}: ca_file, server_name, client_cert and client_key apply to transport tls only"
            )
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError(f"collector {self.name}: client_cert and client_key go together")
        return self


class Settings(BaseSettings):
    """Where the appliance keeps its state and how it serves.

    Paths left unset are derived from `data_dir`, so one variable moves the whole installation: they are
    declared with their derived type (never None once built) and a None default the validator replaces.
    The data folder, the model store, the trust folder and hashing are also read alone, without pydantic,
    by the commands that only hash (`appliance.config_core`, whose defaults these are).
    """

    model_config = SettingsConfigDict(env_prefix="APPLIANCE_", extra="forbid")

    data_dir: Path = DEFAULT_DATA_DIR
    model_store: Path = Field(default=None, validate_default=False)  # type: ignore[assignment]
    trust_dir: Path = Field(default=None, validate_default=False)  # type: ignore[assignment]
    keys_dir: Path = Field(default=None, validate_default=False)  # type: ignore[assignment]
    database_url: str = Field(default=None, validate_default=False)  # type: ignore[assignment]
    # default data_dir/policies, filled from the shipped pack the first time (policy.pack.seeded)
    policy_dir: Path = Field(default=None, validate_default=False)  # type: ignore[assignment]
    require_signed_policy: bool = False
    policy_follow_seconds: float = Field(default=2.0, gt=0)  # replicas apply a recorded reload this soon
    # public keys (*.pub) trusted to sign policy packs; default trust_dir/policy
    policy_trust_dir: Path = Field(default=None, validate_default=False)  # type: ignore[assignment]

    audit_key_path: Path = Field(default=None, validate_default=False)  # type: ignore[assignment]
    audit_checkpoint_every: int = Field(default=1000, ge=1)
    audit_checkpoint_seconds: float = Field(default=1.0, gt=0)  # the head is signed this soon after an append
    audit_uncovered_grace_s: float = Field(default=60.0, ge=0)  # verify: older unsigned records are an attack
    audit_min_retention_days: int = Field(default=90, ge=0, le=36500)  # prune refuses a newer cut-off
    # audit exports over HTTP (api/exports.py): at most this many at once per gateway replica (more: 429),
    # each one's temporary file closed when its client has not read it all within the deadline
    audit_export_concurrency: int = Field(default=2, ge=1)
    audit_export_deadline_s: float = Field(default=1800.0, gt=0)
    # checkpoints kept outside the database (the witness); default keys_dir
    audit_witness_dir: Path = Field(default=None, validate_default=False)  # type: ignore[assignment]

    # repeated views and searches of the log by one principal and filter: one aggregated record per window
    audit_read_window_s: float = Field(default=300.0, gt=0)
    # SIEM collectors fed by `appliance audit forward run` (docs/architecture.md, "Forwarding")
    audit_forward: list[SyslogCollector] = Field(default_factory=list)
    audit_forward_hostname: str | None = None  # RFC 5424 HOSTNAME; default the host's name
    audit_forward_batch: int = Field(default=500, ge=1, le=100_000)  # records read and sent per round
    audit_forward_confirm_s: float = Field(default=1.0, ge=0)  # sent, acked and the connection still up: delivered
    audit_forward_lag_warning: int = Field(default=10_000, ge=1)  # records behind: `forward status` warns

    hash_workers: int = Field(default_factory=default_hash_workers, ge=1)
    max_signature_bytes: int = DEFAULT_MAX_SIGNATURE_BYTES

    ray_address: str | None = None
    ray_auth_mode: Literal["token", "disabled"] = "token"  # disabled only on purpose (a warning at start)
    # private: the embedded head runs in a network namespace of its own (serving.netns); host: Ray's ports
    # are on the host's network, to be closed below Ray (a warning at start)
    ray_network: Literal["private", "host"] = "private"
    host: str = "127.0.0.1"  # the API's listen address; off loopback it needs a certificate (appliance/tls)
    port: int = 8000

    # TLS on the API (docs/architecture.md, "TLS"). Without tls_cert, keys_dir/tls/server.crt is used when
    # it exists (`appliance tls install` / `tls self-signed` put it there).
    tls_cert: Path | None = None
    tls_key: Path | None = None  # PEM, mode 0600; default beside the certificate (server.key)
    tls_key_password: SecretStr | None = None  # environment only (refused in the YAML file)
    tls_key_password_file: Path | None = None
    tls_client_ca: Path | None = None  # CA bundle for client certificates; default keys_dir/tls/client-ca.pem
    tls_client_auth: Literal["off", "optional", "required"] = "off"
    tls_roles_require_client_cert: list[str] = Field(default_factory=list)  # e.g. [admin]
    tls_internal_port: int | None = None  # Serve's loopback port behind the TLS front; default port + 1
    tls_reload_seconds: float = Field(default=30.0, gt=0)  # a rotated certificate is picked up this soon
    tls_expiry_warning_days: int = Field(default=30, ge=0)
    allow_plain_http: bool = False  # plain HTTP off loopback, on purpose (a warning at start)
    # The front's limits on client connections (tls/front.py): a connection with no request in progress
    # and no bytes either way for front_idle_timeout_s is closed (before its first request too); a request
    # head must arrive whole within front_header_timeout_s of its first byte; past the caps per client
    # address and in total a new connection gets 503 and is closed.
    front_idle_timeout_s: float = Field(default=60.0, gt=0)
    front_header_timeout_s: float = Field(default=10.0, gt=0)
    front_max_connections: int = Field(default=2048, ge=1)
    front_max_connections_per_client: int = Field(default=128, ge=1)

    engine_max_batch_size: int = Field(default=8, ge=1)
    engine_max_queue: int = Field(default=32, ge=0)
    engine_max_tokens_in_flight: int = Field(default=65536, ge=2)
    engine_threads: int = Field(default=0, ge=0)
    engine_kv_budget_bytes: int = Field(default=0, ge=0)  # 0: half the device's free memory at start
    engine_prefill_chunk: int = Field(default=512, ge=1)  # prompt tokens prefilled between decode steps
    # the prefix cache (docs/architecture.md "Prefix cache"): its size as a fraction of the KV budget (<= 1)
    # or bytes (> 1), 0 off; default a quarter of the budget on CPU, off on CUDA (where a size is refused).
    # Its scope: whose cached prompts a request may reuse (key: the same API key; group: the key's group;
    # appliance: everyone, which lets a caller time whether someone else sent a prompt).
    engine_prefix_cache: float | None = Field(default=None, ge=0)
    engine_prefix_cache_scope: Literal["key", "group", "appliance"] = "key"
    # LLM replicas: one per GPU (GPU bundles) or this many per node (CPU bundles) on every node of the cluster,
    # at most serve_replicas_max in all (serving/placement.py)
    serve_cpu_replicas_per_node: int = Field(default=1, ge=1)
    serve_replicas_max: int = Field(default=64, ge=1)
    serve_max_ongoing_requests: int = Field(default=64, ge=1)

    # Failed authentications per source address: a token bucket; past it, 429 and one aggregated record
    # per source and window instead of one per request.
    auth_failure_rate: float = Field(default=1.0, ge=0)  # per second
    auth_failure_burst: int = Field(default=20, ge=1)
    auth_failure_window_s: float = Field(default=60.0, gt=0)

    # Directory sign-in for the admin page (appliance/directory.py, docs/architecture.md "Admin page")
    ldap_url: str | None = None  # ldaps://dc1.site.example or ldap://...:389 (then always StartTLS)
    ldap_ca_file: Path | None = None  # the CA that signed the directory's certificate (default: the system's)
    ldap_user_dn: str = ""  # with {user}: "uid={user},ou=people,dc=site,dc=example" or "{user}@corp.example" (AD)
    ldap_group_base: str | None = None  # groups naming the user as member/uniqueMember are searched here
    ldap_group_roles: dict[str, Literal["auditor", "admin"]] = Field(default_factory=dict)  # group DN -> role
    ldap_timeout_s: int = Field(default=5, ge=1)  # whole seconds: ldap3 sets them as a socket option
    ui_key_signin: bool = True  # false: the page signs in with the directory only

    # Quotas (policy pack `quotas:`): days and months are calendar days and months in this IANA zone
    site_timezone: str = "UTC"
    # a reservation whose request never settled (its replica crashed) is released after this long
    quota_reservation_ttl_s: float = Field(default=3600.0, gt=0)

    # Stored Responses (`store`, `previous_response_id`): kept in the database, scoped to the key that made
    # them, pruned after the retention; off: nothing is stored and a request asking for storage is a 400
    responses_store: bool = True
    responses_retention_days: int = Field(default=30, ge=1, le=36500)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("site_timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            if name != "UTC":  # UTC needs no zone database (a minimal image may have none)
                ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r} (an IANA name such as Europe/Berlin)") from None
        return name

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        self.model_store = self.model_store or default_model_store(self.data_dir)
        self.trust_dir = self.trust_dir or default_trust_dir(self.data_dir)
        self.policy_dir = self.policy_dir or self.data_dir / "policies"
        self.keys_dir = self.keys_dir or self.data_dir / "keys"
        self.policy_trust_dir = self.policy_trust_dir or self.trust_dir / "policy"
        self.audit_key_path = self.audit_key_path or self.keys_dir / "audit.key"
        self.audit_witness_dir = self.audit_witness_dir or self.keys_dir
        self.database_url = self.database_url or f"sqlite:///{(self.data_dir / 'appliance.db').resolve()}"
        return self

    @model_validator(mode="after")
    def _directory_complete(self) -> Settings:
        """Directory sign-in is all or nothing, and never over plain LDAP (the password would travel in clear;
        ldap:// always upgrades with StartTLS)."""
        if self.ldap_url is None:
            return self
        if not self.ldap_url.lower().startswith(("ldaps://", "ldap://")):
            raise ValueError("ldap_url must start with ldaps:// or ldap:// (then StartTLS is always used)")
        if "{user}" not in self.ldap_user_dn:
            raise ValueError("ldap_url is set but ldap_user_dn has no {user} (e.g. uid={user},ou=people,dc=site)")
        if not self.ldap_group_roles:
            raise ValueError("ldap_url is set but ldap_group_roles maps no group to a role (auditor or admin)")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _YamlFileSource(settings_cls)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
