"""The package table of docs/architecture.md, enforced: who may import whom, and no cycles at all."""

from __future__ import annotations

import itertools
import re

import pytest

from tests.conftest import REPO

grimp = pytest.importorskip("grimp")

CORE = ("signing", "bundles", "engine", "policy", "audit")
ABOVE_CORE = ("api", "serving", "cli")


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("appliance", include_external_packages=True)


def _units(graph) -> list[str]:
    """The top-level packages and modules of appliance."""
    return sorted({".".join(m.split(".")[:2]) for m in graph.modules if m.startswith("appliance.")})


def _documented() -> dict[str, set[str]]:
    """The package table's rows: unit -> the appliance units its "depends on" column names."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## Package boundaries", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for m in re.finditer(r"^\| appliance/(\w+)(?:\.py|/) \| [^|]+ \| ([^|]+) \|", section, re.M):
        names = m.group(2).strip()
        rows[m.group(1)] = set() if names == "-" else {n.strip() for n in names.split(",")}
    return rows


def _imported(graph, unit: str) -> set[str]:
    """The other appliance units that `unit`'s modules import directly."""
    found = set()
    for module in graph.modules:
        if module == f"appliance.{unit}" or module.startswith(f"appliance.{unit}."):
            for target in graph.find_modules_directly_imported_by(module):
                parts = target.split(".")
                if parts[0] == "appliance" and len(parts) > 1 and parts[1] != unit:
                    found.add(parts[1])
    return found


def test_the_package_table_names_every_unit_and_its_imports_exactly(graph):
    rows = _documented()
    units = {u.split(".")[1] for u in _units(graph)} - {"migrations"}
    assert set(rows) == units, "rows missing or extra in docs/architecture.md's package table"
    wrong = {
        unit: {
            "imports but the table omits": sorted(_imported(graph, unit) - named),
            "the table names but it does not import": sorted(named - _imported(graph, unit)),
        }
        for unit, named in rows.items()
        if _imported(graph, unit) != named
    }
    assert not wrong, wrong


def test_no_cycle_between_packages(graph):
    units = _units(graph)
    cycles = [
        (a, b)
        for a, b in itertools.combinations(units, 2)
        if graph.chain_exists(a, b, as_packages=True) and graph.chain_exists(b, a, as_packages=True)
    ]
    assert not cycles


def test_no_two_modules_import_each_other(graph):
    pairs = [
        (m, n)
        for m in graph.modules
        if m.startswith("appliance.")
        for n in graph.find_modules_directly_imported_by(m)
        if m < n and m in graph.find_modules_directly_imported_by(n)
    ]
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
