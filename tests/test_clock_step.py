"""Clock steps other than 60 s: energy closes at every step, a 30-s and a 60-s run agree on a day's energies, and a
step that does not fit the scenario's periods is one clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from dercosim.scenarios.config import Scenario, ScenarioError, parse_scenario
from dercosim.scenarios.load import checked
from dercosim.scenarios.world import run_scenario

STEPS = (30, 60, 300)


def pv_battery(step_s: int, controller: str = "rule_based", duration: str = "1d", **extra: Any) -> Scenario:
    data = {
        "name": f"step{step_s}", "seed": 3,
        "clock": {"start": "2016-06-21T00:00:00", "duration": duration, "step_s": step_s},
        "households": {"groups": [{"buses": [6, 12, 18, 25, 30, 33], "per_bus": 2, "pv_share": 1.0,
                                   "pv_kwp": [4, 7]}]},
        "batteries": {"pms_cycle_s": 1.0,
                      "groups": [{"capacity_kwh": 10.3, "p_charge_max_kw": 5.3, "p_discharge_max_kw": 5.3}]},
        "hems": {"controller": controller, "params": {"period_s": max(60, step_s)}},
        **extra,
    }
    return checked(Scenario.model_validate(data))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, Any]:
    out = tmp_path_factory.mktemp("steps")
    return {step: run_scenario(pv_battery(step), out / str(step), progress=False) for step in STEPS}


@pytest.mark.parametrize("step_s", STEPS)
def test_energy_closes_at_every_step(runs, step_s):
    run = runs[step_s]
    s = run.summary
    assert s["step_s"] == step_s and s["steps"] == 86400 // step_s
    assert s["powerflow"]["failures"] == 0
    # every battery: stored energy change = η·charged − discharged/η, to rounding
    assert s["batteries"]["energy_balance_max_error_kwh"] <= 1e-9
    df = pd.read_parquet(run.parquet)
    feeder = df[df.kind == "feeder"].set_index("time_s")
    bus = df[df.kind == "bus"].groupby("time_s").p_net_kw.sum()
    # every step: the head supplies the buses' net load and the line losses
    np.testing.assert_allclose(feeder.p_head_kw, bus.loc[feeder.index] + feeder.losses_kw, rtol=1e-6, atol=1e-6)
    # the buses' net load is the base load plus every household's metered power (after its battery)
    meters = df[df.kind == "battery"].groupby("time_s").meter_kw.sum()
    np.testing.assert_allclose(bus, feeder.base_p_kw + meters.loc[bus.index], rtol=1e-9)
    # and over the day, in kWh at this step
    e = s["energy_kwh"]
    step_h = step_s / 3600
    assert e["feeder_head_net"] == pytest.approx(e["base_load"] + meters.sum() * step_h + e["line_losses"], rel=1e-9)


def test_a_30_s_and_a_60_s_run_agree_on_the_days_energies(runs):
    """Load and PV are minute profiles held within the minute (the mean rule), and the PMS runs 1-s cycles either
    way: the day's energies agree within 1e-6 relative (measured: 3e-10). At 300 s the same load and PV energy
    (the mean of the minutes), and battery energies within 2 % (measured: 1.2 %, the controller acting every 5 min)."""
    a, b, c = (runs[s].summary for s in STEPS)
    for key in ("load_kwh", "pv_kwh"):
        assert a["households"][key] == pytest.approx(b["households"][key], rel=1e-12)
        assert c["households"][key] == pytest.approx(b["households"][key], rel=1e-12)
    for section, key in [("energy_kwh", "feeder_head_import"), ("energy_kwh", "line_losses"),
                         ("batteries", "charged_kwh"), ("batteries", "discharged_kwh"),
                         ("batteries", "clipped_kwh"), ("households", "self_consumption")]:
        assert a[section][key] == pytest.approx(b[section][key], rel=1e-6), key
    for key in ("charged_kwh", "discharged_kwh", "throughput_kwh"):
        assert c["batteries"][key] == pytest.approx(b["batteries"][key], rel=0.02), key


def test_the_mpc_plans_on_the_clocks_step(tmp_path):
    """At 30 s the MPC's horizon is the rest of the market interval in 30-s steps; it solves every QP and the
    batteries' energy closes."""
    run = run_scenario(pv_battery(30, controller="mpc", duration="2h"), tmp_path / "mpc", progress=False)
    s = run.summary
    assert s["steps"] == 240
    assert s["hems"]["faults"] == 0
    assert s["batteries"]["energy_balance_max_error_kwh"] <= 1e-9
    ctrl = pd.read_parquet(run.parquet, filters=[("kind", "==", "controller")])
    solved = ctrl.solve_ms.notna()
    assert solved.sum() == 12 * 120  # 12 households, a plan every 60 s (period_s) for 2 h
    assert (ctrl.loc[solved, "retried"] == 0).all()


BAD = [
    ({"clock": {"step_s": 7}}, "clock: step_s (7) must divide a day"),
    ({"clock": {"step_s": 3600}, "market": {}},
     "market.interval_s: 1800 s is not a whole number of the clock's steps (3600 s)"),
    ({"clock": {"step_s": 10}, "batteries": {"pms_cycle_s": 3.0}},
     "batteries.pms_cycle_s: 3.0 s must divide the clock's step (10 s)"),
    ({"clock": {"step_s": 900}, "market": {"interval_s": 1800}, "contract": {"interval_s": 300}},
     "contract.interval_s: 300 s is not a whole number of the clock's steps (900 s)"),
]


@pytest.mark.parametrize("extra,words", BAD, ids=["day", "market", "pms", "contract"])
def test_a_step_that_does_not_fit_is_one_clear_error(tmp_path: Path, extra, words):
    """Each names the file and the key it is about, before anything runs."""
    import tomli_w

    data: dict[str, Any] = {"name": "t", "clock": {"duration": "1h"},
                            "households": {"groups": [{"buses": [18]}]},
                            "batteries": {"groups": [{}]}}
    for k, v in extra.items():
        data[k] = {**data.get(k, {}), **v}
    path = tmp_path / "s.toml"
    path.write_text(tomli_w.dumps(data))
    with pytest.raises(ScenarioError) as err:
        parse_scenario(path)
    assert str(err.value).startswith(f"{path}: {words}"), str(err.value)


def test_a_controller_period_off_the_step_is_refused():
    with pytest.raises(ScenarioError, match=r"period_s must be a positive multiple of the clock's step \(300 s\), "
                                            r"got 120"):
        checked(Scenario.model_validate({
            "name": "t", "clock": {"duration": "1h", "step_s": 300},
            "households": {"groups": [{"buses": [18], "pv_share": 1.0}]},
            "batteries": {"groups": [{}]}, "hems": {"controller": "mpc"}}))


def test_an_mpc_interval_off_the_step_is_refused_before_the_run():
    """Without a market the MPC still plans to the end of its own interval (1800 s by default): at a 3600-s step
    that is no whole number of steps, refused with its key."""
    with pytest.raises(ScenarioError, match=r"hems.params.market_interval_s: 1800 s \(its default\) is not a whole "
                                            r"number of the clock's steps \(3600 s\)"):
        checked(Scenario.model_validate({
            "name": "t", "clock": {"duration": "1d", "step_s": 3600},
            "households": {"groups": [{"buses": [18], "pv_share": 1.0}]},
            "batteries": {"groups": [{}]}, "hems": {"controller": "mpc", "params": {"period_s": 3600}}}))
