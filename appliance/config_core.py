"""The settings of the model store and of hashing, readable without the rest.

`appliance bundle verify` and `appliance media verify` spend their time hashing and read nothing else;
loading every setting (pydantic-settings with all its sources) would cost them more than a tenth of a 2 GiB
verification. So these fields live in a plain pydantic model that `appliance.config.Settings` extends, and
`core_settings()` reads just them from the same sources in the same order (an `APPLIANCE_*` environment
variable, whatever its case, over the YAML file named by APPLIANCE_CONFIG) with the same checks. Every
other command, and every service, still reads and checks all of them (`appliance.config.get_settings`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, model_validator

from appliance.files import read_small


class CoreSettings(BaseModel):
    """Where bundles are kept and trusted, and how hard to hash them."""

    data_dir: Path = Path("var")
    model_store: Path = Field(default=None, validate_default=False)  # type: ignore[assignment]
    trust_dir: Path = Field(default=None, validate_default=False)  # type: ignore[assignment]
    hash_workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    max_signature_bytes: int = 16 * 1024 * 1024

    @model_validator(mode="after")
    def _derive_store_paths(self) -> CoreSettings:
        self.model_store = self.model_store or self.data_dir / "models"
        self.trust_dir = self.trust_dir or self.data_dir / "trust"
        return self


def core_settings() -> CoreSettings:
    """The fields of `CoreSettings` alone, from the environment over the settings file."""
    fields = CoreSettings.model_fields
    values = {name: value for name, value in read_config_file().items() if name in fields}
    env = {name.lower(): value for name, value in os.environ.items()}
    values.update({name: env[f"appliance_{name}"] for name in fields if f"appliance_{name}" in env})
    return CoreSettings.model_validate(values)


def read_config_file() -> dict[str, Any]:
    """The mapping in the YAML file named by APPLIANCE_CONFIG ({} when unset)."""
    path = os.environ.get("APPLIANCE_CONFIG")
    if not path:
        return {}
    import yaml

    from appliance.errors import ApplianceError

    try:
        data = yaml.safe_load(read_small(Path(path), 1 << 20)) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ApplianceError(f"cannot read settings file {path}: {exc}".splitlines()[0]) from exc
    if not isinstance(data, dict):
        raise ApplianceError(f"settings file {path} must hold a mapping")
    if "tls_key_password" in data:  # a file anyone may read must not hold a secret in clear
        raise ApplianceError(
            f"settings file {path}: tls_key_password may not be written there; use "
            f"tls_key_password_file or the APPLIANCE_TLS_KEY_PASSWORD environment variable"
        )
    return data
