"""The value-stacking case of a scenario's ``[planner]``: hourly community data, prices and the feeder.

Forecasts are perfect hourly means of the minute profiles the households
simulator plays (the plan meets the minute-level reality, not other data).
The local-market price is the mid-rate between the retail import price and
the spot (B2G) price; the PV feed-in price is the tariff's export price.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dercosim.planning.valuestack import Community, Feeder, Market
from dercosim.grids.feeders import load_feeder
from dercosim.grids.lindistflow import LinDistFlow
from dercosim.scenarios.config import Scenario, ScenarioError
from dercosim.timeseries.prices import price_per_kwh
from dercosim.scenarios.resolve import RunInputs, base_load_shape


def hourly_mean(values: np.ndarray, step_s: int) -> np.ndarray:
    """Means over whole hours of a per-step array (first axis); a trailing partial hour is averaged too."""
    per = 3600 // step_s
    n = int(np.ceil(len(values) / per))
    out = np.empty((n,) + values.shape[1:])
    for k in range(n):
        out[k] = values[k * per:(k + 1) * per].mean(axis=0)
    return out


@dataclass(frozen=True)
class ValueStackingCase:
    """Everything the planner needs for the whole run, hourly (first axis = hour of the run)."""

    names: list[str]  #: community (household entity) names
    batteries: list[str]  #: their battery names, same order
    buses: list[int]  #: 1-based
    load_kw: np.ndarray  #: (hours, n)
    pv_kw: np.ndarray
    t_out_c: np.ndarray  #: (hours,)
    q_kvar: np.ndarray  #: (hours, n)
    battery: pd.DataFrame  #: per community: soc_max_kwh, soc_min_kwh, soc_init_kwh, p_charge_max_kw, p_discharge_max_kw, eta_charge, eta_discharge
    hvac: pd.DataFrame  #: per community: p_max_kw, mu, c_kwh_per_c, r_c_per_kw, t_min_c, t_max_c, t0_c, t_pref_c
    import_per_kwh: np.ndarray  #: (hours,)
    b2g_per_kwh: np.ndarray
    feed_per_kwh: np.ndarray
    peak_per_kw: float
    base_p_kw: np.ndarray  #: (hours, n_bus) base loads incl. nothing of the communities
    base_q_kvar: np.ndarray  #: (hours, n_bus) incl. the communities' reactive load
    ldf: LinDistFlow
    v_min_pu: float
    v_max_pu: float
    p_line_max_kw: np.ndarray | None
    degradation_per_kw2h: float
    trade_penalty_per_kwh: float
    discomfort_per_c2: float
    p_et_max_kw: float
    p_grid_max_kw: float
    currency: str

    @property
    def n_hours(self) -> int:
        return len(self.t_out_c)

    def problem(self, hour0: int, hours: int, soc_init_kwh: np.ndarray | None = None, t0_c: np.ndarray | None = None,
                e_end_kwh: np.ndarray | None = None) -> tuple[list[Community], Market, Feeder]:
        """The planning problem for ``hours`` hours from run hour ``hour0``.

        Initial battery energy and indoor temperature default to the drawn
        ones; ``e_end_kwh`` (default: the initial energy) bounds the energy at
        the end of the horizon from below.
        """
        sl = slice(hour0, hour0 + hours)
        comms = []
        for j, name in enumerate(self.names):
            b, hv = self.battery.iloc[j], self.hvac.iloc[j]
            e0 = float(b.soc_init_kwh if soc_init_kwh is None else np.clip(soc_init_kwh[j], b.soc_min_kwh, b.soc_max_kwh))
            t0 = float(hv.t0_c if t0_c is None else t0_c[j])
            has_hvac = hv.p_max_kw > 0
            comms.append(Community(
                name=name, bus=self.buses[j], load_kw=self.load_kw[sl, j], pv_kw=self.pv_kw[sl, j],
                t_out_c=self.t_out_c[sl], q_kvar=self.q_kvar[sl, j], soc_max_kwh=float(b.soc_max_kwh),
                soc_min_kwh=float(b.soc_min_kwh), soc_init_kwh=e0, p_charge_max_kw=float(b.p_charge_max_kw), p_discharge_max_kw=float(b.p_discharge_max_kw),
                eta_charge=float(b.eta_charge), eta_discharge=float(b.eta_discharge), hvac_p_max_kw=float(hv.p_max_kw),
                hvac_mu=float(hv.mu) if has_hvac else 1.0, hvac_c_kwh_per_c=float(hv.c_kwh_per_c) if has_hvac else 1e6,
                hvac_r_c_per_kw=float(hv.r_c_per_kw) if has_hvac else 1.0,
                # a cooling-only HVAC cannot hold the lower comfort bound (nor heating the upper): only the
                # bound the HVAC can act on is enforced; a start outside the band widens it to the start
                t_min_c=min(float(hv.t_min_c), t0) if has_hvac and hv.mu < 0 else -1e3,
                t_max_c=max(float(hv.t_max_c), t0) if has_hvac and hv.mu > 0 else 1e3, t0_c=t0,
                t_pref_c=float(hv.t_pref_c),
                p_grid_max_kw=self.p_grid_max_kw, p_et_max_kw=self.p_et_max_kw,
                p_b2b_max_kw=float(b.p_discharge_max_kw), p_b2g_max_kw=float(b.p_discharge_max_kw),
                soc_end_min_kwh=None if e_end_kwh is None else float(e_end_kwh[j])))
        imp = self.import_per_kwh[sl]
        b2g = self.b2g_per_kwh[sl]
        market = Market(import_per_kwh=imp, b2g_per_kwh=b2g, et_per_kwh=(imp + b2g) / 2.0,
                        feed_per_kwh=self.feed_per_kwh[sl], peak_per_kw=self.peak_per_kw * hours / 24.0,
                        degradation_per_kw2h=self.degradation_per_kw2h,
                        trade_penalty_per_kwh=self.trade_penalty_per_kwh, discomfort_per_c2=self.discomfort_per_c2)
        feeder = Feeder(self.ldf, self.base_p_kw[sl], self.base_q_kvar[sl], self.v_min_pu, self.v_max_pu,
                        self.p_line_max_kw)
        return comms, market, feeder


def build_case(run: RunInputs) -> ValueStackingCase:
    """Collect the planner's hourly data from the drawn fleet and its minute profiles, from the run's start to the
    end of its last whole day (a plan covers whole days, wherever the run stops)."""
    ahead = run.ahead
    scenario, times, tariff = run.scenario, run.days[ahead], run.tariff
    table, hvac, batteries = run.fleet.households, run.fleet.hvac, run.fleet.batteries
    load_kw, pv_kw, base_shape = run.day_load_kw[ahead], run.day_pv_kw[ahead], base_load_shape(scenario, times)
    p = scenario.planner
    assert p is not None, "a value-stacking case needs [planner]"
    step_s = scenario.clock.step_s
    rows = np.flatnonzero(table["group"].to_numpy() == p.communities)
    names = table["name"].to_numpy()[rows].tolist()
    buses = table["bus"].to_numpy(int)[rows].tolist()
    bats = batteries[batteries["group"] == p.batteries].set_index("bus").loc[buses]
    pf = table["power_factor"].to_numpy(float)[rows]
    load_h = hourly_mean(load_kw[:, rows], step_s)
    q_h = load_h * np.tan(np.arccos(pf))[None, :]
    hvac_rows = {k: np.asarray(v)[rows] for k, v in hvac.items()}
    battery = pd.DataFrame({
        "soc_max_kwh": bats["capacity_kwh"] * bats["soc_max_frac"], "soc_min_kwh": bats["capacity_kwh"] * bats["soc_min_frac"],
        "soc_init_kwh": bats["soc_init_kwh"], "p_charge_max_kw": bats["p_charge_max_kw"], "p_discharge_max_kw": bats["p_discharge_max_kw"],
        "eta_charge": bats["eta_charge"], "eta_discharge": bats["eta_discharge"]}).reset_index(drop=True)
    hv = pd.DataFrame({
        "p_max_kw": hvac_rows["p_max_kw"], "mu": hvac_rows["mu"], "c_kwh_per_c": hvac_rows["c_kwh_per_c"],
        "r_c_per_kw": hvac_rows["r_c_per_kw"], "t_min_c": hvac_rows["t_set_c"] - hvac_rows["band_c"] / 2,
        "t_max_c": hvac_rows["t_set_c"] + hvac_rows["band_c"] / 2, "t0_c": hvac_rows["t_init_c"],
        "t_pref_c": hvac_rows["t_set_c"]})
    feeder = load_feeder(scenario.grid.feeder)
    net = feeder.make_net()
    try:
        ldf = LinDistFlow.from_pandapower(net)
    except ValueError as exc:
        raise ScenarioError(f"planner: the value-stacking plan needs a radial feeder (LinDistFlow): {feeder.title}: "
                            f"{exc}") from None
    base_p = feeder.base_p_kw.copy()  # the case's own load per bus, but where households replace it
    base_q = feeder.base_q_kvar.copy()
    for g in scenario.households.groups:
        if g.replaces_case_loads:
            base_p[np.asarray(g.buses, int) - 1] = 0.0
            base_q[np.asarray(g.buses, int) - 1] = 0.0
    shape_h = hourly_mean(np.asarray(base_shape, float), step_s)
    base_q_h = np.outer(shape_h, base_q)
    for j, b in enumerate(buses):
        base_q_h[:, b - 1] += q_h[:, j]
    line_max = None
    if scenario.grid.line_max_i_ka is not None:
        line_max = np.sqrt(3) * feeder.vn_kv * scenario.grid.line_max_i_ka * 1000.0
    imp = tariff.import_price(times)
    b2g = price_per_kwh(p.b2g_market, times)
    return ValueStackingCase(
        names=names, batteries=bats["name"].tolist(), buses=buses, load_kw=load_h,
        pv_kw=hourly_mean(pv_kw[:, rows], step_s),
        t_out_c=hourly_mean(run.day_outdoor_temperature_c[ahead], step_s), q_kvar=q_h, battery=battery, hvac=hv,
        import_per_kwh=hourly_mean(imp, step_s), b2g_per_kwh=hourly_mean(b2g, step_s),
        feed_per_kwh=hourly_mean(tariff.export_price(times), step_s), peak_per_kw=tariff.peak_demand_per_kw,
        base_p_kw=np.outer(shape_h, base_p), base_q_kvar=base_q_h, ldf=ldf,
        v_min_pu=scenario.grid.v_min_pu + p.v_margin_pu,
        v_max_pu=scenario.grid.v_max_pu - p.v_margin_pu, p_line_max_kw=line_max,
        degradation_per_kw2h=p.degradation_per_kw2h, trade_penalty_per_kwh=p.trade_penalty_per_kwh,
        discomfort_per_c2=p.discomfort_per_c2, p_et_max_kw=p.p_et_max_kw, p_grid_max_kw=p.p_grid_max_kw,
        currency=tariff.currency)


def admm_settings(scenario: Scenario, **overrides: object):  # noqa: ANN201 - ADMMSettings
    """The engine settings of ``planner.admm`` (seeded from the scenario), with ``overrides``."""
    from dercosim.planning.admm import ADMMSettings, Latency

    assert scenario.planner is not None
    a = scenario.planner.admm
    # every key of [planner.admm] is a field of ADMMSettings (a test keeps it so): none can be dropped on the way
    kw = {**a.model_dump(exclude={"latency"}), "latency": Latency(**a.latency.model_dump()), "seed": scenario.seed}
    kw.update(overrides)
    return ADMMSettings(**kw)


def case_from_scenario(scenario: Scenario) -> ValueStackingCase:
    """Draw the scenario's fleet and profiles (as a run would, same seed) and build its planner case; no mosaik."""
    if scenario.planner is None:
        raise ValueError(f"scenario {scenario.name!r} has no [planner] table")
    return build_case(RunInputs.resolve(scenario))
