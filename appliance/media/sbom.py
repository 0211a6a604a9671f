"""The media's CycloneDX 1.6 SBOM, made with cyclonedx-python-lib: every wheel, bundle file and the installer.

Deterministic for reproducible builds: the serial number is derived from the components, the timestamp is
SOURCE_DATE_EPOCH. Wheels are libraries with a pypi purl, bundle files belong to a machine-learning-model
component per bundle, everything else is a file component; all carry their SHA-256.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from pathlib import Path

from cyclonedx.model import HashAlgorithm, HashType
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

SBOM_FILE = "sbom.cdx.json"


def write_sbom(
    root: Path,
    digests: dict[str, str],
    *,
    version: str,
    bundles: dict[str, tuple[str, str]],
    source_date_epoch: int,
    name: str = "appliance-media",
) -> Path:
    """`digests`: media path -> SHA-256 of every file; `bundles`: folder -> (name, version); `name`: what the
    SBOM describes (the media, or the OCI image built from the same wheels)."""
    bom = Bom()
    bom.metadata.timestamp = datetime.fromtimestamp(source_date_epoch, tz=UTC)
    bom.metadata.component = Component(name=name, version=version, type=ComponentType.APPLICATION, bom_ref=name)
    models = {
        folder: Component(
            name=name, version=ver, type=ComponentType.MACHINE_LEARNING_MODEL, bom_ref=f"bundle:{name}@{ver}"
        )
        for folder, (name, ver) in sorted(bundles.items())
    }
    for path, digest in sorted(digests.items()):
        sha = [HashType(alg=HashAlgorithm.SHA_256, content=digest)]
        folder = next((f for f in models if path.startswith(f + "/")), None)
        if path.endswith(".whl"):
            name, ver = Path(path).name.split("-")[:2]
            bom.components.add(
                Component(
                    name=name,
                    version=ver,
                    type=ComponentType.LIBRARY,
                    hashes=sha,
                    purl=PackageURL(
                        "pypi",
                        name=name.lower().replace("_", "-"),
                        version=ver,
                        qualifiers={"file_name": Path(path).name},
                    ),
                    bom_ref=f"file:{path}",
                )
            )
        elif folder is not None:
            models[folder].components.add(
                Component(name=path, type=ComponentType.FILE, hashes=sha, bom_ref=f"file:{path}")
            )
        else:
            bom.components.add(Component(name=path, type=ComponentType.FILE, hashes=sha, bom_ref=f"file:{path}"))
    for model in models.values():
        bom.components.add(model)
    bom.register_dependency(bom.metadata.component, list(bom.components))
    seed = hashlib.sha256("\n".join(f"{p} {d}" for p, d in sorted(digests.items())).encode()).digest()
    bom.serial_number = uuid.UUID(bytes=seed[:16], version=5)
    out = root / SBOM_FILE
    out.write_text(JsonV1Dot6(bom).output_as_string(indent=1) + "\n")
    return out
