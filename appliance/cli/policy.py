"""`appliance policy`: check, test, sign and reload policy packs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from appliance.errors import ApplianceError

app = typer.Typer(no_args_is_help=True, add_completion=False)

PackDir = Annotated[Path | None, typer.Argument(help="Policy pack folder (default: the configured policy_dir).")]


@app.command()
def check(directory: PackDir = None) -> None:
    """Validate a pack (and its signature when required) and print its revision."""
    from appliance.config import get_settings
    from appliance.policy import PolicySet

    policy = PolicySet.from_settings(get_settings(), directory)
    signed = f", signed by key {policy.signed_by[:16]}" if policy.signed_by else ", unsigned"
    typer.echo(f"ok: {policy.pack.pack.name} version {policy.version}{signed}")
    typer.echo(f"revision: {policy.revision}")


@app.command()
def test(
    directory: PackDir = None,
    classifiers: Annotated[
        bool,
        typer.Option(
            "--classifiers", help="Also run the classifier rules, on the active bundles they name in the model store."
        ),
    ] = False,
) -> None:
    """Run the test cases under DIR/tests against the pack, like `opa test`."""
    from appliance.config import get_settings
    from appliance.policy import PolicySet
    from appliance.policy.pack import seeded
    from appliance.policy.testing import run_tests

    settings = get_settings()
    directory = directory or seeded(settings)
    policy = PolicySet.from_settings(settings, directory)
    if classifiers:
        from appliance.api.judge import backend_judge
        from appliance.serving.local_backend import LocalBackend

        names = sorted({rule.model for rule in policy.pack.classifiers})
        backend = LocalBackend.from_store(settings, names) if names else LocalBackend([])
        try:
            results = run_tests(policy, directory, backend_judge(backend))
        finally:
            backend.close()
    else:
        results = run_tests(policy, directory)
    for result in results:
        typer.echo(f"{'PASS' if result.passed else 'FAIL'}: {result.name}")
        for failure in result.failures:
            typer.echo(f"  {result.where}: {failure}")
    failed = sum(not r.passed for r in results)
    typer.echo(
        f"{'PASS' if not failed else 'FAIL'}: {len(results) - failed}/{len(results)} (revision {policy.revision[:16]})"
    )
    if failed:  # an ApplianceError, not typer.Exit: main() runs click with standalone_mode=False
        raise ApplianceError(f"{failed} of {len(results)} policy tests failed")


@app.command()
def sign(
    directory: Annotated[Path, typer.Argument(help="Policy pack folder to sign.")],
    key: Annotated[Path, typer.Option("--key", help="Private key file (PEM).")],
) -> None:
    """Validate the pack, then write its OMS signature (policy.sig) with KEY."""
    from appliance.policy import SIGNATURE_NAME, PolicySet
    from appliance.signing import keys, oms

    policy = PolicySet.load(directory)
    (directory / SIGNATURE_NAME).unlink(missing_ok=True)
    oms.sign_folder(directory, keys.load_private_key(key), signature_name=SIGNATURE_NAME)
    typer.echo(f"signed: {policy.pack.pack.name} version {policy.version} revision {policy.revision}")


@app.command()
def reload(
    api_key_file: Annotated[Path, typer.Option("--api-key-file", help="File holding an admin API key.")],
    url: Annotated[str | None, typer.Option(help="Gateway base URL (default: configured host:port).")] = None,
) -> None:
    """Validate the configured pack here, then ask the running gateway to put it in force."""
    import httpx

    from appliance.config import get_settings
    from appliance.files import read_small
    from appliance.policy import PolicySet

    settings = get_settings()
    policy = PolicySet.from_settings(settings)
    try:
        token = read_small(api_key_file, 4096).decode().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ApplianceError(f"cannot read {api_key_file}: {getattr(exc, 'strerror', None) or 'not text'}") from exc
    base = url or f"http://{settings.host}:{settings.port}"
    try:
        reply = httpx.post(
            f"{base}/admin/policy/reload", headers={"Authorization": f"Bearer {token}"}, timeout=30, trust_env=False
        )  # this host's gateway: never through an http_proxy from the environment
    except httpx.HTTPError as exc:
        raise ApplianceError(f"cannot reach the gateway at {base}: {exc}") from exc
    if reply.status_code != 200:
        raise ApplianceError(f"gateway refused the reload ({reply.status_code}): {reply.text[:200]}")
    typer.echo(f"reloaded: revision {reply.json().get('revision', policy.revision)}")
