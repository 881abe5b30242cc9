"""AC power flow: Baran & Wu base case, fast engine == pandapower, divergence handling."""

from __future__ import annotations

import numpy as np
import pytest

from dercosim.grids import ieee33
from dercosim.grids.powerflow import LightsimEngine, PandapowerEngine, make_engine
from dercosim.timeseries import loads, pv, weather
from dercosim.timeseries.rng import DayStreams

ENGINES = ["fast", "pandapower"]


@pytest.fixture(scope="module")
def net():
    return ieee33.make_net()


def test_case_base_load_is_baran_wu():
    p_kw, q_kvar = ieee33.base_load_kw()
    assert p_kw.sum() == pytest.approx(3715.0, abs=1e-6)
    assert q_kvar.sum() == pytest.approx(2300.0, abs=1e-6)
    assert p_kw[0] == 0.0  # nothing at the substation bus


def test_bus_numbers_are_one_based():
    assert ieee33.bus_index(18) == 17
    assert list(ieee33.bus_index([1, 33])) == [0, 32]
    for bad in (0, 34):
        with pytest.raises(ValueError, match="1..33"):
            ieee33.bus_index(bad)


def test_cached_case_is_pandapowers_case_and_a_bad_cache_is_parsed_again(tmp_path, monkeypatch):
    import pandapower as pp
    import pandapower.networks as pn
    import pandapower.toolbox

    monkeypatch.setenv("DERCOSIM_CACHE", str(tmp_path))
    ieee33._case33bw.cache_clear()
    try:
        first = ieee33._case33bw()  # parsed, then written
        (cached,) = (tmp_path / "grids").glob("case33bw-*.pickle")
        assert not list((tmp_path / "grids").glob("*.tmp"))
        ieee33._case33bw.cache_clear()
        again = ieee33._case33bw()  # read back
        assert again is not first
        parsed = pn.case33bw()
        assert pandapower.toolbox.nets_equal(again, parsed)
        for net in (again, parsed):
            pp.runpp(net)
        assert np.array_equal(again.res_bus.vm_pu.to_numpy(), parsed.res_bus.vm_pu.to_numpy())
        cached.write_bytes(b"not a pickle")  # a damaged cache costs a parse, nothing else
        ieee33._case33bw.cache_clear()
        assert pandapower.toolbox.nets_equal(ieee33._case33bw(), pn.case33bw())
    finally:
        ieee33._case33bw.cache_clear()


@pytest.mark.parametrize("engine", ENGINES)
def test_base_case(net, engine):
    p_kw, q_kvar = ieee33.base_load_kw()
    res = make_engine(engine, net).solve(p_kw, q_kvar)
    assert res.converged
    assert res.losses_kw == pytest.approx(202.68, abs=0.05)
    assert res.vm_pu.min() == pytest.approx(0.91309, abs=1e-4)
    assert int(np.argmin(res.vm_pu)) + 1 == 18
    assert res.vm_pu[0] == pytest.approx(1.0)
    # power balance: head = load + losses (no shunts, no line charging in case33bw)
    assert res.p_head_kw == pytest.approx(p_kw.sum() + res.losses_kw, rel=1e-6)
    assert len(res.line_i_ka) == 32  # the 5 tie lines are open


def _day_of_injections(n_steps: int = 1440) -> tuple[np.ndarray, np.ndarray]:
    """Base load with the daily shape plus heavy PV at the far ends (reverse flow at noon)."""
    site = weather.get_site("greensboro_tmy3")
    times = weather.time_index("2016-06-21", n_steps, 60, site.tz)
    shape = loads.daily_shape(times)
    p0, q0 = ieee33.base_load_kw()
    pv_buses = np.array([18, 25, 33]) - 1
    pv_kw = pv.pv_ac_kw(site, times, np.full(3, 2000.0), np.full(3, 25.0), np.full(3, 180.0),
                        DayStreams(1, "pv_clouds"))
    p = np.outer(shape, p0)
    p[:, pv_buses] -= pv_kw
    return p, np.outer(shape, q0)


def test_fast_engine_equals_pandapower_over_a_day(net):
    p, q = _day_of_injections()
    fast = LightsimEngine(net)
    ref = PandapowerEngine(net)
    worst = 0.0
    v_max = 0.0
    for k in range(len(p)):
        r_fast = fast.solve(p[k], q[k])  # every minute, so the warm start is exercised
        if k % 4:
            continue
        r_ref = ref.solve(p[k], q[k])
        assert r_fast.converged and r_ref.converged
        worst = max(worst, float(np.max(np.abs(r_fast.vm_pu - r_ref.vm_pu))))
        v_max = max(v_max, float(r_ref.vm_pu.max()))
        # powers to 1 W: runpp's own mismatch tolerance is 1e-8 MVA = 1e-5 kW per bus
        assert r_fast.losses_kw == pytest.approx(r_ref.losses_kw, abs=1e-3)
        assert r_fast.p_head_kw == pytest.approx(r_ref.p_head_kw, abs=1e-3)
    assert worst <= 1e-8
    assert v_max > 1.0  # the day really included reverse flow, not just light load


@pytest.mark.parametrize("engine", ENGINES)
def test_diverged_power_flow_is_flagged_and_next_step_recovers(net, engine):
    p0, q0 = ieee33.base_load_kw()
    eng = make_engine(engine, net)
    eng.solve(p0, q0)
    absurd = p0.copy()
    absurd[17] = 50_000.0  # 50 MW at the far end of a 12.66 kV feeder
    bad = eng.solve(absurd, q0)
    assert not bad.converged
    assert np.all(np.isnan(bad.vm_pu)) and np.isnan(bad.losses_kw)
    good = eng.solve(p0 * 0.8, q0 * 0.8)
    fresh = make_engine(engine, net).solve(p0 * 0.8, q0 * 0.8)
    assert good.converged
    np.testing.assert_allclose(good.vm_pu, fresh.vm_pu, atol=1e-10)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("bad_value,where", [(np.nan, "p"), (np.inf, "p"), (-np.inf, "q"), (np.nan, "q")])
def test_a_non_finite_injection_is_a_failed_solve_not_the_previous_answer(net, engine, bad_value, where):
    p0, q0 = ieee33.base_load_kw()
    eng = make_engine(engine, net)
    assert eng.solve(p0, q0).converged  # a previous answer the engine could hand back
    p, q = p0.copy(), q0.copy()
    (p if where == "p" else q)[17] = bad_value
    bad = eng.solve(p, q)
    assert not bad.converged
    assert np.all(np.isnan(bad.vm_pu)) and np.isnan(bad.losses_kw) and np.isnan(bad.p_head_kw)
    # and the next finite question gets its own answer
    good = eng.solve(p0 * 0.7, q0 * 0.7)
    np.testing.assert_allclose(good.vm_pu, make_engine(engine, net).solve(p0 * 0.7, q0 * 0.7).vm_pu, atol=1e-10)


def test_engine_rejects_wrong_shape(net):
    with pytest.raises(ValueError, match=r"\(33,\)"):
        LightsimEngine(net).solve(np.zeros(32), np.zeros(32))
