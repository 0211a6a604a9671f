"""`bundle.json`: what a bundle is, read only after its bytes have matched the signed digest."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from appliance.errors import ApplianceError
from appliance.signing.oms import SIGNATURE_NAME

METADATA_FILE = "bundle.json"
SIGNATURE_FILE = SIGNATURE_NAME
try:  # the installed distribution's own version (pyproject.toml), never a second copy of it
    APPLIANCE_VERSION = version("appliance")
except PackageNotFoundError:  # a source tree on sys.path with no install at all
    APPLIANCE_VERSION = "0.0.0"
PROFILES = ("cpu-fp32", "cpu-int4", "cuda-int4", "cuda-bf16")

_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


class BundleError(ApplianceError):
    """A bundle that is malformed, incompatible, or not allowed into the store."""


def semver_key(version: str) -> tuple[Any, ...]:
    """Sort key per Semantic Versioning 2.0: a pre-release sorts before its release; build metadata is ignored."""
    m = _SEMVER.match(version)
    if not m:
        raise BundleError(f"version {version!r} is not a semantic version (MAJOR.MINOR.PATCH)")
    core = tuple(int(x) for x in m.groups()[:3])
    if m.group(4) is None:
        return (*core, 1, ())
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in m.group(4).split("."))
    return (*core, 0, ids)


class BundleMetadata(BaseModel):
    """The fields every bundle carries; unknown fields are refused so a typo cannot pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    version: str
    architecture: Literal["gpt-oss"] = "gpt-oss"
    variant: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,31}$")
    precision: str = Field(pattern=r"^(fp32|fp16|bf16|int8|int4)$")
    profile: str
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))
    min_appliance_version: str = APPLIANCE_VERSION

    @field_validator("version", "min_appliance_version")
    @classmethod
    def _semver(cls, v: str) -> str:
        semver_key(v)
        return v

    @field_validator("profile")
    @classmethod
    def _profile(cls, v: str) -> str:
        if v not in PROFILES:
            raise ValueError(f"unknown engine profile {v!r} (one of {', '.join(PROFILES)})")
        return v

    def write(self, folder: Path) -> None:
        (folder / METADATA_FILE).write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def parse(cls, raw: bytes) -> BundleMetadata:
        try:
            return cls.model_validate(json.loads(raw))
        except (ValueError, ValidationError) as exc:
            detail = exc.errors()[0] if isinstance(exc, ValidationError) else {"loc": (), "msg": str(exc)}
            where = ".".join(str(x) for x in detail["loc"])
            raise BundleError(f"{METADATA_FILE} is invalid: {where + ': ' if where else ''}{detail['msg']}") from exc

    @classmethod
    def read(cls, folder: Path) -> BundleMetadata:
        """Parse `folder/bundle.json` (callers that need it verified use `bundles.signing.verify_bundle`)."""
        try:
            return cls.parse((folder / METADATA_FILE).read_bytes())
        except FileNotFoundError:
            raise BundleError(f"{folder} has no {METADATA_FILE}") from None

    def check_compatible(self) -> None:
        if semver_key(self.min_appliance_version) > semver_key(APPLIANCE_VERSION):
            raise BundleError(
                f"bundle {self.name} {self.version} needs appliance >= {self.min_appliance_version}"
                f" (this is {APPLIANCE_VERSION})"
            )
