"""The settings of the model store and of hashing, read without pydantic.

`appliance bundle verify` and `appliance media verify` spend their time hashing and read nothing else of the
settings; building the whole `Settings` (pydantic and pydantic-settings) before the first byte is hashed
would cost them more than a tenth of a 2 GiB verification. `core_settings()` reads just these five from
the same sources in the same order (an `APPLIANCE_*` environment variable, whatever its case, over the YAML
file named by APPLIANCE_CONFIG) and refuses a bad value by name, as `Settings` does; the defaults below are
`Settings`' own, and a test holds the two readers to the same verdicts. Every other command, and every
service, reads and checks all the settings (`appliance.config.get_settings`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError
from appliance.files import read_small

DEFAULT_DATA_DIR = Path("var")
DEFAULT_MAX_SIGNATURE_BYTES = 16 * 1024 * 1024
_WHOLE = re.compile(r"\s*[+-]?[0-9]+\s*")


def default_hash_workers() -> int:
    return os.cpu_count() or 1


def default_model_store(data_dir: Path) -> Path:
    return data_dir / "models"


def default_trust_dir(data_dir: Path) -> Path:
    return data_dir / "trust"


class SettingError(ApplianceError):
    """A setting with a value the appliance cannot use (named as its environment variable)."""

    exit_code = 2


@dataclass(frozen=True)
class CoreSettings:
    """Where bundles are kept and trusted, and how many threads hash them."""

    data_dir: Path
    model_store: Path
    trust_dir: Path
    hash_workers: int
    max_signature_bytes: int


def core_settings() -> CoreSettings:
    """The fields of `CoreSettings` alone, from the environment over the settings file."""
    names = {f.name for f in fields(CoreSettings)}
    raw = {name: value for name, value in read_config_file().items() if name in names}
    env = {name.lower(): value for name, value in os.environ.items()}
    raw.update({name: env[f"appliance_{name}"] for name in names if f"appliance_{name}" in env})
    data_dir = _path(raw, "data_dir") or DEFAULT_DATA_DIR
    return CoreSettings(
        data_dir=data_dir,
        model_store=_path(raw, "model_store") or default_model_store(data_dir),
        trust_dir=_path(raw, "trust_dir") or default_trust_dir(data_dir),
        hash_workers=_whole(raw, "hash_workers", default_hash_workers(), least=1),
        max_signature_bytes=_whole(raw, "max_signature_bytes", DEFAULT_MAX_SIGNATURE_BYTES),
    )


def _path(raw: dict[str, Any], name: str) -> Path | None:
    if name not in raw:
        return None
    if not isinstance(raw[name], str):
        raise SettingError(f"setting APPLIANCE_{name.upper()}: should be a path, not {raw[name]!r}")
    return Path(raw[name])


def _whole(raw: dict[str, Any], name: str, default: int, least: int | None = None) -> int:
    value = raw.get(name, default)
    if isinstance(value, str) and _WHOLE.fullmatch(value):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or (least is not None and value < least):
        at_least = f" of at least {least}" if least is not None else ""
        raise SettingError(f"setting APPLIANCE_{name.upper()}: should be a whole number{at_least}, not {value!r}")
    return value


def read_config_file() -> dict[str, Any]:
    """The mapping in the YAML file named by APPLIANCE_CONFIG ({} when unset)."""
    path = os.environ.get("APPLIANCE_CONFIG")
    if not path:
        return {}
    import yaml

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
