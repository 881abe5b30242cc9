"""``dercosim sweep`` on dask.distributed: same numbers as runs made one by one, failures alone, resume."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from dercosim import cli
from dercosim.scenarios.config import Scenario
from dercosim.studies.sweep import parse_set, plan_cases, run_sweep
from dercosim.scenarios.world import run_scenario

SCENARIO = cli.bundled_scenarios()["ieee33_households"]
UNTIL_S = 1800


def test_parse_set_reads_values_as_toml():
    assert parse_set("contract.interval_s=60,300") == ("contract.interval_s", [60, 300])
    assert parse_set("a.b=0.5,true,'x',word") == ("a.b", [0.5, True, "x", "word"])
    assert parse_set("households.groups[0].pv_kwp=[3, 8],[1, 2]") == ("households.groups[0].pv_kwp", [[3, 8], [1, 2]])
    with pytest.raises(Exception, match="KEY=VALUE"):
        parse_set("contract.interval_s")


def test_an_invalid_value_fails_alone_with_the_key_and_what_was_expected():
    cases = plan_cases(SCENARIO, [parse_set("households.groups[0].per_bus=1,-3")], until_s=UNTIL_S)
    good, bad = cases
    assert good.error is None and good.scenario_json is not None
    assert bad.scenario_json is None
    assert str(SCENARIO) in bad.error and "households.groups[0].per_bus" in bad.error


def test_a_sweep_with_no_valid_case_writes_nothing(tmp_path: Path, capsys):
    rc = cli.main(["sweep", "ieee33_households", "--set", "grid.v_min_pu=2,3", "--out", str(tmp_path / "runs"),
                   "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "grid.v_min_pu" in err and "no valid case" in err
    assert not (tmp_path / "runs").exists()


def test_two_by_two_on_two_workers_equals_the_runs_made_one_by_one_and_resume_reruns_nothing(tmp_path: Path):
    cases = plan_cases(SCENARIO, [parse_set("grid.base_load.scale=0.6,0.9")], seeds=2, until_s=UNTIL_S)
    assert len(cases) == 4 and all(c.error is None for c in cases)
    out = tmp_path / "sweep"
    table = run_sweep(SCENARIO, cases, out, workers=2, log=lambda msg: None)
    assert list(table.status) == ["ok"] * 4
    assert sorted(table.seed.unique()) == [42, 43]
    stored = pd.read_parquet(out / "sweep.parquet")
    pd.testing.assert_frame_equal(stored, table)
    assert (out / "sweep.md").read_text().count("\n") == 6  # header, rule, four cases
    assert (out / "sweep_grid.base_load.scale.png").exists()
    for c in cases:  # the same case in this process gives the same numbers
        scenario = Scenario.model_validate_json(c.scenario_json)
        scenario._source_dir = SCENARIO.parent
        summary = run_scenario(scenario, tmp_path / "serial" / c.case, progress=False).summary
        row = table[table.case == c.case].iloc[0]
        assert row.v_min_pu == summary["voltage"]["min_pu"]
        assert row.line_losses_kwh == summary["energy_kwh"]["line_losses"]
        assert row.bill_total == summary["households"]["bill_total"]
        a = pd.read_parquet(out / "cases" / c.case / "timeseries.parquet")
        b = pd.read_parquet(tmp_path / "serial" / c.case / "timeseries.parquet")
        pd.testing.assert_frame_equal(a, b)
    # the base-load scale moves the voltage; the seed moves the households
    by_scale = table.groupby("grid.base_load.scale").v_min_pu.mean()
    assert by_scale[0.9] < by_scale[0.6]
    # --resume: nothing finished is run again
    said = []
    again = run_sweep(SCENARIO, cases, out, workers=2, log=said.append)
    assert "4 cases, 0 to run, 4 already finished" in said[0]
    pd.testing.assert_frame_equal(again, table)


def test_a_case_that_raises_in_its_worker_is_recorded_not_raised(tmp_path: Path):
    from dercosim.studies.sweep import _run_case

    row = _run_case('{"name": "broken"', str(SCENARIO.parent), str(tmp_path / "case"))
    assert row["status"] == "failed" and "ValidationError" in row["error"] and row["wall_s"] >= 0
