"""Battery fleet and its PMS loop: energy closure, limits, following the residual."""

from __future__ import annotations

import numpy as np
import pytest

from dercosim.devices.battery import BatteryFleet, BatteryParams
from dercosim.timeseries.subminute import SubminuteFluctuation

COURAUD_BATTERY = dict(capacity_kwh=10.3, p_charge_max_kw=5.3, p_discharge_max_kw=5.3, eta_charge=0.9, eta_discharge=0.9,
              soc_min_frac=0.1, soc_max_frac=0.95, self_discharge_per_h=0.0)


def fleet(n: int = 1, soc_kwh: float = 5.0, cycle_s: float = 1.0, **overrides: float) -> BatteryFleet:
    return BatteryFleet(BatteryParams.of(n, **{**COURAUD_BATTERY, **overrides}), np.full(n, soc_kwh), cycle_s=cycle_s)


@pytest.mark.parametrize("cycle_s,minutes", [(1.0, 1440), (0.1, 240)])
def test_energy_closes_for_every_battery_over_hours(cycle_s, minutes):
    # a day at 1-s cycles; four hours at 0.1 s (600 cycles a minute) already hit every limit
    n = 20
    rng = np.random.default_rng(11)
    f = fleet(n, 5.0, cycle_s, self_discharge_per_h=0.002)
    noise = SubminuteFluctuation(n, f.n_cycles, cycle_s, 0.5, 10.0, np.random.default_rng(3))
    level = np.zeros(n)
    for _ in range(minutes):
        level = 0.9 * level + rng.normal(0, 1.5, n)  # residuals that hit both power and SoC limits
        follow = rng.random(n) < 0.6
        f.step(level[None, :] + noise.next_step(), follow, rng.uniform(-7, 7, n))
    assert np.all(f.e_clipped_kwh > 0)  # limits did bind
    assert np.abs(f.energy_balance_error_kwh()).max() <= 1e-9
    # the PMS never discharges below soc_min; only self-discharge (0.2 %/h) may take it a little lower
    assert np.all(f.soc_kwh >= f.soc_min_kwh * (1 - 0.002) ** (minutes / 60) - 1e-12)
    assert np.all(f.soc_kwh <= f.soc_max_kwh + 1e-12)


def test_block_and_loop_paths_agree():
    n = 30
    rng = np.random.default_rng(5)
    fa, fl = fleet(n, 6.0, 0.5, self_discharge_per_h=0.01), fleet(n, 6.0, 0.5, self_discharge_per_h=0.01)
    for _ in range(300):
        residual = rng.normal(0, 3, (fa.n_cycles, n))
        follow = rng.random(n) < 0.5
        p_set = rng.uniform(-6, 6, n)
        ra = fa.step(residual, follow, p_set, method="auto")
        rl = fl.step(residual, follow, p_set, method="loop")
        np.testing.assert_allclose(ra.p_kw, rl.p_kw, atol=1e-9)
        np.testing.assert_allclose(ra.e_clipped_kwh, rl.e_clipped_kwh, atol=1e-9)
    np.testing.assert_allclose(fa.soc_kwh, fl.soc_kwh, atol=1e-9)
    np.testing.assert_allclose(fa.e_self_discharge_kwh, fl.e_self_discharge_kwh, atol=1e-9)


def test_the_compiled_loop_is_the_numpy_loop_to_the_bit():
    """Batteries whose SoC bounds may bind go through a compiled loop: every total and the SoC equal the numpy
    loop's exactly, with unlike batteries, self-discharge, bounds hit both ways and zero (or signed-zero) targets;
    a target that is not a number takes numpy's path (NaN propagates, as before)."""
    n = 60
    rng = np.random.default_rng(8)
    params = BatteryParams.of(n, capacity_kwh=rng.uniform(5, 13, n), p_charge_max_kw=rng.uniform(2, 6, n),
                              p_discharge_max_kw=rng.uniform(2, 6, n), eta_charge=rng.uniform(0.85, 0.97, n),
                              eta_discharge=rng.uniform(0.85, 0.97, n), soc_min_frac=0.1, soc_max_frac=0.95,
                              self_discharge_per_h=rng.uniform(0, 0.01, n))
    soc0 = params.capacity_kwh * rng.uniform(0, 1, n)
    fc, fl = BatteryFleet(params, soc0), BatteryFleet(params, soc0)
    cols = np.arange(n)
    hit = {"full": 0, "empty": 0}
    for _ in range(100):
        target = rng.normal(0, 4, (fc.n_cycles, n)) * rng.integers(0, 2, (1, n))
        target[:, :2] = -0.0
        np.testing.assert_array_equal(fc._compiled(target, cols), fl._loop(target, cols))
        for name in ("soc_kwh", "e_charge_kwh", "e_discharge_kwh", "e_self_discharge_kwh", "e_clipped_kwh"):
            np.testing.assert_array_equal(getattr(fc, name), getattr(fl, name))
        hit["full"] += int((fc.soc_kwh >= fc.soc_max_kwh - 1e-9).sum())
        hit["empty"] += int((fc.soc_kwh <= fc.soc_min_kwh + 1e-6).sum())
    assert hit["full"] > 0 and hit["empty"] > 0
    target[5, 3] = np.nan
    assert np.isnan(fc._compiled(target, cols)[3]) and np.isnan(fl._loop(target, cols)[3])


def test_constant_setpoint_delivers_setpoint_times_time():
    f = fleet(soc_kwh=2.0)
    for _ in range(60):  # one hour at +2 kW
        r = f.step(np.zeros(1), np.array([False]), np.array([2.0]))
        assert r.p_kw[0] == pytest.approx(2.0)
    assert f.e_charge_kwh[0] == pytest.approx(2.0, abs=1e-12)
    assert f.soc_kwh[0] == pytest.approx(2.0 + 0.9 * 2.0, abs=1e-12)
    assert f.e_clipped_kwh[0] == 0.0
    for _ in range(30):  # half an hour at −3 kW
        f.step(np.zeros(1), np.array([False]), np.array([-3.0]))
    assert f.e_discharge_kwh[0] == pytest.approx(1.5, abs=1e-12)
    assert f.soc_kwh[0] == pytest.approx(3.8 - 1.5 / 0.9, abs=1e-12)


def test_power_limit_binds_and_the_clipped_energy_is_reported():
    f = fleet(soc_kwh=2.0)
    for _ in range(10):
        r = f.step(np.zeros(1), np.array([False]), np.array([8.0]))
        assert r.p_kw[0] == pytest.approx(5.3)
    assert f.e_clipped_kwh[0] == pytest.approx((8.0 - 5.3) * 10 / 60, abs=1e-12)


def test_soc_limit_binds_when_full():
    f = fleet(soc_kwh=9.5)  # soc_max = 0.95 * 10.3 = 9.785 kWh
    for _ in range(5):  # 5 min at 5 kW would store 0.375 kWh; there is room for 0.285
        f.step(np.zeros(1), np.array([False]), np.array([5.0]))
    assert f.soc_kwh[0] == pytest.approx(9.785, abs=1e-12)
    room = (9.785 - 9.5) / 0.9  # kWh the battery could still draw
    assert f.e_charge_kwh[0] == pytest.approx(room, abs=1e-12)
    assert f.e_clipped_kwh[0] == pytest.approx(5.0 * 5 / 60 - room, abs=1e-12)


def test_follow_residual_zeroes_the_meter_while_limits_allow():
    f = fleet(soc_kwh=5.0)
    noise = SubminuteFluctuation(1, f.n_cycles, 1.0, 0.4, 10.0, np.random.default_rng(0))
    for _ in range(30):
        residual = -2.0 + noise.next_step()  # PV surplus flickering around 2 kW
        r = f.step(residual, np.array([True]), np.zeros(1))
        assert r.meter_kw[0] == pytest.approx(0.0, abs=1e-12)
        assert r.e_clipped_kwh[0] == 0.0
    # a surplus above the charge limit: the excess is exported and reported as clipped
    r = f.step(np.full(1, -8.0), np.array([True]), np.zeros(1))
    assert r.meter_kw[0] == pytest.approx(-8.0 + 5.3)
    assert r.e_clipped_kwh[0] == pytest.approx(2.7 / 60)


def test_following_cycle_by_cycle_differs_from_holding_the_minute_mean():
    # demand flickers around 5 kW, close to the 5.3-kW discharge limit
    rng = np.random.default_rng(1)
    follow, hold = fleet(soc_kwh=9.0), fleet(soc_kwh=9.0)
    noise = SubminuteFluctuation(1, follow.n_cycles, 1.0, 0.6, 10.0, rng)
    for _ in range(30):
        residual = 5.0 + noise.next_step()
        follow.step(residual, np.array([True]), np.zeros(1))
        rh = hold.step(residual, np.array([False]), np.array([-5.0]))
        assert rh.meter_kw[0] == pytest.approx(0.0, abs=1e-12)  # the mean is matched exactly
    assert follow.e_clipped_kwh[0] > 0.01  # peaks above 5.3 kW could not be followed
    assert hold.e_clipped_kwh[0] == 0.0
    assert follow.e_discharge_kwh[0] < hold.e_discharge_kwh[0]


def test_subminute_fluctuation_keeps_the_minute_mean():
    noise = SubminuteFluctuation(4, 600, 0.1, 0.5, 10.0, np.random.default_rng(2))
    x = np.vstack([noise.next_step() for _ in range(20)])
    assert np.abs(x.reshape(20, 600, 4).mean(axis=1)).max() < 1e-12
    assert 0.3 < x.std() < 0.7


def test_cycle_must_divide_the_step():
    with pytest.raises(ValueError, match="divide"):
        fleet(cycle_s=0.7)
