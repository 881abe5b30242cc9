"""Controllers as plug-ins: the rule-based baseline, a user's own file, and clear errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dercosim.grids.ieee33 import BASE_P_KW_TOTAL, base_load_kw
from dercosim.controllers.registry import load_controller_class, registered_controllers
from dercosim.controllers.rule_based import RuleBasedController
from dercosim import cli
from dercosim.scenarios.config import Scenario, ScenarioError
from dercosim.scenarios.world import run_scenario

REPO = Path(__file__).resolve().parents[1]


def pv_battery(controller: str | None = "rule_based", batteries: bool = True, **hems) -> Scenario:
    data = {
        "name": "pvb", "seed": 3, "clock": {"start": "2016-06-21T00:00:00", "duration": "1d"},
        "households": {"groups": [{"buses": [6, 12, 18, 25, 30, 33], "per_bus": 2, "pv_share": 1.0,
                                   "pv_kwp": [4, 7]}]},
        "batteries": {"pms_cycle_s": 1.0, "subminute_sigma_kw": 0.3,
                      "groups": [{"capacity_kwh": 10.3, "p_charge_max_kw": 5.3, "p_discharge_max_kw": 5.3}]
                      if batteries else []},
        "hems": {"controller": controller, **hems},
    }
    return Scenario.model_validate(data)


@pytest.fixture(scope="module")
def baseline_and_rule_based(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp")
    none = run_scenario(pv_battery(controller=None, batteries=False), out / "none", progress=False)
    rule = run_scenario(pv_battery(), out / "rule", progress=False)
    return none, rule


def test_rule_based_beats_no_battery(baseline_and_rule_based):
    none, rule = baseline_and_rule_based
    a, b = none.summary["households"], rule.summary["households"]
    assert b["self_consumption"] > a["self_consumption"] + 0.1
    assert b["self_sufficiency"] > a["self_sufficiency"] + 0.1
    assert b["bill_total"] < a["bill_total"]
    assert b["pv_kwh"] == pytest.approx(a["pv_kwh"])  # same day, same households
    for name, hh in b["per_household"].items():
        assert hh["bill"] <= a["per_household"][name]["bill"] + 1e-9


def test_rule_based_never_imports_to_charge_and_energy_closes(baseline_and_rule_based):
    _, rule = baseline_and_rule_based
    df = pd.read_parquet(rule.parquet)
    bat = df[df.kind == "battery"].set_index(["time_s", "entity"])
    hh = df[df.kind == "household"].set_index("time_s")
    batteries = pd.read_csv(rule.out_dir / "batteries.csv").set_index("name")
    for name, row in batteries.iterrows():
        b = bat.xs(name, level="entity")
        net = hh[hh.entity == row["household"]].net_kw
        charging_while_deficit = (b.p_kw > 1e-9) & (net.loc[b.index] > 0.5)  # 0.5 kW: sub-minute flicker
        assert not charging_while_deficit.any(), name
    s = rule.summary["batteries"]
    assert s["energy_balance_max_error_kwh"] <= 1e-9
    assert s["pms_cycle_s"] == 1.0 and s["discharged_kwh"] > 0
    # the battery's meter power is what the grid bus received (every household here has a battery)
    t = 12 * 3600
    now = df[df.time_s == t]
    factor = now[now.kind == "feeder"].base_p_kw.iloc[0] / BASE_P_KW_TOTAL
    at_bus = now[now.kind == "battery"].groupby("bus").meter_kw.sum()
    bus = now[now.kind == "bus"].set_index("bus")
    for b_no, meter in at_bus.items():
        expected = base_load_kw()[0][int(b_no) - 1] * factor + meter
        assert bus.loc[b_no, "p_net_kw"] == pytest.approx(expected, rel=1e-9)


def test_rule_based_is_registered():
    assert registered_controllers()["rule_based"] == "dercosim.controllers.rule_based:RuleBasedController"
    assert load_controller_class("rule_based") is RuleBasedController


def test_users_controller_runs_from_their_own_folder(tmp_path: Path):
    for name in ("my_controller.py", "my_controller.toml"):
        shutil.copy(REPO / "examples" / name, tmp_path / name)
    exe = Path(sys.executable).with_name("dercosim")
    proc = subprocess.run([str(exe), "run", "my_controller.toml", "--out", "runs", "--quiet"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    df = pd.read_parquet(run_dir / "timeseries.parquet")
    bat = df[df.kind == "battery"]
    evening = bat[(bat.time_s >= 18 * 3600) & (bat.follow_residual == 0)]
    # the user's parameters reached the controller: 1.5 kW evening discharge
    assert np.isclose(evening.p_kw, -1.5).mean() > 0.5
    assert json.loads((run_dir / "summary.json").read_text())["hems"]["controller"] == "my_controller.py:MyController"


def test_users_own_controllers_package_next_to_the_scenario(tmp_path: Path):
    """dercosim's folders install under ``dercosim.*``: a user's ``controllers/`` package does not collide."""
    pkg = tmp_path / "controllers"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    shutil.copy(REPO / "examples" / "my_controller.py", pkg / "my_ctrl.py")
    toml = (REPO / "examples" / "my_controller.toml").read_text()
    toml = toml.replace('"my_controller.py:MyController"', '"controllers.my_ctrl:MyController"')
    (tmp_path / "own.toml").write_text(toml)
    python = Path(sys.executable)
    # from a folder without a controllers/ package, the name is free: dercosim did not take it
    bare = subprocess.run([str(python), "-c", "import controllers"], cwd=tmp_path.parent, capture_output=True,
                          text=True, timeout=60)
    assert bare.returncode != 0 and "No module named 'controllers'" in bare.stderr
    proc = subprocess.run([str(python.with_name("dercosim")), "run", "own.toml", "--until", "19h", "--out", "runs",
                           "--quiet"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    bat = pd.read_parquet(run_dir / "timeseries.parquet", filters=[("kind", "==", "battery")])
    evening = bat[(bat.time_s >= 18 * 3600) & (bat.follow_residual == 0)]
    assert len(evening) and np.isclose(evening.p_kw, -1.5).mean() > 0.5  # the user's class ran, with its params


BROKEN = '''
class Raises:
    period_s = 60
    inputs = ("net_kw",)
    outputs = ("p_set_kw",)
    def step(self, t, obs):
        if t >= 3600:
            raise RuntimeError("lost my keys")
        return {"p_set_kw": 0.0}

class WantsFoo(Raises):
    inputs = ("foo_kw",)

class WantsHvac(Raises):
    outputs = ("hvac_set_kw",)

class OddPeriod(Raises):
    period_s = 45

class NoStep:
    period_s = 60
    inputs = ()
    outputs = ("p_set_kw",)
'''


@pytest.mark.parametrize("controller,words", [
    ("no_such_controller", ["no controller registered", "rule_based"]),
    ("no_such_module:X", ["importing 'no_such_module' failed"]),
    ("broken.py:Missing", ["has no 'Missing'"]),
    ("broken.py:WantsFoo", ["for hh_001", "unknown input(s) ['foo_kw']"]),
    ("broken.py:WantsHvac", ["for hh_001", "hvac_set_kw", "nothing to drive"]),
    ("broken.py:OddPeriod", ["period_s must be a positive multiple of the clock's step (60 s)"]),
    ("broken.py:NoStep", ["missing 'step'"]),
    ("broken.py:Raises", ["for hh_001 at t = 3600 s raised RuntimeError: lost my keys"]),
])
def test_bad_controllers_get_a_clear_error(tmp_path: Path, capsys, controller, words):
    (tmp_path / "broken.py").write_text(BROKEN)
    (tmp_path / "s.toml").write_text(f'''
name = "broken"
[clock]
duration = "2h"
[[households.groups]]
buses = [5, 9]
pv_share = 1.0
[[batteries.groups]]
[hems]
controller = "{controller}"
''')
    rc = cli.main(["run", str(tmp_path / "s.toml"), "--out", str(tmp_path / "runs"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err
    assert controller in err
    for word in words:
        assert word in err, err
    if controller.endswith("Raises"):  # what ran before the failure is kept
        (run_dir,) = (tmp_path / "runs").iterdir()
        kept = pd.read_parquet(run_dir / "timeseries.parquet")
        assert kept.time_s.max() >= 3540


def test_constructor_errors_name_the_params(tmp_path: Path):
    s = pv_battery(params={"follow_in_pms": True, "colour": "red"})
    with pytest.raises(ScenarioError, match=r"hems\.params\.colour: unknown parameter"):
        run_scenario(s, tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()  # checked before anything was written
