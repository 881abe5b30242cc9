"""Day-ahead aggregator MILP, price-taker clearing and settlement (Couraud et al. 2022, phases 1-2)."""

from __future__ import annotations

import numpy as np
import pytest

from dercosim.markets.aggregator import DayAheadMILP, VirtualBattery, bids_kwh, mode_s
from dercosim.markets.clearing import clear, clearing_price, settle, vpw_covered_kwh

LOSSLESS = VirtualBattery(capacity_kwh=10.0, p_max_kw=4.0, eta_charge=1.0, eta_discharge=1.0)


def test_the_virtual_battery_sums_capacity_and_power_and_weights_efficiency_by_capacity():
    vb = VirtualBattery.of_fleet(capacity_kwh=[10.0, 30.0], p_charge_max_kw=[5.0, 5.0], p_discharge_max_kw=[4.0, 6.0],
                                 eta_charge=[0.9, 0.8], eta_discharge=[1.0, 0.6])
    assert vb.capacity_kwh == 40.0 and vb.p_max_kw == 10.0
    assert vb.eta_charge == pytest.approx(0.25 * 0.9 + 0.75 * 0.8)
    assert vb.eta_discharge == pytest.approx(0.25 * 1.0 + 0.75 * 0.6)
    with pytest.raises(ValueError, match="no battery capacity"):
        VirtualBattery.of_fleet([0.0], [1.0], [1.0], [0.9], [0.9])


def test_a_four_interval_day_gives_the_optimum_by_hand():
    # surplus 3 kWh in each of the first two half-hours, deficit 3 kWh in each of the last two;
    # the battery moves 2 kWh per half-hour (4 kW): store 2 + 2, export 1 + 1, import 1 + 1.
    milp = DayAheadMILP(LOSSLESS, n=4, dt_h=0.5)
    plan = milp.solve(demand_kwh=[0, 0, 3, 3], production_kwh=[3, 3, 0, 0], import_price=[0.2] * 4,
                      export_price=[0.05] * 4, soc_init_kwh=5.0)
    assert plan.success
    np.testing.assert_allclose(plan.charge_kwh, [2, 2, 0, 0], atol=1e-9)
    np.testing.assert_allclose(plan.discharge_kwh, [0, 0, 2, 2], atol=1e-9)
    np.testing.assert_allclose(plan.export_kwh, [1, 1, 0, 0], atol=1e-9)
    np.testing.assert_allclose(plan.import_kwh, [0, 0, 1, 1], atol=1e-9)
    np.testing.assert_allclose(plan.soc_kwh, [7, 9, 7, 5], atol=1e-9)
    assert plan.cost == pytest.approx(2 * 0.2 - 2 * 0.05)
    # following the residual is all it does: S = 0 every interval
    np.testing.assert_array_equal(plan.mode_s, [0, 0, 0, 0])


def test_with_no_battery_it_exports_exactly_the_forecast_surplus():
    none = VirtualBattery(capacity_kwh=0.0, p_max_kw=0.0, eta_charge=0.9, eta_discharge=0.9)
    rng = np.random.default_rng(1)
    demand, production = rng.uniform(0, 50, 48), rng.uniform(0, 50, 48)
    plan = DayAheadMILP(none, n=48).solve(demand, production, np.full(48, 0.15), rng.uniform(0.02, 0.08, 48), 0.0)
    np.testing.assert_allclose(plan.export_kwh, np.clip(production - demand, 0, None), atol=1e-7)
    np.testing.assert_allclose(plan.import_kwh, np.clip(demand - production, 0, None), atol=1e-7)


def test_a_wholesale_price_below_the_retail_price_makes_it_store_not_export():
    vb = VirtualBattery(capacity_kwh=10.0, p_max_kw=4.0, eta_charge=0.9, eta_discharge=0.9)
    plan = DayAheadMILP(vb, n=4).solve([0, 0, 2, 2], [2, 2, 0, 0], [0.15] * 4, [0.05] * 4, soc_init_kwh=2.0)
    # 0.05 now < 0.15 × 0.81 later: every surplus kWh goes into the battery
    np.testing.assert_allclose(plan.export_kwh, 0.0, atol=1e-9)
    np.testing.assert_allclose(plan.charge_kwh[:2], 2.0, atol=1e-9)
    # a wholesale price above the round-trip value of storing sells instead
    rich = DayAheadMILP(vb, n=4).solve([0, 0, 2, 2], [2, 2, 0, 0], [0.15] * 4, [0.14] * 4, soc_init_kwh=2.0)
    assert rich.export_kwh[:2].sum() == pytest.approx(4.0, abs=1e-9)


def test_never_a_bid_into_a_negative_price():
    vb = VirtualBattery(capacity_kwh=4.0, p_max_kw=2.0, eta_charge=0.9, eta_discharge=0.9)
    price = np.array([0.04, -0.02, -0.03, 0.06, 0.05, 0.04])
    production = np.array([5.0, 5.0, 5.0, 5.0, 0.0, 0.0])  # more than the battery can take: export is forced
    plan = DayAheadMILP(vb, n=6).solve(np.ones(6), production, np.full(6, 0.15), price, soc_init_kwh=2.0)
    assert plan.success
    bids = bids_kwh(plan, price)
    assert np.all(bids[price <= 0] == 0.0) and bids[price > 0].sum() > 0
    # where the price is negative it charges at full power (1 kWh per half-hour) rather than export
    np.testing.assert_allclose(plan.charge_kwh[price < 0], 1.0, atol=1e-9)


def test_after_clearing_the_resolve_keeps_the_award_and_publishes_targets():
    vb = VirtualBattery(capacity_kwh=10.0, p_max_kw=4.0, eta_charge=0.9, eta_discharge=0.9)
    milp = DayAheadMILP(vb, n=4)
    demand, production, price = [1, 1, 3, 3], [4, 4, 0, 0], np.array([0.10, 0.02, 0.20, 0.20])
    first = milp.solve(demand, production, [0.15] * 4, price, soc_init_kwh=5.0)
    awarded = clear(bids_kwh(first, price), price, limit_price=0.05)
    assert awarded[1] == 0.0  # below the limit price: not awarded
    fixed = np.where(awarded > 0, awarded, np.nan)
    second = milp.solve(demand, production, [0.15] * 4, np.where(awarded > 0, price, 0.0), 5.0,
                        fixed_export_kwh=fixed)
    assert second.success
    np.testing.assert_allclose(second.export_kwh[awarded > 0], awarded[awarded > 0], atol=1e-9)
    target = second.soc_target_frac(vb.capacity_kwh)
    assert np.all((target >= 0) & (target <= 1)) and target[-1] >= 0.5 - 1e-9  # ends where it started


def test_mode_s_is_zero_only_where_the_battery_follows_the_residual():
    np.testing.assert_array_equal(mode_s([-1.0, 2.0, -5.0, 1.0], [1.0, 0.0, 2.0, 0.0], [0.0, 2.0, 0.0, 0.0], 2.0),
                                  [0, 0, 0, 1])


def test_vpw_bills_the_covered_share_of_an_importer_at_48_percent():
    # one minute: household A exports 1.2 kW, B imports 3 kW, C imports 1 kW; a plant exports 0.8 kW
    meter = np.array([[-1.2, 3.0, 1.0]])
    plant = np.array([[-0.8]])
    covered = vpw_covered_kwh(np.clip(meter, 0, None) / 60, np.array([2.0 / 60]))
    np.testing.assert_allclose(covered * 60, [[0.0, 1.5, 0.5]])  # 2 kW of fleet export shared 3 : 1
    s = settle(meter, plant, [0.0], [0.05], [0.07], import_price=[0.30], export_price=[0.0], step_h=1 / 60,
               steps_per_interval=1)
    np.testing.assert_allclose(s.bills * 60, [0.0, 0.30 * 1.5 + 0.48 * 0.30 * 1.5, 0.30 * 0.5 + 0.48 * 0.30 * 0.5])


def test_imbalance_is_charged_only_where_a_bid_exists_by_default():
    """The authors' code of Couraud et al. 2022 settles imbalance in the intervals with a commitment only; an
    interval without one is the plants' and homes' own business (14.9 of s2's 49.8 GBP on 1 June was charged
    there before)."""
    rng = np.random.default_rng(3)
    meter = rng.normal(-0.5, 1.0, (60, 5))
    plant = -np.abs(rng.normal(20, 3, (60, 1)))
    committed = np.array([0.0, 5.0])
    s = settle(meter, plant, committed, [0.05, 0.06], [0.07, 0.09], np.full(60, 0.2), np.zeros(60), 1 / 60, 30)
    exported = -(meter.sum(axis=1) + plant[:, 0]).reshape(2, 30).sum(axis=1) / 60
    np.testing.assert_allclose(s.imbalance_cost, [0.0, abs(exported[1] - 5.0) * 0.09])
    every = settle(meter, plant, committed, [0.05, 0.06], [0.07, 0.09], np.full(60, 0.2), np.zeros(60), 1 / 60, 30,
                   imbalance_where="every_interval")
    np.testing.assert_allclose(every.imbalance_cost, np.abs(exported - committed) * [0.07, 0.09])


def test_with_no_commitment_the_imbalance_cost_is_the_export_times_the_imbalance_price():
    """(charged in every interval, the option)"""
    rng = np.random.default_rng(3)
    meter = rng.normal(-0.5, 1.0, (60, 5))
    plant = -np.abs(rng.normal(20, 3, (60, 1)))
    s = settle(meter, plant, np.zeros(2), [0.05, 0.06], [0.07, 0.09], np.full(60, 0.2), np.zeros(60), 1 / 60, 30,
               imbalance_where="every_interval")
    exported = -(meter.sum(axis=1) + plant[:, 0]).reshape(2, 30).sum(axis=1) / 60
    np.testing.assert_allclose(s.delivered_kwh, exported)
    np.testing.assert_allclose(s.imbalance_cost, exported * [0.07, 0.09])
    assert np.all(s.revenue == 0)
    gb = settle(meter, plant, np.zeros(2), [0.05, 0.06], [0.07, 0.09], np.full(60, 0.2), np.zeros(60), 1 / 60, 30,
                imbalance_rule="gb_single_price", imbalance_where="every_interval")
    np.testing.assert_allclose(gb.imbalance_cost, -exported * [0.07, 0.09])  # long: paid the imbalance price


def _market_inputs(n: int) -> dict:
    """A MarketSim's init arguments for ``n`` half-hours of seeded forecasts and prices (a 700-kWh fleet)."""
    rng = np.random.default_rng(2)
    return dict(demand_forecast_kwh=rng.uniform(5, 20, n), production_forecast_kwh=rng.uniform(0, 40, n),
                import_price=np.full(n, 0.15), wholesale_price=rng.uniform(0.03, 0.08, n),
                imbalance_price=np.full(n, 0.05), battery=VirtualBattery(700.0, 370.0, 0.9, 0.9).__dict__,
                soc_init_kwh=350.0)


def test_a_failed_milp_is_counted_and_the_day_bids_nothing():
    """HiGHS given no time at all: the day's plan fails, is counted, and the market sim carries on without bids."""
    from dercosim.sims.market import MarketSim

    kw = _market_inputs(2 * 48)
    ok, failing = MarketSim(), MarketSim()
    ok.init("M", **kw)
    failing.init("M", time_limit_s=1e-9, **kw)
    for sim in (ok, failing):
        sim.create(1, "Aggregator")
        for t in range(0, 2 * 86400, 1800):
            sim.step(t, {}, 10 ** 9)
    good = ok.get_data({"aggregator": ["committed_kwh", "milp_failures"]})["aggregator"]
    bad = failing.get_data({"aggregator": ["committed_kwh", "milp_failures", "mode_s", "soc_target_frac"]})
    assert good["milp_failures"] == 0 and ok.committed.sum() > 0
    assert bad["aggregator"]["milp_failures"] == 2  # both days, counted
    assert failing.committed.sum() == 0 and np.all(failing.mode == 0) and np.all(np.isnan(failing.target))


def test_the_first_day_is_planned_in_set_up_and_again_only_if_the_fleet_reports_other_energy():
    """Day-ahead: the first day's plan is made when the simulator is set up, from the fleet's initial stored
    energy; the first step keeps it when the batteries report that energy, and plans again (the same plan as a
    set-up from the reported energy, failures not counted twice) when they report another."""
    from dercosim.sims.market import MarketSim

    def market(soc_init_kwh: float, **extra) -> MarketSim:
        sim = MarketSim()
        sim.init("M", **{**_market_inputs(48), "soc_init_kwh": soc_init_kwh, **extra})
        sim.create(1, "Aggregator")
        return sim

    def reports(*kwh: float) -> dict:
        return {"aggregator": {"soc_kwh": {f"B.b{i}": v for i, v in enumerate(kwh)}}}

    same, other, truth = market(350.0), market(350.0), market(120.0)
    planned, planned_ms = same.committed.copy(), same.solve_ms
    assert planned.sum() > 0 and np.isfinite(planned_ms)  # planned before any step
    assert not np.array_equal(planned, truth.committed)  # the stored energy matters to the plan
    same.step(0, reports(200.0, 150.0), 10 ** 9)
    other.step(0, reports(100.0, 20.0), 10 ** 9)
    truth.step(0, reports(100.0, 20.0), 10 ** 9)
    np.testing.assert_array_equal(same.committed, planned)
    assert same.solve_ms == planned_ms  # kept, not solved again
    for a in ("committed", "bids", "target", "mode", "planned_battery"):
        np.testing.assert_array_equal(getattr(other, a), getattr(truth, a))
    failing = market(350.0, time_limit_s=1e-9)
    failing.step(0, reports(100.0, 20.0), 10 ** 9)
    assert failing.failures == 1 and failing.committed.sum() == 0


def test_a_price_maker_exports_where_marginal_revenue_is_zero():
    """Revenue π e − k e² peaks at e = π / (2k): 0.2 / 0.04 = 5 kWh of the 10 a price taker would sell."""
    vb = VirtualBattery(capacity_kwh=10.0, p_max_kw=20.0, eta_charge=1.0, eta_discharge=1.0)
    args = dict(demand_kwh=[0, 0], production_kwh=[0, 0], import_price=[0.3, 0.3], export_price=[0.2, 0.0],
                soc_init_kwh=10.0, soc_end_min_kwh=0.0)
    taker = DayAheadMILP(vb, n=2, dt_h=0.5).solve(**args)
    maker = DayAheadMILP(vb, n=2, dt_h=0.5, impact_slope=0.02, export_max_kwh=10.0).solve(**args)
    assert taker.export_kwh[0] == pytest.approx(10.0) and taker.cost == pytest.approx(-2.0)
    spacing = 10.0 / (DayAheadMILP.IMPACT_BREAKPOINTS - 1)
    assert maker.export_kwh[0] == pytest.approx(5.0, abs=spacing / 2)  # the tangents are exact at breakpoints
    assert maker.cost == pytest.approx(-0.5, abs=0.02 * (spacing / 2) ** 2 + 1e-9)
    with pytest.raises(ValueError, match="impact_slope"):
        DayAheadMILP(vb, n=2, impact_slope=-1.0)


def test_the_price_maker_is_paid_the_depressed_price():
    from dercosim.markets.clearing import clearing_price

    np.testing.assert_allclose(clearing_price([0.05, 0.05], [0.0, 100.0], 1e-4), [0.05, 0.04])
    np.testing.assert_allclose(clearing_price([0.05], [100.0]), [0.05])  # a price taker


def test_the_market_sim_reports_the_cleared_price_of_a_price_maker():
    from dercosim.sims.market import MarketSim

    kw = _market_inputs(48)
    taker, maker = MarketSim(), MarketSim()
    taker.init("M", **kw)
    maker.init("M", residual_demand_slope=2e-4, **kw)
    for sim in (taker, maker):
        sim.create(1, "Aggregator")
        sim.step(0, {}, 10 ** 9)
    # it spreads its sales: no interval as large as the price taker's largest (which would depress the price most)
    assert maker.committed.max() < taker.committed.max()
    # and what it is paid beats the price taker's plan once the impact is charged on it
    paid = lambda c: float(np.dot(maker.wholesale - 2e-4 * c, c))  # noqa: E731
    assert paid(maker.committed) > paid(taker.committed)
    np.testing.assert_allclose(maker.cleared, maker.wholesale - 2e-4 * maker.committed)
    np.testing.assert_allclose(taker.cleared, taker.wholesale)
    assert maker.get_data({"aggregator": ["wholesale_per_kwh"]})["aggregator"]["wholesale_per_kwh"] == \
        pytest.approx(maker.cleared[0])


def test_a_price_maker_never_bids_into_a_price_its_own_export_makes_negative():
    """It is paid π − k E: it bids at most what keeps that above the limit (checked against π alone, a slope of
    1e-3 exported at a negative cleared price in 19 of 48 intervals of 1 June 2016)."""
    from types import SimpleNamespace

    plan = SimpleNamespace(success=True, export_kwh=np.array([100.0, 100.0, 20.0, 100.0]))
    price = np.array([0.05, -0.01, 0.05, 0.20])
    bids = bids_kwh(plan, price, 0.0, slope=1e-3)
    np.testing.assert_allclose(bids, [50.0, 0.0, 20.0, 100.0])
    assert (clearing_price(price, bids, 1e-3)[bids > 0] >= 0).all()
    np.testing.assert_allclose(bids_kwh(plan, price, 0.0), [100.0, 0.0, 20.0, 100.0])  # a price taker
