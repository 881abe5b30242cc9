"""`dercosim validate`: linear models and the record held against AC power flow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dercosim.grids import ieee33
from dercosim.grids.powerflow import PandapowerEngine
from dercosim import cli
from dercosim.scenarios.load import load_scenario
from dercosim.analysis.validate import Recorded, ValidationError, compare, load_run, model_voltages, validate
from dercosim.scenarios.world import run_scenario, with_duration

REPO = Path(__file__).resolve().parents[1]


def base_load_minute() -> Recorded:
    p, q = ieee33.base_load_kw()
    vm = PandapowerEngine(ieee33.make_net()).solve(p, q).vm_pu
    scenario = load_scenario(REPO / "scenarios" / "ieee33_households.toml")
    return Recorded(Path("."), scenario, np.array([0]), pd.Series([pd.Timestamp("2016-06-21")]), vm[None, :],
                    p[None, :], q[None, :], np.array([3917.7]), 0, pd.DataFrame())


@pytest.mark.parametrize("model,expected", [("lindistflow_squared", 0.0028), ("lindistflow_magnitude", 0.0064)])
def test_at_base_load_the_linear_models_err_as_documented_at_bus_18(model, expected):
    rec = base_load_minute()
    figures, err = compare(rec, model_voltages(model, rec.p_kw, rec.q_kvar, REPO), 0.90, 1.10)
    assert figures["max_abs_error_pu"] == pytest.approx(expected, abs=1e-4)
    assert figures["at_bus"] == 18
    assert not figures["conservative_for_undervoltage"] and 18 in figures["above_ac"]["buses"]


def test_ac_below_the_limit_while_lindistflow_stays_above_is_a_missed_violation():
    rec = base_load_minute()  # AC 0.91309 pu at bus 18; LinDistFlow (squared) about 0.9159
    figures, _ = compare(rec, model_voltages("lindistflow_squared", rec.p_kw, rec.q_kvar, REPO), 0.915, 1.10)
    v = figures["violations"]
    assert v["minutes"] == {"ac_outside": 1, "model_outside": 0, "missed": 1, "false_alarm": 0, "both": 0,
                            "neither": 0}
    missed = {(m["bus"], m["time_s"]) for m in v["missed_examples"]}
    assert (18, 0) in missed and all(m["ac_pu"] < 0.915 < m["model_pu"] for m in v["missed_examples"])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    scenario = with_duration(load_scenario(REPO / "scenarios" / "ieee33_households.toml"), 3600)
    return run_scenario(scenario, tmp_path_factory.mktemp("val") / "run", progress=False).out_dir


USER_MODEL = '''
from dercosim.grids import ieee33
from dercosim.grids.powerflow import make_engine

class AcMinusOneMilli:
    """AC power flow minus 0.001 pu: a user's model whose error is known exactly."""
    def __init__(self):
        self.engine = make_engine("fast", ieee33.make_net())
    def voltages(self, p_kw, q_kvar):
        return self.engine.solve(p_kw, q_kvar).vm_pu - 0.001
'''


def test_a_users_model_in_a_file_gives_exactly_its_error(run_dir):
    (run_dir / "mymodel.py").write_text(USER_MODEL)
    r = validate(run_dir, ["mymodel.py:AcMinusOneMilli", "lindistflow_squared"], engine_minutes=0)
    m = r["models"]["mymodel.py:AcMinusOneMilli"]
    assert m["max_abs_error_pu"] == pytest.approx(0.001, abs=1e-7)
    assert m["mean_error_pu"] == pytest.approx(-0.001, abs=1e-7)
    assert m["conservative_for_undervoltage"]  # always below AC
    assert r["minutes"] == 60
    report = (run_dir / "validation" / "validation.md").read_text()
    assert "mymodel.py:AcMinusOneMilli" in report and "lindistflow_squared" in report
    for name in ("validation.json", "error_vs_head_power.png", "profile_worst_minute.png", "violations.png"):
        assert (run_dir / "validation" / name).exists()
    assert json.loads((run_dir / "validation" / "validation.json").read_text())["engine_check"] == {"minutes": 0}


def test_the_engine_cross_check_finds_a_corrupted_voltage(run_dir, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    df = pd.read_parquet(copy / "timeseries.parquet")
    row = df.index[(df.kind == "bus") & (df.bus == 10) & (df.time_s == 1800)][0]
    df.loc[row, "vm_pu"] += 0.01
    df.to_parquet(copy / "timeseries.parquet")
    assert cli.main(["validate", str(copy), "--engine-check", "60", "--quiet"]) == 1
    assert "DOES NOT AGREE" in capsys.readouterr().out
    e = json.loads((copy / "validation" / "validation.json").read_text())["engine_check"]
    assert e["max_abs_diff_pu"] == pytest.approx(0.01, abs=1e-6) and e["at"] == {"bus": 10, "time_s": 1800}
    clean = validate(run_dir, engine_minutes=60)["engine_check"]
    assert clean["agrees"] and clean["max_abs_diff_pu"] < 1e-6


def test_a_folder_that_is_not_a_run_or_of_an_older_layout_is_a_clear_error(run_dir, tmp_path, capsys):
    assert cli.main(["validate", str(tmp_path), "--quiet"]) == 2
    assert "not a dercosim run folder" in capsys.readouterr().err
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    df = pd.read_parquet(old / "timeseries.parquet").drop(columns=["p_net_kw", "q_net_kvar"])
    df.to_parquet(old / "timeseries.parquet")
    with pytest.raises(ValidationError, match="older dercosim"):
        load_run(old)
    assert cli.main(["validate", str(old), "--quiet"]) == 2


def test_validate_a_scenario_runs_it_first(tmp_path, capsys):
    rc = cli.main(["validate", "ieee33_households", "--until", "30min", "--out", str(tmp_path), "--quiet",
                   "--engine-check", "3"])
    assert rc == 0, capsys.readouterr().err
    (folder,) = tmp_path.iterdir()
    r = json.loads((folder / "validation" / "validation.json").read_text())
    assert r["minutes"] == 30 and set(r["models"]) == {"lindistflow_squared", "lindistflow_magnitude"}


@pytest.mark.parametrize("forecaster", ["perfect", "linear_regression"])
def test_the_mpc_forecasts_are_held_against_what_happened(tmp_path, forecaster):
    from dercosim.scenarios.config import Scenario

    s = Scenario.model_validate({
        "name": "fc", "seed": 3, "clock": {"start": "2016-06-21T09:00:00", "duration": "1h"},
        "households": {"groups": [{"buses": [6, 18, 25, 33], "pv_share": 1.0}]},
        "batteries": {"groups": [{}]},
        "hems": {"controller": "mpc", "params": {"period_s": 120, "forecaster": forecaster}}})
    run = run_scenario(s, tmp_path / "run", progress=False)
    f = validate(run.out_dir, engine_minutes=0)["beliefs"]["mpc_forecasts"]
    assert f["1_min"]["forecasts"] > 0 and f["15_min"]["forecasts"] > 0
    if forecaster == "perfect":  # the oracle: the residual that happened, exactly
        assert all(f[k]["mae_kw"] < 1e-9 for k in ("1_min", "5_min", "15_min"))
    else:  # a regression on the last 30 minutes errs, and more the further ahead
        assert 0 < f["1_min"]["mae_kw"] < f["15_min"]["mae_kw"]
    assert "mpc_forecasts" in (run.out_dir / "validation" / "validation.md").read_text()
