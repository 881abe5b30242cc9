from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SCENARIO = REPO / "scenarios" / "ieee33_households.toml"


@pytest.fixture(scope="session")
def default_scenario_path() -> Path:
    return DEFAULT_SCENARIO
