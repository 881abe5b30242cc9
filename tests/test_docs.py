"""The documentation: the generated references match the code, the site builds with no warning (broken links and
anchors fail), the README stays a short tour, and the release metadata agree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import dercosim

ROOT = Path(__file__).resolve().parents[1]


def test_the_generated_references_are_current() -> None:
    """docs/reference/scenario.md and cli.md are what the schema and the parser give today."""
    done = subprocess.run([sys.executable, str(ROOT / "docs" / "gen_reference.py"), "--check"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_every_scenario_key_is_in_the_reference() -> None:
    from dercosim.scenarios.config import Scenario
    from dercosim.scenarios.reference import nested_model

    page = (ROOT / "docs" / "reference" / "scenario.md").read_text(encoding="utf-8")
    todo, seen = [Scenario], set()
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, info in model.model_fields.items():
            assert f"| `{name}` |" in page, f"{model.__name__}.{name} missing from the scenario reference"
            sub = nested_model(info.annotation)
            if sub is not None:
                todo.append(sub)
    assert len(seen) > 20


def test_every_command_and_option_is_in_the_cli_reference() -> None:
    import argparse

    from dercosim.cli import build_parser

    page = (ROOT / "docs" / "reference" / "cli.md").read_text(encoding="utf-8")
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        assert f"## `dercosim {name}`" in page
        for action in parser._actions:
            for flag in action.option_strings:
                assert flag in page, f"dercosim {name} {flag} missing from the command-line reference"


@pytest.mark.skipif(shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None,
                    reason="the docs extra (mkdocs) is not installed")
def test_the_site_builds_strictly(tmp_path: Path) -> None:
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    assert mkdocs is not None
    done = subprocess.run([mkdocs, "build", "--strict", "--quiet", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    assert "Set one key and validate the whole scenario again" in api  # docstrings reached the API reference
    assert "import dercosim as dc" in (tmp_path / "site" / "guide" / "python" / "index.html").read_text()


def test_the_readme_is_a_short_tour_with_working_links() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) < 300
    import re

    for target in re.findall(r"\]\(((?:docs/|LICENSE|CITATION|CHANGELOG)[^)#]*)", text):
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"
    assert "make run" in text and "make test" in text


def test_version_licence_and_citation_agree() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["version"] == dercosim.__version__
    assert project["license"] == "MIT" and "MIT License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    import yaml

    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["version"] == dercosim.__version__ and cff["license"] == "MIT"
    assert f"## {dercosim.__version__}" in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
