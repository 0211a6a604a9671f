"""The package table of docs/architecture.md, enforced: who may import whom, and no cycles at all."""

from __future__ import annotations

import itertools

import pytest

grimp = pytest.importorskip("grimp")

CORE = ("signing", "bundles", "engine", "policy", "audit")
ABOVE_CORE = ("api", "serving", "cli")


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("appliance", include_external_packages=True)


def _units(graph) -> list[str]:
    """The top-level packages and modules of appliance."""
    return sorted({".".join(m.split(".")[:2]) for m in graph.modules if m.startswith("appliance.")})


def test_no_cycle_between_packages(graph):
    units = _units(graph)
    cycles = [(a, b) for a, b in itertools.combinations(units, 2)
              if graph.chain_exists(a, b, as_packages=True) and graph.chain_exists(b, a, as_packages=True)]
    assert not cycles


def test_no_two_modules_import_each_other(graph):
    pairs = [(m, n) for m in graph.modules if m.startswith("appliance.")
             for n in graph.find_modules_directly_imported_by(m) if m < n and m in
             graph.find_modules_directly_imported_by(n)]
    assert not pairs


@pytest.mark.parametrize("core", CORE)
def test_core_packages_import_neither_the_http_layer_nor_ray(graph, core):
    for other in ("ray", "fastapi", "starlette", "uvicorn", *(f"appliance.{p}" for p in ABOVE_CORE)):
        if other not in graph.modules:
            continue
        assert not graph.chain_exists(f"appliance.{core}", other, as_packages=True), (core, other)


def test_layers_above_the_core_point_down(graph):
    assert not graph.chain_exists("appliance.api", "appliance.serving", as_packages=True)
    assert not graph.chain_exists("appliance.api", "appliance.cli", as_packages=True)
    assert not graph.chain_exists("appliance.serving", "appliance.cli", as_packages=True)


def test_the_serving_path_never_imports_the_training_code(graph):
    for serving in ("appliance.api", "appliance.serving", "appliance.engine", "appliance.bundles"):
        assert not graph.chain_exists(serving, "appliance.demo", as_packages=True), serving
        if "torch" in graph.modules:
            assert not graph.chain_exists(serving, "torch", as_packages=True), serving
