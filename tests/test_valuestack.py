"""Community-battery value stacking (Jiang & Wang 2024) on the shipped TOU scenario's first day.

The case is the fleet a run of ``value_stacking_tou`` draws (same seed), six
communities at buses 7, 14, 16, 17, 24, 30; the reference is the centralised
optimum of the same relaxed problem.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dercosim.planning.admm import Latency
from dercosim.planning.admm.qp import SparseQP
from dercosim.planning.valuestack import (CentralQP, GridOperatorQP, InfeasibleGrid, Streams, complementarity_violations,
                                    network_rows, plan_voltages_pu, solve_value_stacking, unpack)
from dercosim import cli
from dercosim.studies import value_stacking as studies
from dercosim.scenarios.planner_case import admm_settings, case_from_scenario
from dercosim.scenarios.load import load_scenario
ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "value_stacking_tou.toml"
LATENCY = Latency("lognormal", 0.2, 1.0)  # the scenario's: median 1.2 s per message


@pytest.fixture(scope="module")
def scenario():
    return load_scenario(SCENARIO)


@pytest.fixture(scope="module")
def case(scenario):
    return case_from_scenario(scenario)


@pytest.fixture(scope="module")
def day(case):
    return case.problem(0, 24)  # communities, market, feeder


@pytest.fixture(scope="module")
def central(day):
    return CentralQP(*day).solve()


def gap_pct(res, central) -> float:
    return 100.0 * (res.relaxed_objective - central.objective) / abs(central.objective)


def solve(day, scenario, streams=Streams(), fix_rounds=0, **settings):
    st = admm_settings(scenario, **settings)
    return solve_value_stacking(*day, st, streams=streams, central=False, fix_rounds=fix_rounds)


SYNC = dict(mode="sync", latency=Latency(), adaptive=False)
ASYNC = dict(mode="async", latency=LATENCY, partial_barrier=4, max_delay=5, adaptive=False)


# ---------------------------------------------------------------- the centralised benchmark is physical


def test_case_is_the_papers(day):
    comms, market, feeder = day
    assert [c.bus for c in comms] == [7, 14, 16, 17, 24, 30]
    e0 = np.array([c.soc_init_kwh for c in comms])
    assert np.all((e0 >= 230) & (e0 <= 270)) and len(set(e0)) == 6  # seeded truncated normal
    assert all(c.soc_max_kwh == 500 and c.p_charge_max_kw == 100 for c in comms)
    assert comms[0].horizon == 24 and len(market.b2g_per_kwh) == 24


def test_central_solution_obeys_battery_balance_limits_and_market(day, central):
    comms, market, feeder = day
    etb, ets = np.zeros(24), np.zeros(24)
    for c, u in zip(comms, central.u):
        v = unpack(c, u)
        e_prev = np.concatenate([[c.soc_init_kwh], v["soc_kwh"][:-1]])
        np.testing.assert_allclose(v["soc_kwh"], e_prev + c.eta_charge * v["p_charge_kw"] - v["p_discharge_kw"] / c.eta_discharge, atol=1e-5)
        assert v["soc_kwh"][-1] >= c.soc_init_kwh - 1e-5  # terminal energy ≥ initial (the paper leaves the end of day open; without it the optimiser drains the battery)
        assert v["soc_kwh"].min() >= c.soc_min_kwh - 1e-5 and v["soc_kwh"].max() <= c.soc_max_kwh + 1e-5
        # (11): the building's load is met; (18): discharge is split into B2B, B2G and market sale
        served = v["p_grid_kw"] + v["p_local_kw"] + v["p_etb_kw"] + v["p_b2b_kw"] - v["p_charge_kw"] - v["p_ac_kw"]
        np.testing.assert_allclose(served, c.load_kw, atol=1e-5)
        np.testing.assert_allclose(v["p_discharge_kw"], v["p_b2b_kw"] + v["p_b2g_kw"] + v["p_ets_kw"], atol=1e-5)
        assert np.all(v["t_in_c"] >= c.t_min_c - 1e-6) and np.all(v["t_in_c"] <= c.t_max_c + 1e-6)
        etb += v["p_etb_kw"]
        ets += v["p_ets_kw"]
    np.testing.assert_allclose(etb, ets, atol=1e-4)  # (23) market balance
    v = plan_voltages_pu(feeder, comms, central.x)
    assert v.min() >= feeder.v_min_pu - 1e-6 and v.max() <= feeder.v_max_pu + 1e-6
    # the limit binds: the communities' evening peak is what the batteries must shave
    assert v.min() < feeder.v_min_pu + 0.01


def test_infeasible_limits_name_where_the_base_load_breaks_them(day):
    comms, market, feeder = day
    tight = replace(feeder, v_min_pu=0.95)
    with pytest.raises(InfeasibleGrid, match=r"LinDistFlow gives min 0\.91\d+ pu at bus 18"):
        CentralQP(comms, market, tight).solve()
    # the operator alone can still meet them (by asking the communities to export): its projection is feasible
    op = GridOperatorQP(tight, [c.bus for c in comms], 24)
    z = np.concatenate(op.solve([np.zeros(120)] * 6, [np.zeros(120)] * 6, 1.0))
    a, lo, hi, _ = network_rows(tight, [c.bus - 1 for c in comms], 24)
    assert np.all(a @ z >= lo - 1e-6) and np.linalg.norm(z) > 1.0


def test_hourly_operator_is_the_monolithic_projection(day, central):
    """The 24 hourly QPs give the same z as one projection onto all network rows."""
    comms, market, feeder = day
    rng = np.random.default_rng(3)
    x = [xi * 1.6 + rng.normal(0, 5, xi.shape) for xi in central.x]  # heavier imports: voltage rows bind
    lam = [rng.normal(0, 0.05, xi.shape) for xi in central.x]
    rho = 0.05
    op = GridOperatorQP(feeder, [c.bus for c in comms], 24)
    z = np.concatenate(op.solve(x, lam, rho))
    v = np.concatenate(x) + np.concatenate(lam) / rho
    a, lo, hi, _ = network_rows(feeder, [c.bus - 1 for c in comms], 24)
    scale = 1.0 / np.maximum(np.sqrt(np.asarray(a.multiply(a).sum(axis=1))).ravel(), 1e-12)
    a_s = a.multiply(scale[:, None]).tocsc()
    n = len(v)
    import scipy.sparse as sp

    mono = SparseQP(sp.identity(n, format="csc"), a_s, "highs")
    ref = mono.solve(mono.hessian(sp.identity(n)), -v, lo * scale, hi * scale, np.zeros(n), np.full(n, np.inf))
    assert ref.success
    assert np.linalg.norm(z - v) > 10.0  # the projection moved the point: the test is not trivial
    np.testing.assert_allclose(z, ref.u, atol=1e-3)
    # and z is feasible
    az = a @ z
    assert np.all(az >= lo - 1e-6) and np.all(az <= hi + 1e-6)


# ---------------------------------------------------------------- ADMM against the optimum


def test_sync_reaches_eps_001_within_half_a_percent_and_eps_0001_closer(day, scenario, central):
    coarse = solve(day, scenario, eps_abs=0.01, **SYNC)
    fine = solve(day, scenario, eps_abs=0.001, max_iter=2000, **SYNC)
    assert coarse.converged and fine.converged
    assert abs(gap_pct(coarse, central)) <= 0.5  # the paper: 0.33 %
    assert abs(gap_pct(fine, central)) < abs(gap_pct(coarse, central))
    dist = [np.linalg.norm(np.concatenate(r.solution.x) - np.concatenate(central.x)) for r in (coarse, fine)]
    assert dist[1] < dist[0]
    assert fine.iterations > coarse.iterations
    h = coarse.runs[0].history
    assert {"r_primal", "r_dual", "eps_pri", "eps_dual", "rho", "cost", "t_s"} <= set(h.columns)
    assert h.r_primal.iloc[-1] <= h.eps_pri.iloc[-1] and h.r_dual.iloc[-1] <= h.eps_dual.iloc[-1]


def test_boyd_dual_residual_stops_early_at_small_rho(day, scenario, central):
    """Why the default stopping test is ‖z − z_prev‖: ρ‖z − z_prev‖ accepts z still moving by ε/ρ."""
    streams = Streams(trading=False)
    ref = CentralQP(*day, streams).solve()
    boyd = solve(day, scenario, streams=streams, dual_residual="boyd", **SYNC)
    change = solve(day, scenario, streams=streams, **SYNC)
    assert boyd.converged and change.converged
    assert gap_pct(boyd, ref) > 1.0 and boyd.iterations < 10
    assert abs(gap_pct(change, ref)) < 0.01


def test_async_with_latency_converges_where_sync_naive_does_not(day, scenario, central):
    asy = solve(day, scenario, **ASYNC)
    assert asy.converged and abs(gap_pct(asy, central)) <= 0.5
    assert asy.time_to_decision_s > 0
    assert (asy.runs[0].history.fresh < 6).any()  # it really proceeded without everyone
    sync = solve(day, scenario, mode="sync", latency=LATENCY, adaptive=False)
    assert sync.converged
    # waiting for the slowest of six every iteration costs more simulated time per iteration
    assert sync.time_to_decision_s / sync.iterations > asy.time_to_decision_s / asy.iterations
    naive = solve(day, scenario, mode="sync_naive", latency=LATENCY, adaptive=False, max_iter=500)
    assert not naive.converged and naive.iterations == 500
    assert naive.runs[0].history.r_primal.tail(100).min() > 1.0  # not close either


def test_adaptive_rho_beats_a_badly_chosen_fixed_rho(day, scenario, central):
    fixed = solve(day, scenario, rho=0.3, max_iter=300, **SYNC)
    adaptive = solve(day, scenario, rho=0.3, max_iter=300, **{**SYNC, "adaptive": True})
    assert adaptive.converged
    assert adaptive.iterations < fixed.iterations
    assert abs(gap_pct(adaptive, central)) < 0.05
    assert adaptive.runs[0].history.rho.iloc[-1] < 0.3  # it found a smaller penalty


def test_async_survives_30_percent_message_loss(day, scenario, central):
    lossy = solve(day, scenario, loss_prob=0.3, **ASYNC)
    assert lossy.converged and abs(gap_pct(lossy, central)) <= 0.5
    run = lossy.runs[0]
    assert 0.2 < run.messages_lost / run.messages_sent < 0.4


def test_same_seed_same_iterations_and_cost(day, scenario):
    a = solve(day, scenario, **ASYNC)
    b = solve(day, scenario, **ASYNC)
    c = solve(day, scenario, **{**ASYNC, "seed": scenario.seed + 1})
    assert (a.iterations, a.time_to_decision_s, a.relaxed_cost) == (b.iterations, b.time_to_decision_s, b.relaxed_cost)
    pd.testing.assert_frame_equal(a.runs[0].history.drop(columns="cost"), b.runs[0].history.drop(columns="cost"))
    assert c.time_to_decision_s != a.time_to_decision_s  # the latencies come from the seed


# ---------------------------------------------------------------- binaries and value streams


def test_fix_and_resolve_removes_buy_and_sell_in_the_same_hour(day, scenario):
    """Without B2B the relaxation sells battery energy and buys it back: fixing must remove that."""
    comms, market, feeder = day
    cq = CentralQP(comms, market, feeder, Streams(b2b=False))
    relaxed = cq.solve()
    assert sum(complementarity_violations(c, u) for c, u in zip(comms, relaxed.u)) > 0
    fixed, fixings, left = cq.solve_fix_and_resolve()
    assert left == 0 and sum(f.count for f in fixings) > 0
    assert fixed.total_cost > relaxed.total_cost  # the relaxation is a lower bound
    res = solve_value_stacking(comms, market, feeder, admm_settings(scenario, **SYNC), streams=Streams(b2b=False))
    assert res.converged and res.violations > 0 and res.violations_left == 0
    assert res.solution.total_cost == pytest.approx(res.central_fixed_cost, rel=1e-3)


def test_milp_is_the_integer_optimum_that_fix_and_resolve_approximates(day):
    """Two communities without B2B: the relaxation cheats, fix-and-resolve and the MILP do not."""
    comms, market, feeder = day
    cq = CentralQP(comms[:2], market, feeder, Streams(b2b=False))
    relaxed = cq.solve()
    fixed, _, left = cq.solve_fix_and_resolve()
    mi, status = cq.solve_mixed_integer()
    assert status == "Optimal" and left == 0
    assert sum(complementarity_violations(c, u) for c, u in zip(comms[:2], mi.u)) == 0
    # the MILP's degradation is cut at 8 tangents: at most 1e-4·(100/14)² per hour and direction too low
    slack = 2 * 2 * 24 * market.degradation_per_kw2h * (100.0 / 14) ** 2
    assert mi.total_cost <= fixed.total_cost + slack  # fix-and-resolve is one integer-feasible point
    assert mi.total_cost > relaxed.total_cost + 10.0  # and the relaxation is far below both
    for c, u in zip(comms[:2], mi.u):
        v = unpack(c, u)
        e_prev = np.concatenate([[c.soc_init_kwh], v["soc_kwh"][:-1]])
        np.testing.assert_allclose(v["soc_kwh"], e_prev + c.eta_charge * v["p_charge_kw"] - v["p_discharge_kw"] / c.eta_discharge, atol=1e-4)
    volts = plan_voltages_pu(feeder, comms[:2], mi.x)
    assert volts.min() >= feeder.v_min_pu - 1e-6


def test_mixed_integer_mode_rounds_in_every_subproblem(day, scenario):
    comms, market, feeder = day
    st = admm_settings(scenario, max_iter=200, **SYNC)  # the rounded phase oscillates until the cap
    res = solve_value_stacking(comms[:2], market, feeder, st, streams=Streams(b2b=False), binaries="mixed_integer")
    assert res.violations_left == 0 and len(res.runs) >= 2
    assert res.converged  # the polish run on the rounded directions is convex
    mi = res.central_mixed_integer_cost
    slack = 2 * 2 * 24 * market.degradation_per_kw2h * (100.0 / 14) ** 2
    assert res.solution.total_cost >= mi - slack  # integer-feasible, so not below the integer optimum
    assert res.solution.total_cost <= 1.10 * mi  # a heuristic: measured 4.3 % above here


def test_removing_a_stream_never_helps_and_b2b_matters_most(scenario, case):
    st = studies.value_streams(scenario, admm=False, case=case)
    t = st.table.set_index("variant")
    for v in ("no_b2b", "no_b2g", "no_trading"):
        assert t.loc[v, "central_relaxed_cost"] >= t.loc["full", "central_relaxed_cost"] - 0.01
        assert t.loc[v, "central_cost"] >= t.loc["full", "central_cost"] - 0.01
    contrib = t["central_contribution_pct"]
    assert contrib["no_b2b"] > contrib["no_b2g"] > contrib["no_trading"] >= 0  # Jiang & Wang 2024: B2B contributes most
    # no battery at all breaks v_min in the evening: costed without voltage limits, and flagged
    assert t.loc["no_battery", "network_limits"].startswith("voltage limits dropped")
    assert t.loc["no_battery", "central_min_v_pu"] < 0.9
    assert t.loc["no_battery", "central_cost"] > t.loc["no_b2b", "central_cost"]


def test_study_modes_command_writes_table_history_and_figure(tmp_path):
    assert cli.main(["study", "modes", str(SCENARIO), "--max-iter", "40", "--out", str(tmp_path), "--quiet"]) == 0
    (folder,) = tmp_path.iterdir()
    table = pd.read_csv(folder / "admm_modes.csv")
    assert list(table["mode"]) == list(studies.MODES)
    assert {"iterations", "time_to_decision_s", "wall_s", "cost", "gap_pct"} <= set(table.columns)
    assert not table.set_index("mode").loc["sync_naive", "converged"]
    assert (table.set_index("mode").loc["sync", "time_to_decision_s"]) == 0.0  # no latency
    hist = pd.read_csv(folder / "admm_history.csv")
    assert set(hist["mode"]) == set(studies.MODES)
    assert (folder / "admm_convergence.png").stat().st_size > 10_000
    info = json.loads((folder / "admm_modes.json").read_text())
    assert info["currency"] == "AUD" and info["central_cost"] > 0


def test_study_rejects_a_scenario_without_planner(default_scenario_path, capsys):
    assert cli.main(["study", "modes", str(default_scenario_path)]) != 0
    assert "no [planner] table" in capsys.readouterr().err


# ---------------------------------------------------------------- the plan meets the AC feeder


def test_planner_run_reports_plan_gap_and_plan_vs_ac(tmp_path):
    assert cli.main(["run", str(SCENARIO), "--until", "3h", "--out", str(tmp_path), "--quiet"]) == 0
    (folder,) = tmp_path.iterdir()
    summary = json.loads((folder / "summary.json").read_text())
    p = summary["planner"]
    assert p["plans"] == 1 and p["fallbacks"] == 0 and p["not_converged"] == 0
    assert abs(p["gap_to_centralised_pct"][0]) < 0.5
    vs = p["voltage_plan_vs_ac"]
    assert set(vs["per_bus"]) == {"7", "14", "16", "17", "24", "30"}
    assert 0 < vs["max_abs_diff_pu"] < 0.005  # LinDistFlow within a few thousandths of AC
    assert (folder / "plan_vs_ac.png").stat().st_size > 10_000
    # dercosim validate holds the same belief: the plan's voltages against AC, and the schedule against the PMS
    from dercosim.analysis.validate import validate

    planner = validate(folder, engine_minutes=0)["beliefs"]["planner"]
    assert planner["max_abs_diff_pu"] == pytest.approx(vs["max_abs_diff_pu"], abs=1e-12)
    assert planner["battery_schedule_vs_executed_max_kw"] < 1e-6  # the PMS held the hourly setpoints


def test_hourly_replanning_plans_every_hour_from_the_measured_state(tmp_path):
    text = SCENARIO.read_text(encoding="utf-8").replace('replan = "daily"', 'replan = "hourly"')
    assert 'replan = "hourly"' in text
    path = tmp_path / "hourly.toml"
    path.write_text(text, encoding="utf-8")
    assert cli.main(["run", str(path), "--until", "3h", "--out", str(tmp_path / "runs"), "--quiet"]) == 0
    (folder,) = (tmp_path / "runs").iterdir()
    p = json.loads((folder / "summary.json").read_text())["planner"]
    assert p["replan"] == "hourly" and p["plans"] == 3 and p["fallbacks"] == 0
    assert len(p["admm_iterations"]) == 3 and all(abs(g) < 0.5 for g in p["gap_to_centralised_pct"])


def test_a_voltage_margin_keeps_the_ac_feeder_within_limits(tmp_path):
    """The hourly LinDistFlow plan overestimates AC voltage; planning to v_min + 0.015 pu absorbs that."""
    text = SCENARIO.read_text(encoding="utf-8").replace('binaries = "relaxed"', 'binaries = "relaxed"\nv_margin_pu = 0.015')
    path = tmp_path / "margin.toml"
    path.write_text(text, encoding="utf-8")
    scenario = load_scenario(path)
    assert scenario.planner.v_margin_pu == 0.015
    comms, market, feeder = case_from_scenario(scenario).problem(0, 24)
    assert feeder.v_min_pu == pytest.approx(0.915) and feeder.v_max_pu == pytest.approx(1.035)
    assert cli.main(["run", str(path), "--out", str(tmp_path / "runs"), "--quiet"]) == 0
    (folder,) = (tmp_path / "runs").iterdir()
    summary = json.loads((folder / "summary.json").read_text())
    per_bus = summary["planner"]["voltage_plan_vs_ac"]["per_bus"]
    assert min(b["plan_min_pu"] for b in per_bus.values()) >= 0.915 - 1e-3  # hourly means of the plan
    assert summary["voltage"]["minutes_below_min"] == 0  # without the margin: 27 minutes below 0.90 pu
