"""HVAC: Jiang & Wang 2024, eq. (5) thermal model inside the household simulator."""

from __future__ import annotations

import numpy as np
import pytest

from dercosim.devices.thermal import indoor_temperature_next, thermostat
from dercosim.sims.household import HouseholdSim

C, R, COP = 4.0, 3.0, 3.0  # kWh/°C, °C/kW


def household_sim(t_out_c: float, n_steps: int = 240) -> HouseholdSim:
    sim = HouseholdSim()
    sim.init("H", step_s=60, names=["h1"], bus=[5], load_kw=np.zeros((n_steps, 1)), pv_kw=np.zeros((n_steps, 1)),
             power_factor=[1.0], t_outdoor_c=np.full(n_steps, t_out_c),
             hvac={"p_max_kw": [3.0], "c_kwh_per_c": [C], "r_c_per_kw": [R], "mu": [COP], "t_set_c": [24.0],
                   "band_c": [2.0], "t_init_c": [24.0]})
    sim.create(1, "Household")
    return sim


def test_a_step_in_hvac_power_moves_indoor_temperature_by_the_analytic_amount():
    sim = household_sim(t_out_c=24.0)
    p = 1.5
    temps = []
    for k in range(120):
        sim.step(60 * k, {"h1": {"hvac_set_kw": {"ctrl": p}}}, 10**9)
        out = sim.get_data({"h1": ["t_indoor_c", "hvac_kw", "net_kw"]})["h1"]
        temps.append(out["t_indoor_c"])
        assert out["hvac_kw"] == p and out["net_kw"] == pytest.approx(p)
    a = (1 / 60) / (C * R)
    steady = 24.0 - COP * R * p  # 10.5 °C below outdoor if held forever
    n = np.arange(1, 121)
    np.testing.assert_allclose(temps, steady + (24.0 - steady) * (1 - a) ** n, atol=1e-12)
    # and in plain numbers: two hours of 1.5 kW cooling in a 4 kWh/°C, 3 °C/kW house
    assert temps[-1] == pytest.approx(24.0 - 13.5 * (1 - (1 - 1 / 720) ** 120), abs=1e-12)


def test_setpoint_is_clipped_to_the_hvac_rating():
    sim = household_sim(t_out_c=30.0)
    sim.step(0, {"h1": {"hvac_set_kw": {"ctrl": 10.0}}}, 10**9)
    assert sim.get_data({"h1": ["hvac_kw"]})["h1"]["hvac_kw"] == 3.0
    sim.step(60, {"h1": {"hvac_set_kw": {"ctrl": -2.0}}}, 10**9)
    assert sim.get_data({"h1": ["hvac_kw"]})["h1"]["hvac_kw"] == 0.0


def test_thermostat_keeps_the_comfort_band_on_a_hot_day():
    sim = household_sim(t_out_c=35.0, n_steps=1440)
    temps, on = [], []
    for k in range(1440):
        sim.step(60 * k, {}, 10**9)
        d = sim.get_data({"h1": ["t_indoor_c", "hvac_kw"]})["h1"]
        temps.append(d["t_indoor_c"])
        on.append(d["hvac_kw"] > 0)
    temps = np.array(temps)
    assert temps.min() > 22.9 and temps.max() < 25.1  # band 23..25 plus one step of overshoot
    assert 0.05 < np.mean(on) < 0.95  # it cycles


def test_heating_mode_warms():
    def next_c(p_kw: float) -> float:
        return float(indoor_temperature_next(np.array([20.0]), 5.0, np.array([p_kw]), np.array([-3.0]),
                                             np.array([C]), np.array([R]), 1 / 60)[0])

    off, heating = next_c(0.0), next_c(2.0)
    assert off == pytest.approx(20.0 - (1 / 60) / (C * R) * 15.0, abs=1e-12)  # the loss to the cold outside
    # 2 kW at COP 3 for a minute puts 0.1 kWh of heat into 4 kWh/°C: 0.025 °C warmer than without
    assert heating - off == pytest.approx(3.0 * 2.0 * (1 / 60) / C, abs=1e-12)
    assert thermostat(np.array([18.0]), np.array([False]), np.array([-3.0]), np.array([21.0]), np.array([2.0]))[0]
