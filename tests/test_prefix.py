"""A shorter run is the first part of a longer one (the fleet scenarios are in ``test_prefix_fleet.py``, so the two
modules run side by side): every bundled scenario run for one day and for two gives the
same first day to the bit, and a run stopped within a day gives the same minutes as the whole day.

Every random draw is made per calendar day from a stream keyed by its purpose and the day, and every plan (the
aggregator's day-ahead plan, the value-stacking planner's day, what a controller looks ahead at) covers whole
days, never only up to ``--until``. The fleets are cut to a few households per group so that three simulated
days per scenario stay cheap; the mechanisms are the full scenarios' own.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pandas as pd
import pytest

from dercosim.scenarios.bundled import bundled_scenarios
from dercosim.scenarios.config import Scenario
from dercosim.scenarios.world import run_scenario

BUNDLED = bundled_scenarios()
#: wall-time columns differ from run to run by nature
WALL = ("step_ms", "solve_ms", "milp_solve_ms", "admm_wall_s", "evm_round_ms", "overrun")


def _small(name: str, duration_s: int) -> Scenario:
    """The bundled scenario with at most three buses per household group (a planner's communities kept, its
    ADMM cut to 40 iterations and no centralised benchmark: the plan's horizon is what matters here)."""
    data = tomllib.loads(BUNDLED[name].read_text())
    communities = data.get("planner", {}).get("communities")
    if "planner" in data:
        data["planner"]["central"] = False
        data["planner"].setdefault("admm", {})["max_iter"] = 40
    for group in data.get("households", {}).get("groups", []):
        if group.get("name") == communities:
            continue
        buses = group.get("buses", "all")
        group["buses"] = [2, 3, 4] if buses == "all" else list(dict.fromkeys(buses))[:3]
    data.setdefault("clock", {})["duration"] = duration_s
    scenario = Scenario.model_validate(data)
    scenario._source_dir = BUNDLED[name].parent
    return scenario


def one_day_against_two(tmp_path: Path, name: str) -> None:
    """Run ``name`` (cut down) for one day and for two; the first day must be the same to the bit."""
    one = run_scenario(_small(name, 86400), tmp_path / "one", progress=False)
    two = run_scenario(_small(name, 2 * 86400), tmp_path / "two", progress=False)
    first = _records(one.parquet, 86400)
    assert len(first) > 0
    pd.testing.assert_frame_equal(first, _records(two.parquet, 86400), check_exact=True)
    assert two.summary["steps"] == 2 * one.summary["steps"]


def _records(result_parquet: Path, until_s: int) -> pd.DataFrame:
    df = pd.read_parquet(result_parquet)
    df = df[df.time_s < until_s].drop(columns=[c for c in WALL if c in df.columns])
    return df.reset_index(drop=True)


#: bundled scenarios whose mechanisms another one already covers here: value_stacking_tpt is value_stacking_tou
#: with another tariff (the same planner, ADMM and day-ahead horizon), simbench_lv_volt_var is
#: simbench_lv_households' feeder (its inverters' memory of the last step is in test_inverters)
COVERED = {"value_stacking_tpt", "simbench_lv_volt_var"}


@pytest.mark.parametrize("name", sorted(n for n in BUNDLED if not n.startswith("fleet_market") and n not in COVERED))
def test_one_day_is_the_first_day_of_two(tmp_path: Path, name: str):
    one_day_against_two(tmp_path, name)


@pytest.mark.parametrize("name,short_s,long_s", [
    ("value_stacking_tou", 2 * 3600, 86400),  # the planner plans the whole day either way
    ("fleet_market_s4", 3600, 7200),  # the aggregator, the contract and the MPC see past the run's end
])
def test_a_run_stopped_within_a_day_is_the_first_part_of_a_longer_one(tmp_path: Path, name, short_s, long_s):
    short = run_scenario(_small(name, short_s), tmp_path / "short", progress=False)
    long = run_scenario(_small(name, long_s), tmp_path / "long", progress=False)
    pd.testing.assert_frame_equal(_records(short.parquet, short_s), _records(long.parquet, short_s),
                                  check_exact=True)
