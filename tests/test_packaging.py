"""The installed package holds every module of the repository under one import root, ``dercosim``."""

from __future__ import annotations

import ast
import importlib.util
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOT_PACKAGES = {"tests", "benchmarks", "examples", "build", "runs", ".venv", ".git"}


def _package_folders() -> set[str]:
    found = {"dercosim"}
    for init in REPO.rglob("__init__.py"):
        rel = init.parent.relative_to(REPO)
        if rel.parts and rel.parts[0] not in NOT_PACKAGES:
            found.add(".".join(["dercosim", *rel.parts]))
    return found


def test_every_package_folder_is_listed_under_the_dercosim_import_root():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    assert config["package-dir"] == {"dercosim": "."}
    found = _package_folders()
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"
    data_only = set(config["package-data"])  # folders of data files, no __init__.py
    assert listed <= found | data_only, f"packages listed but not in the repository: {sorted(listed - found)}"


def test_the_installed_modules_are_the_repository_files():
    """What ``import dercosim.x`` runs is the file in the repository (the strict editable install links them)."""
    for name in ("dercosim", "dercosim.cli", "dercosim.markets.contract", "dercosim.planning.admm.engine",
                 "dercosim.analysis.summary", "dercosim.studies.fleet"):
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, name
        rel = name.split(".")[1:]
        expected = REPO.joinpath(*rel, "__init__.py") if spec.submodule_search_locations else REPO.joinpath(*rel[:-1], rel[-1] + ".py")
        if not rel:
            expected = REPO / "__init__.py"
        assert Path(spec.origin).resolve() == expected.resolve(), name


def test_no_folder_imports_a_layer_above_it():
    """The layout's import rules (DESIGN): only sims/ and the world builder import mosaik; the model folders do
    not import the scenario, the world, the studies or the command line."""
    above = {
        "grids": {"timeseries", "devices", "controllers", "markets", "planning", "sims", "scenarios", "analysis",
                  "studies", "cli", "api"},
        "timeseries": {"devices", "controllers", "markets", "planning", "sims", "scenarios", "analysis", "studies",
                       "cli", "api"},
        "devices": {"controllers", "markets", "planning", "sims", "scenarios", "analysis", "studies", "cli", "api"},
        "controllers": {"markets", "planning", "sims", "scenarios", "analysis", "studies", "cli", "api"},
        "markets": {"controllers", "planning", "sims", "scenarios", "analysis", "studies", "cli", "api"},
        "planning": {"controllers", "sims", "scenarios", "analysis", "studies", "cli", "api"},
        "analysis": {"planning", "sims", "studies", "cli", "api"},
    }
    bad = []
    for folder, forbidden in above.items():
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                for name in names:
                    parts = name.split(".")
                    if parts[0] == "mosaik" or parts[0] == "mosaik_api_v3":
                        bad.append(f"{path.relative_to(REPO)} imports {name}")
                    if parts[0] == "dercosim" and len(parts) > 1 and parts[1] in forbidden:
                        bad.append(f"{path.relative_to(REPO)} imports {name}")
    assert not bad, "\n".join(bad)
