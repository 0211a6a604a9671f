"""Starts the installer from the media with nothing but the host's Python standard library.

The installer's code is the appliance wheel itself (pure Python, imported straight from the zip on the
media); it needs `cryptography` (and `cffi`) to check the release signature, unpacked into a private
temporary folder. Each of these wheels is first checked against its SHA-256 in MANIFEST.json: this catches
corruption before any code from the media runs; the signature check that follows catches tampering with
the manifest. (Whoever can rewrite the media can also rewrite this script: the trust anchor is the release
key's fingerprint, which the installer prints, and `appliance media verify` run by an installed appliance.)
These wheels are never split into parts, so they can be used in place.
"""

import hashlib
import json
import re
import sys
import tempfile
import zipfile
from pathlib import Path

WHEELS = ("appliance", "cryptography", "cffi")


def main() -> int:
    media = Path(sys.argv[1])
    try:
        entries = {f["path"]: f for f in json.loads((media / "MANIFEST.json").read_bytes())["files"]}
        wheels = {name: _pick(media, entries, name) for name in WHEELS}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(
            f"error: {media / 'MANIFEST.json'} is missing, truncated or malformed ({type(exc).__name__})",
            file=sys.stderr,
        )
        return 1
    except SystemExit as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="appliance-installer-") as tmp:
        for name in ("cryptography", "cffi"):
            with zipfile.ZipFile(wheels[name]) as z:
                z.extractall(tmp)
        sys.path[:0] = [tmp, str(wheels["appliance"])]
        from appliance.media.installer import main as install

        return install(media, sys.argv[2:])


def _pick(media: Path, entries: dict, name: str) -> Path:
    """The wheel of `name` usable by this Python, checked against the manifest."""
    here = sys.version_info.minor
    best = None
    for path, entry in entries.items():
        m = re.fullmatch(rf"wheels/{name}-[^-]+-(py3|cp3(\d+))-[^/]+\.whl", path)
        if not m or entry["parts"]:
            continue
        abi3 = "-abi3-" in path
        minor = int(m.group(2)) if m.group(2) else 0
        if m.group(1) != "py3" and not (minor == here or (abi3 and minor <= here)):
            continue
        if best is None or minor > best[0]:
            best = (minor, path, entry)
    if best is None:
        raise SystemExit(f"the media has no {name} wheel for Python 3.{here}: it was built for other Pythons")
    _, path, entry = best
    digest = hashlib.sha256((media / path).read_bytes()).hexdigest()
    if digest != entry["sha256"]:
        raise SystemExit(f"file {path} does not match its SHA-256 (changed or corrupt)")
    return media / path


if __name__ == "__main__":
    sys.exit(main())
