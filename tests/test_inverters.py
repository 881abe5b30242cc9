"""PV inverters that act on the grid (IEEE Std 1547-2018 Volt-VAr and Volt-Watt, fixed power factor, a
controller's setpoints), within their rating; and Volt-VAr lowering the midday overvoltage of a high-PV LV feeder
with the energy still closing."""

from __future__ import annotations

import numpy as np
import pytest

from dercosim.devices.inverter import InverterSettings, inverter_output
from dercosim.scenarios.bundled import bundled_scenarios
from dercosim.scenarios.load import load_scenario
from dercosim.scenarios.world import run_scenario, with_duration

S = np.array([10.0, 10.0, 10.0, 10.0, 10.0])
V = np.array([0.92, 0.98, 1.0, 1.05, 1.08])


def test_volt_var_follows_the_ieee_1547_category_b_curve_within_the_rating() -> None:
    at_once = InverterSettings(mode="volt_var", delta_factor=1.0)
    out = inverter_output(np.full(5, 4.0), S, V, at_once)
    # +0.44 S at 0.92 pu, nothing in the dead band, halfway down the slope at 1.05 pu, -0.44 S at 1.08 pu
    np.testing.assert_allclose(out.q_kvar, [4.4, 0.0, 0.0, -2.2, -4.4])
    np.testing.assert_allclose(out.p_kw, 4.0)
    full = inverter_output(np.full(5, 9.8), S, V, at_once)  # active power first: |q| <= sqrt(S² - p²)
    np.testing.assert_allclose(np.abs(full.q_kvar[[0, 4]]), np.sqrt(100 - 9.8 ** 2))
    assert (full.p_kw ** 2 + full.q_kvar ** 2 <= S ** 2 + 1e-9).all()


def test_volt_watt_curtails_and_a_failed_power_flow_changes_nothing() -> None:
    at_once = InverterSettings(mode="volt_watt", delta_factor=1.0)
    out = inverter_output(np.full(3, 9.0), S[:3], np.array([1.05, 1.08, 1.10]), at_once)
    np.testing.assert_allclose(out.p_kw, [9.0, 6.0, 2.0])  # cap 1.0 S to 1.06 pu, 0.6 S at 1.08, 0.2 S at 1.10
    np.testing.assert_allclose(out.curtailed_kw, [0.0, 3.0, 7.0])
    unknown = inverter_output(np.full(2, 9.0), S[:2], np.array([np.nan, np.nan]),
                              InverterSettings(mode="volt_var_watt", delta_factor=1.0))
    np.testing.assert_allclose(unknown.p_kw, 9.0)
    np.testing.assert_allclose(unknown.q_kvar, 0.0)


def test_the_curve_is_approached_step_by_step_and_setpoints_are_applied_at_once() -> None:
    damped = InverterSettings(mode="volt_var", delta_factor=0.3)
    first = inverter_output(np.full(1, 4.0), S[:1], np.array([1.08]), damped)
    second = inverter_output(np.full(1, 4.0), S[:1], np.array([1.08]), damped, last=first)
    assert first.q_kvar[0] == pytest.approx(-4.4)  # no previous step: the curve
    assert second.q_kvar[0] == pytest.approx(-4.4)
    third = inverter_output(np.full(1, 4.0), S[:1], np.array([1.0]), damped, last=second)
    assert third.q_kvar[0] == pytest.approx(-4.4 * 0.7)  # 30 % of the way back to 0
    pf = inverter_output(np.full(1, 5.0), S[:1], np.array([1.0]), InverterSettings(mode="fixed_pf", pf=0.9))
    assert pf.q_kvar[0] == pytest.approx(-5.0 * np.tan(np.arccos(0.9)))  # absorbing by default
    forced = inverter_output(np.full(1, 5.0), S[:1], np.array([1.0]), damped, p_cap_kw=np.array([3.0]),
                             q_set_kvar=np.array([20.0]))
    assert forced.p_kw[0] == 3.0 and forced.q_kvar[0] == pytest.approx(np.sqrt(100 - 9))  # clipped to the rating


@pytest.fixture(scope="module")
def midday(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """simbench_lv_volt_var to 14:00, with Volt-VAr and with the inverters at unity."""
    base = tmp_path_factory.mktemp("volt_var")
    scenario = with_duration(load_scenario(bundled_scenarios()["simbench_lv_volt_var"]), 14 * 3600)
    unity = load_scenario(bundled_scenarios()["simbench_lv_volt_var"])
    unity = with_duration(unity.set("inverters.mode", "unity"), 14 * 3600)
    return {"volt_var": run_scenario(scenario, base / "vv", progress=False),
            "unity": run_scenario(unity, base / "unity", progress=False)}


def test_volt_var_lowers_the_worst_overvoltage(midday: dict) -> None:
    vv, unity = midday["volt_var"].summary, midday["unity"].summary
    assert unity["voltage"]["max_pu"] > 1.10  # the feeder needs it: PV on every house pushes it over the limit
    assert vv["voltage"]["max_pu"] < unity["voltage"]["max_pu"] - 0.02
    assert vv["voltage"]["minutes_outside_limits"] < unity["voltage"]["minutes_outside_limits"]
    inv = vv["inverters"]
    assert inv["q_absorbed_kvarh"] > 0 and inv["pv_curtailed_kwh"] == 0.0  # Volt-VAr alone curtails nothing
    assert "inverters" not in unity  # nothing acted, nothing recorded


def test_energy_closes_with_the_inverters_acting(midday: dict) -> None:
    res = midday["volt_var"]
    hh = res.households
    assert (hh.pv_q_kvar <= 1e-12).all()  # only absorbing at midday on this feeder
    rated = (hh.pv_kw ** 2 + hh.pv_q_kvar ** 2) ** 0.5
    assert (rated <= 1.1 * 14 + 1e-9).all()
    s = res.summary
    assert s["inverters"]["pv_delivered_kwh"] == pytest.approx(s["households"]["pv_kwh"], rel=1e-12)
    feeder = res.feeder.set_index("time_s")
    total = res.buses.groupby("time_s").p_net_kw.sum()
    assert (feeder.p_head_kw - total - feeder.losses_kw).abs().max() < 1e-3  # head = loads + losses
    # the reactive power the inverters absorbed reaches the feeder head
    q_total = res.buses.groupby("time_s").q_net_kvar.sum()
    np.testing.assert_allclose(q_total.to_numpy(), hh.groupby("time_s").q_kvar.sum().to_numpy(), atol=1e-9)


def test_a_controller_curtails_and_sets_reactive_power(tmp_path) -> None:
    """A plug-in controller's p_curtail_kw and q_set_kvar reach the inverter the next step, within its rating."""
    (tmp_path / "curtail.py").write_text(
        "class Curtail:\n"
        "    period_s = 60\n"
        "    inputs = ('pv_kw',)\n"
        "    outputs = ('p_curtail_kw', 'q_set_kvar')\n"
        "    def step(self, t, obs):\n"
        "        return {'p_curtail_kw': 1.0, 'q_set_kvar': -0.5}\n")
    text = bundled_scenarios()["simbench_lv_volt_var"].read_text().replace('mode = "volt_var"', 'mode = "unity"')
    text += '\n[hems]\ncontroller = "curtail.py:Curtail"\napplies_to = "all"\n'
    path = tmp_path / "curtail.toml"
    path.write_text(text)
    res = run_scenario(with_duration(load_scenario(path), 13 * 3600), tmp_path / "run", progress=False)
    hh = res.households
    later = hh[hh.time_s > 0]  # the setpoints of step t act from step t + 1
    assert later.pv_kw.max() <= 1.0 + 1e-12
    noon = later[later.time_s >= 12 * 3600]
    assert (noon.pv_curtailed_kw > 0).all()  # 8-14 kWp at noon: every household is held to 1 kW
    np.testing.assert_allclose(noon.pv_q_kvar, -0.5)
    s = res.summary["inverters"]
    assert s["pv_available_kwh"] == pytest.approx(s["pv_delivered_kwh"] + s["pv_curtailed_kwh"], rel=1e-12)
