"""Household MPC (Couraud et al. 2022): objective terms, caps, formulations, fallback; and the forecasters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dercosim.controllers.mpc import BatteryModel, HouseholdMPC, MPCInputs, MPCProblem, solve_with_opti
from dercosim.scenarios.config import Scenario
from dercosim.scenarios.world import run_scenario
from dercosim.timeseries import loads, pv, weather
from dercosim.timeseries.forecast import LinearRegression, Noisy, Perfect, Persistence
from dercosim.timeseries.rng import DayStreams

BATTERY = BatteryModel(10.3, 5.3, 5.3, 0.9, 0.9, 0.0, 1.0)
FLAT = 0.15


def inputs(residual, soc=5.0, **kw) -> MPCInputs:
    residual = np.asarray(residual, float)
    return MPCInputs(soc_kwh=soc, residual_kw=residual, import_price=np.full(len(residual), FLAT), **kw)


# ---------------------------------------------------------------- the optimisation problem


def test_commitment_to_export_is_met_when_soc_allows():
    mpc = MPCProblem(BATTERY)
    plan = mpc.solve(inputs(np.full(30, 0.5), soc=8.0, re_kwh=1.2))
    assert plan.success
    assert plan.net_export_kwh == pytest.approx(1.2, abs=1e-3)
    # without the commitment the same household would not export at all
    assert mpc.solve(inputs(np.full(30, 0.5), soc=8.0)).net_export_kwh <= 1e-3


def test_soc_target_is_reached_with_s_equal_one():
    mpc = MPCProblem(BATTERY)
    target = 0.5  # 5.15 kWh: reachable in 30 min from 3 kWh (5.3 kW for 0.5 h at 90 % adds 2.385 kWh)
    plan = mpc.solve(inputs(np.full(30, -1.0), soc=3.0, s_mode=1.0, soc_target_frac=target))
    assert plan.success
    assert plan.soc_kwh[-1] >= target * BATTERY.capacity_kwh - 1e-3  # it imports to get there
    free = mpc.solve(inputs(np.full(30, -1.0), soc=3.0))  # S = 0: only the PV surplus goes in
    assert free.soc_kwh[-1] < target * BATTERY.capacity_kwh - 1.0


def test_export_cap_binds():
    mpc = MPCProblem(BATTERY)
    # a commitment to export 1 kWh, plenty of PV: with the cap at 0 the surplus goes into the battery instead
    free = mpc.solve(inputs(np.full(30, -3.0), soc=2.0, re_kwh=1.0))
    capped = mpc.solve(inputs(np.full(30, -3.0), soc=2.0, re_kwh=1.0, export_cap_kw=0.0))
    assert free.p_export_kw.sum() / 60 == pytest.approx(1.0, abs=1e-3)
    assert capped.p_export_kw.max() <= 1e-3
    assert capped.soc_kwh[-1] > free.soc_kwh[-1] + 0.5


def _random_calls(n: int, seed: int) -> list[MPCInputs]:
    """Calls over the whole input range: shrinking horizons, commitments of both signs, caps, value tiers, and
    every fifth one infeasible (import capped at 0 against a residual the battery cannot cover)."""
    rng = np.random.default_rng(seed)
    calls = []
    for i in range(n):
        ha = int(rng.integers(1, 31))
        residual = rng.normal(0.0, 2.0, ha) + (20.0 if i % 5 == 4 else 0.0)
        calls.append(MPCInputs(
            float(rng.uniform(-0.5, 11.0)), residual, rng.uniform(0.05, 0.4, ha),
            re_kwh=float(rng.choice([0.0, rng.normal()])), s_mode=float(rng.integers(0, 2)),
            soc_target_frac=float(rng.uniform()), export_cap_kw=float(rng.choice([np.inf, 0.0, 3.0])),
            import_cap_kw=0.0 if i % 5 == 4 else float(rng.choice([np.inf, 10.0])),
            soc_value_per_kwh=float(rng.uniform(0, 0.3)), soc_value_cap_kwh=float(rng.choice([np.inf, 2.0])),
            soc_value2_per_kwh=float(rng.uniform(0, 0.3)), soc_value2_cap_kwh=float(rng.uniform(0, 3))))
    return calls


def test_batched_arguments_are_the_single_calls_numbers_bit_for_bit():
    from dercosim.controllers.mpc import _arguments_many

    battery = BatteryModel(10.3, 5.3, 4.1, 0.9, 0.95, 0.1, 0.95)
    for formulation in ("qp", "milp"):
        mpc = MPCProblem(battery, formulation=formulation)
        calls = _random_calls(60, seed=4)
        many = _arguments_many(calls, battery, mpc.layout, mpc.h, mpc.dt_h, mpc.weights, formulation)
        one = [mpc.arguments(c) for c in calls]
        for key, value in many.items():
            assert np.array_equal(value, np.column_stack([a[key] for a in one])), (formulation, key)


def test_batch_bounds_laid_out_in_casadi_are_the_full_bounds_bit_for_bit():
    # the batch passes each call's parameters and 11 numbers; casadi lays the bounds out again by selection
    # alone. They must be the very numbers of _arguments_many: infinities, caps of 0 and the sign of -0.0
    # (-re_kwh with no commitment) included
    import casadi as ca

    from dercosim.controllers.mpc import _COMPACT, _arguments_many, _bound_expressions, _compact_arguments

    battery = BatteryModel(10.3, 5.3, 4.1, 0.9, 0.95, 0.1, 0.95)
    for formulation in ("qp", "milp"):
        for h in (30, 1):
            mpc = MPCProblem(battery, horizon_max=h, formulation=formulation)
            calls = [MPCInputs(c.soc_kwh, c.residual_kw[:h], c.import_price[:h], **{
                k: getattr(c, k) for k in ("re_kwh", "s_mode", "soc_target_frac", "export_cap_kw", "import_cap_kw",
                                           "soc_value_per_kwh", "soc_value_cap_kwh", "soc_value2_per_kwh",
                                           "soc_value2_cap_kwh")}) for c in _random_calls(60, seed=5)]
            full = _arguments_many(calls, battery, mpc.layout, h, mpc.dt_h, mpc.weights, formulation)
            compact = _compact_arguments(full, calls, mpc.layout, h)
            assert compact.shape == (2 * h + 5 + len(_COMPACT), 60)
            q = ca.MX.sym("q", compact.shape[0])
            rebuilt = ca.Function("bounds", [q], list(_bound_expressions(q, mpc.key))).map(60)(compact)
            for name, value in zip(("lbx", "ubx", "lbg", "ubg"), rebuilt):
                value = np.asarray(value)
                assert np.array_equal(value, full[name]), (formulation, h, name)
                assert np.array_equal(np.signbit(value), np.signbit(full[name])), (formulation, h, name)
            assert np.isinf(full["ubx"]).any() and (np.signbit(full["lbg"]) & (full["lbg"] == 0)).any()


@pytest.mark.parametrize("formulation", ["qp", "milp"])
def test_solving_many_at_once_gives_each_calls_own_plan(formulation):
    """``solve_many`` (one casadi map over 2 threads) against one ``solve`` after another: the same plans to the
    last bit, failures included (those are solved again alone, with the solver's own status)."""
    small = BatteryModel(5.0, 2.5, 2.5, 0.95, 0.95, 0.1, 0.9)  # a second battery model: a second batch

    def problems():  # fresh ones for each path: the qpOASES retry keeps its hot start per problem
        return [MPCProblem(BATTERY if i % 3 else small, formulation=formulation) for i in range(30)]

    calls = _random_calls(30, seed=7)
    many = MPCProblem.solve_many(problems(), calls, threads=2)
    one = [p.solve(c) for p, c in zip(problems(), calls)]
    assert sum(not p.success for p in one) == 6  # every fifth call is infeasible
    for a, b in zip(many, one):
        assert (a.success, a.status, a.follow_residual) == (b.success, b.status, b.follow_residual)
        for name in ("p_battery_kw", "p_import_kw", "p_export_kw", "soc_kwh"):
            assert np.array_equal(getattr(a, name), getattr(b, name))
        assert a.cost == b.cost or (np.isnan(a.cost) and np.isnan(b.cost))


def test_a_problem_the_size_of_the_remaining_minutes_has_the_same_optimum():
    """``qp_horizon = "remaining"``: one QP per number of minutes left instead of the interval's with the steps
    past its end fixed at 0. The same problem: the same feasibility and optimal cost (to 1e-6 relative); the
    setpoint, which the optimum pins only loosely (the regularisation is small), within 1e-2 kW."""
    full = MPCProblem(BATTERY)
    worst_cost, worst_kw = 0.0, 0.0
    for call in _random_calls(150, seed=11):
        a, b = full.solve(call), MPCProblem(BATTERY, horizon_max=len(call.residual_kw)).solve(call)
        assert a.success == b.success, (a.status, b.status)
        if a.success:
            worst_cost = max(worst_cost, abs(a.cost - b.cost) / max(1.0, abs(a.cost)))
            worst_kw = max(worst_kw, abs(a.setpoint_kw - b.setpoint_kw))
    assert worst_cost < 1e-6 and worst_kw < 1e-2


def test_controller_applies_the_export_cap_from_the_measured_voltage():
    def controller():
        c = HouseholdMPC(period_s=60, forecaster="persistence", re_kwh=1.0)
        c.bind({"battery": BATTERY.__dict__, "import_price": np.full(1440, FLAT), "start_s_of_day": 0,
                "load_kw": np.zeros(1440), "pv_kw": np.zeros(1440), "seed": 0, "household": "h"})
        c.observe(600, {"net_kw": -3.0})
        return c
    normal, high = controller(), controller()
    normal.step(600, {"net_kw": -3.0, "soc_kwh": 2.0, "vm_pu": 1.02})
    high.step(600, {"net_kw": -3.0, "soc_kwh": 2.0, "vm_pu": 1.11})
    assert normal.last_plan.p_export_kw.sum() > 0.5
    assert high.last_plan.p_export_kw.max() <= 1e-3


def test_qp_and_milp_cost_the_same_on_a_day_without_reasons_for_both_ways():
    site = weather.get_site("greensboro_tmy3")
    times = weather.time_index("2016-06-21", 1440, 60, site.tz)
    residual = (loads.household_load_kw(times, np.array([4000.0]), DayStreams(2, "load"))[:, 0]
                - pv.pv_ac_kw(site, times, np.array([6.0]), np.array([25.0]), np.array([180.0]), None)[:, 0])
    qp, milp = MPCProblem(BATTERY), MPCProblem(BATTERY, formulation="milp")
    soc, cost_qp, cost_milp = 5.0, 0.0, 0.0
    for k in range(0, 1440, 2):
        h = 30 - k % 30
        inp = inputs(residual[k:k + h], soc=soc, soc_value_per_kwh=0.95 * 0.9 * FLAT)
        a, b = qp.solve(inp), milp.solve(inp)
        assert a.success and b.success
        cost_qp += a.cost
        cost_milp += b.cost
        p = a.setpoint_kw
        soc = float(np.clip(soc + (0.9 * p if p > 0 else p / 0.9) / 30, 0, 10.3))
    assert abs(cost_qp - cost_milp) <= 0.005 * abs(cost_milp)


def test_opti_coding_agrees_with_the_built_once_problem():
    mpc = MPCProblem(BATTERY)
    rng = np.random.default_rng(4)
    for h in (30, 17, 1):
        inp = inputs(rng.normal(0.3, 1.5, h), soc=float(rng.uniform(1, 9)), soc_value_per_kwh=0.12)
        a, b = mpc.solve(inp), solve_with_opti(mpc, inp)
        assert a.success and b.success
        assert a.cost == pytest.approx(b.cost, abs=1e-5)
        assert a.setpoint_kw == pytest.approx(b.setpoint_kw, abs=5e-3)


def test_follow_residual_when_the_plan_just_follows_it():
    plan = MPCProblem(BATTERY).solve(inputs(np.full(10, -2.0), soc=5.0, soc_value_per_kwh=0.12))
    assert plan.follow_residual and plan.setpoint_kw == pytest.approx(2.0, abs=1e-3)
    full = MPCProblem(BATTERY).solve(inputs(np.full(10, -8.0), soc=2.0, soc_value_per_kwh=0.12))
    assert not full.follow_residual and full.setpoint_kw == pytest.approx(5.3, abs=1e-3)  # at the power limit


def test_infeasible_problem_fails_cleanly():
    # demand with an empty battery and no import allowed: nothing can serve it
    plan = MPCProblem(BATTERY).solve(inputs(np.full(10, 2.0), soc=0.0, import_cap_kw=0.0))
    assert not plan.success


# ---------------------------------------------------------------- in a run


N_HH = 4  # one PV-battery household on each of four buses


def scenario(controller: str, tariff: dict | None = None, pv_kwp: tuple[float, float] = (4, 7),
             duration: str = "1d", soc_init_frac: float = 0.51, **params) -> Scenario:
    return Scenario.model_validate({
        "name": f"mpc-{controller}", "seed": 5, "clock": {"start": "2016-06-21T00:00:00", "duration": duration},
        "households": {"groups": [{"buses": [6, 18, 25, 33], "per_bus": 1, "pv_share": 1.0, "pv_kwp": pv_kwp}]},
        "batteries": {"groups": [{"capacity_kwh": 10.3, "p_charge_max_kw": 5.3, "p_discharge_max_kw": 5.3,
                                  "soc_init_frac": soc_init_frac}]},
        "hems": {"controller": controller, "params": params},
        "tariff": tariff or {},
    })


TOU = {"import_per_kwh": 0.12, "export_per_kwh": 0.05,
       "tou": [{"start": "00:00:00", "end": "07:00:00", "import_per_kwh": 0.06},
               {"start": "16:00:00", "end": "20:00:00", "import_per_kwh": 0.35}]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("mpc")
    return {
        "rb_flat": run_scenario(scenario("rule_based"), out / "a", progress=False).summary,
        "mpc_flat": run_scenario(scenario("mpc", period_s=120, forecaster="perfect"), out / "b",
                                 progress=False).summary,
        # little PV: the sun does not fill the batteries, so what the controller does with the tariff matters
        "rb_tou": run_scenario(scenario("rule_based", TOU, pv_kwp=(0.2, 0.5)), out / "c", progress=False).summary,
        "mpc_tou": run_scenario(scenario("mpc", TOU, pv_kwp=(0.2, 0.5), period_s=120, forecaster="perfect"),
                                out / "d", progress=False).summary,
    }


def test_mpc_matches_rule_based_self_consumption_with_a_flat_tariff(runs):
    a, b = runs["rb_flat"]["households"], runs["mpc_flat"]["households"]
    assert b["self_consumption"] == pytest.approx(a["self_consumption"], abs=0.02)
    assert runs["mpc_flat"]["hems"]["solves"] == N_HH * 720
    assert runs["mpc_flat"]["hems"]["fallbacks"] <= 0.001 * N_HH * 720  # rare, counted, handled


def test_mpc_bill_not_above_rule_based_with_time_of_use(runs):
    a, b = runs["rb_tou"]["households"], runs["mpc_tou"]["households"]
    assert b["bill_total"] <= a["bill_total"]
    # and it is a real difference: the MPC stores cheap night energy for the 0.35 evening peak,
    # which the rule-based HEMS (never imports to charge) cannot do
    assert b["bill_total"] < 0.9 * a["bill_total"]


def test_solver_failure_falls_back_counts_and_the_run_continues(tmp_path):
    # no import allowed: once the nearly empty battery cannot cover the night's demand the problem is infeasible
    s = scenario("mpc", period_s=120, import_cap_kw=0.0, duration="3h", soc_init_frac=0.03)
    result = run_scenario(s, tmp_path / "fail", progress=False)
    hems = result.summary["hems"]
    assert hems["fallbacks"] > 0
    assert hems["solves"] == N_HH * 90  # every planned solve happened; the run went on
    df = pd.read_parquet(result.parquet)
    ctrl = df[(df.kind == "controller") & (df.fallback == 1)]
    assert len(ctrl) == hems["fallbacks"]
    per = hems["per_household"]
    assert sum(v["fallbacks"] for v in per.values()) == hems["fallbacks"]
    # on a fallback step the battery did the rule-based thing: follow the residual
    bat = df[df.kind == "battery"].set_index(["time_s", "bus"])
    first = ctrl.iloc[0]
    assert bat.loc[(first.time_s, first.bus), "follow_residual"].max() == 1.0


# ---------------------------------------------------------------- forecasters


def test_no_forecaster_sees_the_future_except_the_oracles():
    rng = np.random.default_rng(0)
    past = rng.normal(1.0, 0.3, 120)
    future_a, future_b = rng.normal(1.0, 0.3, 60), rng.normal(5.0, 0.3, 60)
    a, b = np.concatenate([past, future_a]), np.concatenate([past, future_b])
    k = 119
    for history_based in (Persistence(), LinearRegression(30)):
        np.testing.assert_array_equal(history_based.forecast(k, a[:k + 1], 30),
                                      history_based.forecast(k, b[:k + 1], 30))
    assert not np.allclose(Perfect(a).forecast(k, a[:k + 1], 30), Perfect(b).forecast(k, b[:k + 1], 30))
    np.testing.assert_array_equal(Perfect(a).forecast(k, a[:k + 1], 30), future_a[:30])


def test_linear_regression_extrapolates_a_trend_and_persistence_holds():
    ramp = 0.1 * np.arange(60)
    np.testing.assert_allclose(LinearRegression(30).forecast(59, ramp, 5), 0.1 * np.arange(60, 65), atol=1e-9)
    np.testing.assert_array_equal(Persistence().forecast(59, ramp, 3), [5.9, 5.9, 5.9])


def test_linear_regression_is_the_least_squares_line_and_keeps_its_numbers_to_the_bit():
    """The least-squares line of numpy's polyfit; and, to the bit, the closed form with ``y.mean()`` that the
    recorded runs were made with (the fast path sums without mean()'s wrapper: a changed last bit would move
    every closed-loop run)."""
    rng = np.random.default_rng(7)
    for n_history in (2, 5, 29, 30, 31, 400):
        history = rng.normal(0.5, 1.5, n_history) * 10.0 ** rng.integers(-2, 2)
        got = LinearRegression(30).forecast(n_history - 1, history, 15)
        y = history[-30:]
        n = len(y)
        x = np.arange(n, dtype=float) - (n - 1) / 2.0
        slope = float(x @ y) / (n * (n * n - 1) / 12.0)
        textbook = float(y.mean()) - slope * (n - 1) / 2.0 + slope * np.arange(n, n + 15, dtype=float)
        np.testing.assert_array_equal(got, textbook)
        line = np.polyfit(np.arange(n, dtype=float), y, 1)
        np.testing.assert_allclose(got, np.polyval(line, np.arange(n, n + 15)), rtol=1e-9, atol=1e-9)


def test_noisy_forecast_has_the_set_accuracy_and_is_seeded():
    truth = np.full(100_000, 2.0)
    noisy = Noisy(truth, accuracy=0.25, grid_min=120, rng=np.random.default_rng(1))
    rel = noisy.forecast(0, truth[:1], 99_000) / 2.0 - 1.0
    grid_points = rel[119::120]
    assert np.std(grid_points) == pytest.approx(0.25, rel=0.1)
    again = Noisy(truth, 0.25, 120, np.random.default_rng(1)).forecast(0, truth[:1], 100)
    np.testing.assert_array_equal(noisy.forecast(0, truth[:1], 100), again)


def test_the_naive_opti_path_refuses_the_milp_at_construction():
    with pytest.raises(ValueError, match="opti_rebuilt"):
        HouseholdMPC(formulation="milp", qp_solver="opti_rebuilt")
    assert HouseholdMPC(qp_solver="opti_rebuilt").qp_solver == "opti_rebuilt"


def test_the_two_highest_price_levels_are_np_uniques():
    # auto_soc_value's tiers read the two highest distinct prices ahead; found without sorting a day of them
    from dercosim.controllers.mpc import _two_highest

    rng = np.random.default_rng(3)
    cases = [np.array([]), np.array([0.2]), np.full(7, 0.15), np.array([0.1, np.nan, 0.3])]
    cases += [rng.choice([0.05, 0.1, 0.1, 0.3, 0.35], size=int(rng.integers(1, 1441))) for _ in range(50)]
    cases += [rng.uniform(-0.1, 0.5, 1440)]
    for prices in cases:
        expected = np.unique(prices)[::-1][:2]
        np.testing.assert_array_equal(_two_highest(prices), expected)


# ---------------------------------------------------------------- Couraud et al. 2022, "Real-Time Control of Distributed Batteries with Blockchain-Enabled Market Export Commitments": eq. (5) as resolved here

CENTRAL = BatteryModel(721.0, 371.0, 371.0, 0.9, 0.9, 0.0, 1.0)  #: the fleet's 70 batteries as one (s2, s3)


@pytest.mark.parametrize("battery", [BATTERY, CENTRAL], ids=["home 5.3 kW", "central 371 kW"])
def test_a_small_and_a_large_battery_given_the_same_relative_commitment_both_plan_to_deliver_it(battery):
    """Half the battery's power for the 30-min interval, from a battery with no load behind it. The
    regularisation now scales with the battery: it cost 0.74 per kWh at 371 kW against a 0.16 RE weight, and the
    central battery delivered about a third of it (s2/s3 missed 18-22 % of their commitments)."""
    re_kwh = 0.5 * battery.p_discharge_max_kw * 0.5
    plan = MPCProblem(battery).solve(MPCInputs(
        soc_kwh=0.51 * battery.capacity_kwh, residual_kw=np.zeros(30), import_price=np.full(30, FLAT),
        re_kwh=re_kwh))
    assert plan.success
    assert plan.net_export_kwh == pytest.approx(re_kwh, rel=1e-3)


def test_the_regularisation_costs_the_same_per_kwh_at_full_power_on_any_battery():
    from dercosim.controllers.mpc import Weights

    w = Weights()
    marginal = [2 * w.reg_per_kw2h(b) * b.p_discharge_max_kw for b in (BATTERY, CENTRAL)]
    assert marginal[0] == pytest.approx(marginal[1]) == pytest.approx(w.regularisation_per_kwh)
    assert w.reg_per_kw2h(BATTERY) == pytest.approx(1e-3)  # the home battery's value before the change


def test_negative_re_is_absorbed_by_default_and_can_be_ignored():
    """The fleet is ahead of its commitment (RE < 0): by default the home imports its share (the paper's text and
    the authors' code); 'ignore' reads ε = −1 literally (no RE term, the export penalty doubled)."""
    mpc = MPCProblem(BATTERY)
    absorb = mpc.solve(inputs(np.full(30, -2.0), soc=5.0, re_kwh=-0.8))
    ignore = mpc.solve(inputs(np.full(30, -2.0), soc=5.0, re_kwh=-0.8, absorb_negative_re=False))
    assert absorb.net_export_kwh == pytest.approx(-0.8, abs=1e-3)  # it imports 0.8 kWh net
    assert ignore.net_export_kwh >= -1e-3  # no import to cancel the fleet's extra export
    opti = solve_with_opti(mpc, inputs(np.full(30, -2.0), soc=5.0, re_kwh=-0.8, absorb_negative_re=False))
    assert opti.net_export_kwh == pytest.approx(ignore.net_export_kwh, abs=1e-2)


def _bound_mpc(load_kw: np.ndarray, pv_kw: np.ndarray, battery: BatteryModel = BATTERY) -> HouseholdMPC:
    ctrl = HouseholdMPC(forecaster="persistence")
    ctrl.bind({"battery": battery.__dict__, "import_price": np.full(2880, 0.2), "start_s_of_day": 0,
               "load_kw": load_kw, "pv_kw": pv_kw, "seed": 1, "household": "h"})
    return ctrl


def test_stored_energy_is_worth_nothing_behind_a_battery_with_no_load():
    ctrl = _bound_mpc(np.zeros(2880), np.full(2880, 50.0), CENTRAL)
    for k in range(60):
        ctrl.observe(60 * k, {"net_kw": -50.0})
    assert ctrl.auto_soc_value(60) == ((0.0, 0.0), (0.0, 0.0))


def test_without_an_outlook_stored_energy_is_valued_for_a_finite_amount():
    """Day 1 has no outlook (no yesterday): the amount valued is the deficit expected until the outlook begins at
    the rate observed so far, not every kWh (which made the central battery hoard its energy)."""
    ctrl = _bound_mpc(np.full(2880, 0.6), np.zeros(2880))
    for k in range(600):  # 10 h of a 0.6-kW deficit
        ctrl.observe(60 * k, {"net_kw": 0.6})
    (value, cap), _ = ctrl.auto_soc_value(600)
    assert value == pytest.approx(0.95 * 0.9 * 0.2)
    assert cap == pytest.approx(0.6 * (1440 - 600) / 60 / 0.9)  # 14 h to go at 0.6 kW, stored at 90 %
    for k in range(600, 1500):
        ctrl.observe(60 * k, {"net_kw": 0.6})
    (_, cap), _ = ctrl.auto_soc_value(1500)  # day 2: yesterday's minutes are the outlook
    assert np.isfinite(cap)


def test_a_long_run_holds_two_days_of_history_and_plans_as_with_all_of_it():
    """Past four days the MPC keeps only its last two days of observed residual (a month of 2,000 homes held
    0.7 GB of it); the outlook (yesterday's steps), the SoC value and the regression forecast read the same
    numbers as with every step held."""
    days = 7
    rng = np.random.default_rng(3)
    residual = rng.normal(0.2, 1.0, days * 1440)
    prices = np.tile(np.where(np.arange(1440) // 60 % 24 >= 16, 0.3, 0.15), days + 1)
    kept, every = (HouseholdMPC(forecaster="linear_regression") for _ in range(2))
    for ctrl in (kept, every):
        ctrl.bind({"battery": BATTERY.__dict__, "import_price": prices, "start_s_of_day": 0,
                   "load_kw": np.ones(len(prices)), "pv_kw": np.zeros(len(prices)), "seed": 1, "household": "h"})
    every._history = np.empty(len(residual))  # never full: every step held
    for k, r in enumerate(residual):
        for ctrl in (kept, every):
            ctrl.observe(60 * k, {"net_kw": float(r)})
        if k % 97 == 0 or k == len(residual) - 1:
            obs = {"net_kw": float(r), "soc_kwh": 5.0, "vm_pu": 1.0}
            a, b = kept._inputs(60 * k, obs)[0], every._inputs(60 * k, obs)[0]
            assert np.array_equal(a.residual_kw, b.residual_kw)
            assert (a.soc_value_per_kwh, a.soc_value_cap_kwh, a.soc_value2_per_kwh, a.soc_value2_cap_kwh) == (
                b.soc_value_per_kwh, b.soc_value_cap_kwh, b.soc_value2_per_kwh, b.soc_value2_cap_kwh)
            if k >= 1440:
                assert np.array_equal(kept.outlook(k, 1440), every.outlook(k, 1440))
    assert kept.history_start > 0 and len(kept.history) <= 4 * 1440
    assert np.array_equal(kept.history, residual[kept.history_start:])


def test_households_alike_get_their_inputs_as_arrays_with_the_same_numbers():
    """``step_many`` computes the regression forecast and the SoC-value tiers of households alike as arrays over
    them: the same numbers as one household at a time (within 1e-12 relative: sums may round differently), on
    the first day (no outlook: the rate seen so far) and later (yesterday's steps), for a household with no
    load (its stored energy worth 0) and one whose surplus starts at once (no tier)."""
    rng = np.random.default_rng(5)
    n_hh, days = 12, 2
    prices = np.tile(np.where(np.arange(1440) // 60 >= 16, 0.3, 0.15), days + 1)
    residual = rng.normal(0.6, 0.4, (days * 1440, n_hh))  # now and then below the surplus threshold
    residual[:, 1] = -2.0  # surplus all day: tiers empty after the first day
    ctrls = [HouseholdMPC(forecaster="linear_regression") for _ in range(n_hh)]
    for j, ctrl in enumerate(ctrls):
        load = np.zeros(len(prices)) if j == 2 else np.ones(len(prices))
        ctrl.bind({"battery": (CENTRAL if j == 2 else BATTERY).__dict__, "import_price": prices,
                   "start_s_of_day": 0, "load_kw": load, "pv_kw": np.zeros(len(prices)), "seed": 1,
                   "household": f"h{j}"})
    assert len({c._alike(0) for c in ctrls}) == 1
    checked, two_tiers = 0, 0
    for k in range(days * 1440):
        for j, ctrl in enumerate(ctrls):
            ctrl.observe(60 * k, {"net_kw": float(residual[k, j])})
        if k % 120 or k == 0:
            continue
        observed = [{"net_kw": float(residual[k, j]), "soc_kwh": 5.0, "vm_pu": 1.0} for j in range(n_hh)]
        together = HouseholdMPC._inputs_alike(ctrls, observed, 60 * k)
        for ctrl, obs, (inp, res) in zip(ctrls, observed, together):
            alone, alone_res = ctrl._inputs(60 * k, obs)
            np.testing.assert_allclose(res, alone_res, rtol=1e-12, atol=1e-12)
            np.testing.assert_array_equal(inp.import_price, alone.import_price)
            for name in ("soc_value_per_kwh", "soc_value_cap_kwh", "soc_value2_per_kwh", "soc_value2_cap_kwh"):
                assert getattr(inp, name) == pytest.approx(getattr(alone, name), rel=1e-12, abs=1e-12), (k, name)
            checked += 1
            two_tiers += inp.soc_value2_cap_kwh > 0
    assert checked == n_hh * (days * 12 - 1) and two_tiers > 20
    assert together[2][0].soc_value_per_kwh == 0.0 and together[1][0].soc_value_cap_kwh == 0.0


def test_step_many_answers_each_household_as_step_would():
    """The batch form answers every household as its own ``step`` (within 1e-9 kW: the inputs as arrays may
    round differently in the last bit), in order; a household whose observation lacks a key gets its own
    exception and the others their setpoints."""
    prices = np.full(2 * 1440, 0.2)
    rng = np.random.default_rng(11)
    pairs = []  # per household: the one stepped in the batch and its twin stepped alone
    for j in range(6):
        residual = rng.normal(0.4, 0.8, 1491)
        ctrls = [HouseholdMPC() for _ in range(2)]
        for ctrl in ctrls:
            ctrl.bind({"battery": BATTERY.__dict__, "import_price": prices, "start_s_of_day": 0,
                       "load_kw": np.ones(len(prices)), "pv_kw": np.zeros(len(prices)), "seed": 1,
                       "household": f"h{j}"})
            for k, r in enumerate(residual):
                ctrl.observe(60 * k, {"net_kw": float(r)})
        pairs.append(ctrls)
    t = 60 * 1490  # 10 steps left in the interval, the outlook from yesterday
    observed = [{"net_kw": 0.5 * j, "soc_kwh": 2.0 + j, "vm_pu": 1.0} for j in range(6)]
    assert len({p[0]._alike(t) for p in pairs}) == 1  # one group: the inputs as arrays
    answers = HouseholdMPC.step_many([(p[0], obs) for p, obs in zip(pairs, observed)], t)
    alone = [p[1].step(t, obs) for p, obs in zip(pairs, observed)]
    for together, single in zip(answers, alone):
        assert together["p_set_kw"] == pytest.approx(single["p_set_kw"], abs=1e-9)
        assert together["forecast_h5_kw"] == pytest.approx(single["forecast_h5_kw"], rel=1e-12)
    assert len({round(a["p_set_kw"], 6) for a in alone}) > 1  # households that differ
    observed[3] = {"net_kw": 0.1, "vm_pu": 1.0}  # no soc_kwh
    answers = HouseholdMPC.step_many([(p[0], obs) for p, obs in zip(pairs, observed)], t)
    assert isinstance(answers[3], KeyError)
    assert all(answers[j]["p_set_kw"] == pytest.approx(alone[j]["p_set_kw"], abs=1e-9) for j in (0, 1, 2, 4, 5))


def test_plans_of_a_batch_are_those_made_one_at_a_time():
    """The interior point's solutions become plans as arrays over the batch: the same setpoints, imports, SoC,
    cost and "follows the residual" as one plan at a time, to the bit."""
    from dercosim.controllers import ipm

    problem = MPCProblem(BATTERY)
    rng = np.random.default_rng(2)
    batch = [inputs(rng.normal(0.0, 2.0, 17), soc=float(rng.uniform(0, 10.3)), soc_value_per_kwh=0.5)
             for _ in range(9)] + [inputs(np.full(17, 0.3), soc=5.0)]  # one that merely follows the residual
    res = ipm.solve_compact(problem.compact_columns(batch), problem.battery, problem.h, problem.dt_h,
                            problem.weights)
    assert (res.status == ipm.SOLVED).all()
    together = problem._plans(res.x, res.objective, batch, "solved", 0.0)
    for plan, x, f, inp in zip(together, res.x, res.objective, batch):
        alone = problem._plan(x, float(f), inp, "solved", 0.0)
        for name in ("p_battery_kw", "p_import_kw", "p_export_kw", "soc_kwh"):
            np.testing.assert_array_equal(getattr(plan, name), getattr(alone, name))
        assert (plan.cost, plan.follow_residual, plan.dt_h) == (alone.cost, alone.follow_residual, alone.dt_h)
    assert together[-1].follow_residual and not all(p.follow_residual for p in together)
