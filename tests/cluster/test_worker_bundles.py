"""A worker host's replica loads its own verified copy of what the head activated, with no audit database."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from appliance.bundles.metadata import BundleError
from appliance.config import Settings
from appliance.serving.pins import NODE_DATA_ENV, head_pins, import_on_worker, load_pinned, node_settings
from appliance.signing import keys
from tests.conftest import one_line_error, run_cli


@pytest.fixture(scope="module")
def head(module_dir, demo_bundle, demo_key) -> Settings:
    """A head that imported and activated the demo bundle through the CLI (so the audit log records it)."""
    data = module_dir / "var"
    pub = module_dir / "publisher.pub"
    keys.write_public_key(demo_key.public_key(), pub)
    for argv in (
        ("db", "upgrade"),
        ("bundle", "trust", str(pub)),
        ("bundle", "import", str(demo_bundle), "--activate"),
    ):
        run_cli(*argv, data_dir=data, check=True)
    return Settings(data_dir=data, hash_workers=2)


def _worker(root: Path, demo_bundle: Path, demo_key) -> Path:
    """A joined worker's data folder (its identity stands in as join.json) with the demo bundle imported."""
    data = root / "worker"
    (data / "cluster").mkdir(parents=True)
    (data / "cluster" / "join.json").write_text('{"name": "w1"}')
    keys.write_public_key(demo_key.public_key(), data / "trust" / "publisher.pub")
    import_on_worker(data, demo_bundle)
    return data


def _on(data: Path, head: Settings, monkeypatch) -> Settings:
    monkeypatch.setenv(NODE_DATA_ENV, str(data))
    here = node_settings(head)
    assert here is not None
    return here


def test_worker_replica_loads_the_heads_activation_without_a_database(
    head, tmp_path, demo_bundle, demo_key, monkeypatch
):
    data = _worker(tmp_path, demo_bundle, demo_key)
    here = _on(data, head, monkeypatch)
    assert here.model_store == data / "models" and here.trust_dir == data / "trust"
    loaded = load_pinned(here, head_pins(head))
    try:
        assert [x.info.name for x in loaded] == list(head_pins(head))
    finally:
        for x in loaded:
            x.engine.close()
    assert not (data / "appliance.db").exists()  # nothing opened an audit database on the worker


def test_worker_replica_refuses_a_tampered_copy(head, tmp_path, demo_bundle, demo_key, monkeypatch):
    data = _worker(tmp_path, demo_bundle, demo_key)
    pins = head_pins(head)
    ((name, pin),) = pins.items()
    victim = next(p for p in (data / "models" / name / pin["version"]).iterdir() if p.suffix == ".onnx")
    victim.chmod(0o644)
    with victim.open("r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(Exception, match="digest|changed|corrupt"):
        load_pinned(_on(data, head, monkeypatch), pins)


def test_worker_replica_refuses_a_copy_the_head_did_not_activate(head, tmp_path, demo_bundle, demo_key, monkeypatch):
    data = _worker(tmp_path, demo_bundle, demo_key)
    pins = {n: {**p, "digest": "0" * 64} for n, p in head_pins(head).items()}
    with pytest.raises(BundleError, match="not the copy the head activated"):
        load_pinned(_on(data, head, monkeypatch), pins)
    missing = {n: {**p, "version": "99.0.0"} for n, p in head_pins(head).items()}
    with pytest.raises(BundleError):
        load_pinned(_on(data, head, monkeypatch), missing)


def test_head_replicas_read_the_head_store(head, monkeypatch):
    monkeypatch.delenv(NODE_DATA_ENV, raising=False)
    assert node_settings(head) is None


def test_node_import_only_on_a_joined_worker(tmp_path, demo_bundle):
    with pytest.raises(BundleError, match="no worker identity"):
        import_on_worker(tmp_path, demo_bundle)
    one_line_error(run_cli("cluster", "node-import", str(demo_bundle), "--data-dir", str(tmp_path), data_dir=tmp_path))
    assert not (tmp_path / "models").exists()


def test_llm_replica_on_a_worker_needs_no_database(head, tmp_path, demo_bundle, demo_key, monkeypatch):
    """The deployment's own constructor, as Serve calls it on a worker host: the head's settings and pins."""
    from appliance.serving import deployments

    data = _worker(tmp_path, demo_bundle, demo_key)
    monkeypatch.setenv(NODE_DATA_ENV, str(data))
    monkeypatch.setattr(deployments, "_node_address", lambda: "10.0.0.2")
    llm = deployments.LLMServer.func_or_class
    pins = head_pins(head)
    replica = llm(head.model_dump(mode="json"), pins)
    try:
        assert replica.backend.loaded_versions() == {n: p["version"] for n, p in pins.items()}
        assert replica.settings.model_store == data / "models"
    finally:
        replica.backend.close()
    with pytest.raises(BundleError, match="not the copy the head activated"):
        llm(head.model_dump(mode="json"), {n: {**p, "digest": "1" * 64} for n, p in pins.items()})
    assert not (data / "appliance.db").exists()


class _Handle:
    """Stands in for the Serve handle to the head's `Activations` (its transport is not what is tested)."""

    def __init__(self, target) -> None:
        self.pins = SimpleNamespace(remote=target.pins)


async def test_a_worker_replica_follows_an_activation_on_the_head(
    tmp_path, tiny_checkpoint, signed_tiny_bundle, publisher, monkeypatch
):
    """A version activated on the head while the worker's replica runs: the replica switches to its own copy of
    it; a version the worker has no copy of is refused (logged) and the one it had keeps serving, until the
    copy is imported there."""
    from appliance.bundles.build import build_bundle
    from appliance.serving import deployments

    def version(v: str) -> Path:
        out = tmp_path / "bundles" / v
        return build_bundle(tiny_checkpoint, out, profile="cpu-fp32", name="tiny", version=v, key=publisher[0])

    v2, v3 = version("2.0.0"), version("3.0.0")
    data = tmp_path / "head"
    for argv in (
        ("db", "upgrade"),
        ("bundle", "trust", str(publisher[1])),
        ("bundle", "import", str(signed_tiny_bundle), "--activate"),
    ):
        run_cli(*argv, data_dir=data, check=True)
    head = Settings(data_dir=data, hash_workers=2)
    worker = tmp_path / "worker"
    (worker / "cluster").mkdir(parents=True)
    (worker / "cluster" / "join.json").write_text('{"name": "w1"}')
    (worker / "trust").mkdir()
    (worker / "trust" / "publisher.pub").write_bytes(publisher[1].read_bytes())
    for bundle in (signed_tiny_bundle, v2):
        import_on_worker(worker, bundle)

    shared = head.model_dump(mode="json")
    activations = deployments.Activations.func_or_class(shared)
    monkeypatch.setenv(NODE_DATA_ENV, str(worker))
    monkeypatch.setattr(deployments, "_node_address", lambda: "10.0.0.2")
    replica = deployments.LLMServer.func_or_class(shared, await activations.pins(), _Handle(activations))

    async def checked() -> dict[str, str]:
        await replica.check_health()
        await replica._switching
        return replica.backend.loaded_versions()

    try:
        assert await checked() == {"tiny": "1.0.0"}
        run_cli("bundle", "import", str(v2), "--activate", data_dir=data, check=True)
        assert await checked() == {"tiny": "2.0.0"}, "the head's new activation, from the worker's own copy"
        run_cli("bundle", "import", str(v3), "--activate", data_dir=data, check=True)
        assert await checked() == {"tiny": "2.0.0"}, "no copy of 3.0.0 here: refused, 2.0.0 keeps serving"
        assert ("tiny", "3.0.0") in replica._refused
        import_on_worker(worker, v3)  # the operator brings the copy: the next health check loads it
        assert await checked() == {"tiny": "3.0.0"}
    finally:
        replica.backend.close()
    assert not (worker / "appliance.db").exists()
