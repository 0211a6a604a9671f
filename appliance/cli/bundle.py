"""`appliance bundle ...`: keys, signing, verification and the model store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from appliance.bundles import BundleStore
    from appliance.signing import keys

app = typer.Typer(no_args_is_help=True)

TrustOpt = Annotated[
    list[Path] | None,
    typer.Option("--trust", help="Trusted public key (repeatable); default: every *.pub in the trust folder."),
]


def _store() -> BundleStore:
    from appliance.bundles import BundleStore
    from appliance.config_core import core_settings

    s = core_settings()
    return BundleStore(s.model_store, workers=s.hash_workers, max_signature_bytes=s.max_signature_bytes)


def _trusted(extra: list[Path] | None) -> list[keys.PublicKey]:
    from appliance.bundles import trusted_keys
    from appliance.config_core import core_settings

    return trusted_keys(core_settings().trust_dir, extra)


def _total_bytes(folder: Path) -> int:
    return sum(_files(folder).values())


def _files(folder: Path) -> dict[str, int]:
    """The files a bundle's signature must cover, by size ({} when unreadable)."""
    from appliance.signing import oms

    try:
        return oms.scan_folder(folder, {oms.SIGNATURE_NAME})
    except oms.SignatureError:
        return {}  # the verification proper reports the problem


@app.command()
def keygen(
    out: Annotated[
        Path, typer.Option("--out", help="Private key file to create (mode 0600); the public key goes to OUT.pub.")
    ],
    kind: Annotated[
        str, typer.Option(help="ed25519 or ecdsa-p256 (the latter verifies with model-signing too)")
    ] = "ed25519",
    trust: Annotated[bool, typer.Option("--trust", help="Also trust the public key on this appliance.")] = False,
) -> None:
    """Create a signing key pair."""
    from appliance.signing import keys

    key = keys.generate_private_key(kind)  # type: ignore[arg-type]
    pub = out.with_name(out.name + ".pub")
    if pub.exists():
        raise keys.KeyFileError(f"{pub} already exists; refusing to overwrite a key")
    keys.write_private_key(key, out)
    keys.write_public_key(key.public_key(), pub)
    if trust:
        _trust(pub)
    typer.echo(f"private key {out}\npublic key  {pub}\nkey hint    {keys.key_hint(key.public_key())}")


@app.command("trust")
def trust_cmd(pubkey: Annotated[Path, typer.Argument(help="A publisher's PEM public key.")]) -> None:
    """Add a publisher's public key to the trust folder."""
    typer.echo(f"trusted {_trust(pubkey)}")


def _trust(pubkey: Path) -> Path:
    from appliance import admin_actions
    from appliance.cli.actions import console_actor
    from appliance.config import get_settings
    from appliance.signing import keys

    return admin_actions.trust_publisher(console_actor(), get_settings().trust_dir, keys.load_public_key(pubkey))


@app.command()
def sign(
    folder: Annotated[Path, typer.Argument(help="Bundle folder holding bundle.json and the model files.")],
    key: Annotated[Path, typer.Option("--key", help="PEM private key.")],
    shard_size: Annotated[
        int | None,
        typer.Option(
            help="Hash in shards of this many bytes (OMS 'shards' method) so one large file spreads over all cores."
        ),
    ] = None,
) -> None:
    """Sign a bundle folder (writes model.sig)."""
    from appliance.bundles import sign_bundle
    from appliance.cli.progress import byte_progress
    from appliance.config import get_settings
    from appliance.signing import keys

    private = keys.load_private_key(key)
    with byte_progress("signing", _total_bytes(folder)) as advance:
        manifest = sign_bundle(
            folder, private, shard_size=shard_size, workers=get_settings().hash_workers, progress=advance
        )
    typer.echo(f"signed {len(manifest.files)} files in {folder} with key {keys.key_hint(private.public_key())[:16]}")


@app.command()
def verify(
    folder: Annotated[Path | None, typer.Argument()] = None,
    trust: TrustOpt = None,
    active: Annotated[
        bool,
        typer.Option(
            "--active",
            help="Verify every active bundle in the model store instead (a Kubernetes pod's init container).",
        ),
    ] = False,
) -> None:
    """Verify a bundle folder against trusted keys: exit 0 when every byte matches its signature."""
    if (folder is None) == (not active):
        from appliance.bundles.metadata import BundleError

        raise BundleError("give either a bundle FOLDER or --active (see --help)")
    if active:
        store = _store()
        folders = [store.root / name / version for name, version in sorted(store.active().items())]
        if not folders:
            typer.echo(f"no active bundle in {store.root}: nothing to verify")
        for one in folders:
            _verify_one(one, trust)
        return
    assert folder is not None
    _verify_one(folder, trust)


def _verify_one(folder: Path, trust: list[Path] | None) -> None:
    """Hashing starts first; the key library loads and the signature is checked while it runs (nothing is
    trusted before: see `hashing.Ahead`)."""
    from appliance.cli.progress import byte_progress
    from appliance.config_core import core_settings
    from appliance.signing.hashing import Ahead

    s, sizes = core_settings(), _files(folder)
    with (
        byte_progress("verifying", sum(sizes.values())) as advance,
        Ahead(folder, sizes, workers=s.hash_workers, progress=advance) as ahead,
    ):
        from appliance.bundles import verify_bundle

        vb = verify_bundle(
            folder,
            _trusted(trust),
            workers=s.hash_workers,
            progress=advance,
            max_signature_bytes=s.max_signature_bytes,
            ahead=ahead,
        )
    typer.echo(
        f"OK {vb.metadata.name} {vb.metadata.version} ({len(vb.manifest.files)} files, key {vb.signer_hint[:16]})"
    )


@app.command("import")
def import_cmd(
    folder: Annotated[Path, typer.Argument()],
    trust: TrustOpt = None,
    allow_downgrade: Annotated[bool, typer.Option("--allow-downgrade")] = False,
    activate: Annotated[bool, typer.Option("--activate", help="Make it the active version once imported.")] = False,
) -> None:
    """Verify a bundle while copying it into the model store as NAME/VERSION."""
    from appliance import admin_actions
    from appliance.cli.actions import console_actor
    from appliance.cli.progress import byte_progress

    actor, store = console_actor(), _store()
    with byte_progress("importing", _total_bytes(folder)) as advance:
        vb = admin_actions.import_bundle(
            actor, store, folder, _trusted(trust), allow_downgrade=allow_downgrade, progress=advance
        )
    if activate:  # just verified while copied in
        admin_actions.activate_bundle(actor, store, vb.metadata.name, vb.metadata.version, None)
    typer.echo(f"imported {vb.metadata.name} {vb.metadata.version}{' (active)' if activate else ''}")


@app.command("list")
def list_cmd() -> None:
    """The bundles in the model store."""
    from rich.table import Table

    from appliance.cli.tables import print_table

    table = Table("name", "version", "active", "variant", "profile", "size", "created")
    for b in _store().list():
        table.add_row(
            b.name,
            b.version,
            "*" if b.active else "",
            b.metadata.variant,
            b.metadata.profile,
            f"{b.size / 2**20:.1f} MiB",
            b.metadata.created.strftime("%Y-%m-%d %H:%M"),
        )
    print_table(table)


@app.command()
def activate(name: str, version: str, trust: TrustOpt = None) -> None:
    """Serve NAME at VERSION (verified again first)."""
    from appliance import admin_actions
    from appliance.cli.actions import console_actor

    admin_actions.activate_bundle(console_actor(), _store(), name, version, _trusted(trust))
    typer.echo(f"active {name} {version}")


@app.command()
def remove(name: str, version: str) -> None:
    """Delete an inactive version from the store."""
    from appliance import admin_actions
    from appliance.cli.actions import console_actor

    admin_actions.remove_bundle(console_actor(), _store(), name, version)
    typer.echo(f"removed {name} {version}")


@app.command()
def build(
    from_hf: Annotated[Path, typer.Option("--from-hf", help="Published gpt-oss checkpoint folder.")],
    profile: Annotated[str, typer.Option(help="cpu-fp32, cpu-int4, cuda-int4 or cuda-bf16")],
    name: Annotated[str, typer.Option()],
    version: Annotated[str, typer.Option()],
    out: Annotated[Path, typer.Option(help="Bundle folder to create.")],
    key: Annotated[Path | None, typer.Option(help="Sign with this private key.")] = None,
) -> None:
    """Convert a published gpt-oss checkpoint into a (signed) bundle. Needs the build extra."""
    from appliance.bundles.metadata import BundleError
    from appliance.signing import keys

    try:
        from appliance.bundles.build import build_bundle
    except ImportError as exc:
        raise BundleError(f"bundle building needs the [build] extra ({exc.name} is missing)") from exc
    private = keys.load_private_key(key) if key else None
    path = build_bundle(from_hf, out, profile=profile, name=name, version=version, key=private)
    typer.echo(f"built {path}")
