"""Loading a policy pack: files read once, signature checked on the very bytes parsed, then validated.

A pack is a folder of YAML files (sections `pack`, `access`, `input`, `output`, `audit`, each in exactly
one file) with its test cases under `tests/`. Its revision is the SHA-256 of the canonical JSON of the
validated pack, so comments and formatting do not change it and every semantic change does.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from appliance.policy.detectors import CATEGORIES, Scanner
from appliance.policy.errors import PolicyError
from appliance.policy.schema import InputRule, OutputRule, Pack
from appliance.policy.yamlfile import YamlDoc
from appliance.signing import keys, oms
from appliance.signing.dsse import SignatureError

SIGNATURE_NAME = "policy.sig"
MAX_PACK_BYTES = 8 * 1024 * 1024
BUILTIN_RULES = (
    "access.role",
    "access.key_disabled",
    "access.model",
    "access.reasoning_effort",
    "access.tools",
    "limits.input_chars",
    "limits.messages",
    "rate.requests",
    "rate.tokens",
)


if TYPE_CHECKING:
    from appliance.config import Settings


# The pack this checkout ships (the repository's policies/); a wheel install has none: the installer writes
# the media's pack into the data folder instead.
SHIPPED = Path(__file__).resolve().parents[2] / "policies"


def seeded(settings: Settings) -> Path:
    """The policy folder; when it is the default one (under the data folder) and missing, first filled with
    a copy of the shipped pack, so a new data folder serves the default policies and a restore or reload
    never touches the checkout's own copy. The copy lands whole or not at all (rename)."""
    target = settings.policy_dir
    if target.exists() or target != settings.data_dir / "policies" or not SHIPPED.is_dir():
        return target
    staging = target.with_name(f".{target.name}.seed-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(SHIPPED, staging, symlinks=False)
    try:
        staging.rename(target)
    except OSError:  # another process seeded it first
        shutil.rmtree(staging, ignore_errors=True)
    return target


@dataclass(frozen=True, eq=False)
class PolicySet:
    """One validated, immutable pack; the engine swaps whole `PolicySet`s, never edits one."""

    pack: Pack
    revision: str
    source: Path
    signed_by: str | None = None

    @property
    def version(self) -> int:
        return self.pack.pack.version

    @cached_property
    def scanner(self) -> Scanner:
        return Scanner({name: (t.phrases, t.patterns) for name, t in self.pack.input.topics.items()})

    @classmethod
    def from_settings(cls, settings: Settings, directory: Path | None = None) -> PolicySet:
        """The pack at `directory` (default: the policy folder) under the site's signature rules."""
        return cls.load(directory or seeded(settings), **load_options(settings))

    @classmethod
    def load(
        cls,
        directory: Path,
        *,
        require_signed: bool = False,
        trust: list[keys.PublicKey] | None = None,
        min_version: int = 0,
        max_signature_bytes: int = 16 << 20,
    ) -> PolicySet:
        """Read, verify and validate the pack in `directory`; any problem is one `PolicyError`.

        With `require_signed`, the pack must carry `policy.sig` from a key in `trust` covering every file,
        and its version must be at least `min_version` (the one in force), so an old signed pack cannot be
        replayed. A signature present while not required is still checked when trusted keys are given.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise PolicyError(f"{directory}: policy pack folder does not exist")
        signed = require_signed or (bool(trust) and (directory / SIGNATURE_NAME).exists())
        files, signed_by = (
            _read_verified(directory, trust or [], max_signature_bytes) if signed else (_read_plain(directory), None)
        )
        docs = [
            YamlDoc(raw, f"{directory / name}")
            for name, raw in sorted(files.items())
            if "/" not in name and name.endswith((".yaml", ".yml"))
        ]
        if not docs:
            raise PolicyError(f"{directory}: no .yaml files in the policy pack")
        data, where = _merge(docs)
        try:
            pack = Pack.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = list(err["loc"])
            doc = where.get(str(loc[0])) if loc else None
            path = ".".join(str(p) for p in loc) or "pack"
            if doc is None:
                raise PolicyError(f"{docs[0].display}:1: {path}: {err['msg']}") from None
            raise doc.error(loc, f"{path}: {err['msg']}") from None
        _cross_check(pack, where)
        if pack.pack.version < min_version:
            raise where["pack"].error(
                ["pack", "version"],
                f"pack version {pack.pack.version} is older than the version {min_version} in force; refused",
            )
        return cls(pack, _revision(pack), directory, signed_by)


def _revision(pack: Pack) -> str:
    canonical = json.dumps(pack.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _read_plain(directory: Path) -> dict[str, bytes]:
    try:
        sizes = oms.scan_folder(directory, {SIGNATURE_NAME})
    except (SignatureError, OSError) as exc:
        raise PolicyError(f"{directory}: {exc}") from exc
    return _read_all(directory, sizes)


def _read_all(directory: Path, sizes: dict[str, int]) -> dict[str, bytes]:
    if sum(sizes.values()) > MAX_PACK_BYTES:
        raise PolicyError(f"{directory}: policy pack larger than {MAX_PACK_BYTES} bytes")
    try:
        return {name: (directory / name).read_bytes() for name in sizes}
    except OSError as exc:
        raise PolicyError(f"{directory}: cannot read {exc.filename}: {exc.strerror}") from exc


def _read_verified(
    directory: Path, trust: list[keys.PublicKey], max_signature_bytes: int
) -> tuple[dict[str, bytes], str]:
    """Every file, each compared with the signed digest of exactly the bytes returned (no re-read race)."""
    if not trust:
        raise PolicyError(f"{directory}: signed policy packs are required but no trusted key is configured")
    try:
        manifest, key = oms.read_signature(
            directory, trust, signature_name=SIGNATURE_NAME, max_signature_bytes=max_signature_bytes
        )
        sizes = oms.scan_folder(directory, {SIGNATURE_NAME, *manifest.ignore_paths})
        oms.check_file_set(manifest, sizes)
    except (SignatureError, OSError) as exc:
        raise PolicyError(f"{directory}: policy signature refused: {exc}") from exc
    if manifest.method != "files":
        raise PolicyError(f"{directory}: policy signature refused: sharded signatures are not used for packs")
    files = _read_all(directory, sizes)
    expected = {piece.path: digest for piece, digest in manifest.digests.items()}
    for name, raw in files.items():
        if hashlib.sha256(raw).hexdigest() != expected[name]:
            raise PolicyError(f"{directory}: policy signature refused: file {name} does not match its signed digest")
    return files, keys.key_hint(key)


def _merge(docs: list[YamlDoc]) -> tuple[dict[str, Any], dict[str, YamlDoc]]:
    data: dict[str, Any] = {}
    where: dict[str, YamlDoc] = {}
    for doc in docs:
        if doc.data is None:
            continue
        if not isinstance(doc.data, dict):
            raise doc.error(
                [], "a policy file must be a mapping of sections (pack, access, input, output, classifiers, audit)"
            )
        for section, value in doc.data.items():
            if section in where:
                raise doc.error([section], f"section {section!r} is already defined in {where[section].display}")
            data[section], where[str(section)] = value, doc
    return data, where


def _cross_check(pack: Pack, where: dict[str, YamlDoc]) -> None:
    """References the schema alone cannot check: rule ids, roles and category patterns."""
    roles = set(pack.access.roles)
    categories = CATEGORIES + tuple(f"topic.{name}" for name in pack.input.topics)
    sections: tuple[tuple[str, Sequence[InputRule | OutputRule]], ...] = (
        ("input", pack.input.rules),
        ("output", pack.output.rules),
    )
    for section, rules in sections:
        seen: set[str] = set()
        for i, rule in enumerate(rules):
            doc = where[section]
            if rule.id in seen or rule.id in BUILTIN_RULES:
                raise doc.error(
                    [section, "rules", i, "id"], f"{section}.rules[{i}]: rule id {rule.id!r} is already used"
                )
            seen.add(rule.id)
            for j, pattern in enumerate(rule.match):
                if not fnmatch.filter(categories, pattern):
                    raise doc.error(
                        [section, "rules", i, "match", j], f"{section}.rules[{i}]: {pattern!r} matches no category"
                    )
            for j, role in enumerate(rule.roles or []):
                if role not in roles:
                    raise doc.error([section, "rules", i, "roles", j], f"{section}.rules[{i}]: unknown role {role!r}")
    for i, classifier in enumerate(pack.classifiers):
        if classifier.id in BUILTIN_RULES:
            raise where["classifiers"].error(
                ["classifiers", i, "id"], f"classifiers[{i}]: id {classifier.id!r} is taken"
            )
        for j, role in enumerate(classifier.roles or []):
            if role not in roles:
                raise where["classifiers"].error(
                    ["classifiers", i, "roles", j], f"classifiers[{i}]: unknown role {role!r}"
                )
    for role in pack.audit.roles:
        if role not in roles:
            raise where["audit"].error(["audit", "roles", role], f"audit.roles: unknown role {role!r}")


def load_options(settings: Settings) -> dict[str, Any]:
    """`load`/`reload` keywords from the settings: signing required?, trusted policy keys, size cap."""
    from appliance.policy.floor import read_floor

    floor = floor_file(settings)
    return {
        "require_signed": settings.require_signed_policy,
        "trust": keys.trusted_keys(settings.policy_trust_dir),
        "min_version": read_floor(floor) if settings.require_signed_policy else 0,
        "max_signature_bytes": settings.max_signature_bytes,
    }


def floor_file(settings: Settings) -> Path:
    """Where the signed-pack version floor is kept (see policy/floor.py)."""
    return settings.data_dir / "policy-version-floor"
