"""mosaik simulator of the day-ahead aggregator and the wholesale market (Couraud et al. 2022, phases 1–2).

One ``Aggregator`` entity. At the start of each local day (and, for the run's first day, in set-up) it
forecasts the portfolio's demand and production for the rest of the day,
solves the virtual battery's MILP from the fleet's current stored energy
(input ``soc_kwh`` from every battery, time-shifted), bids, lets the market
clear (price taker), re-solves with the award fixed and publishes per market
interval: ``bid_kwh``, ``committed_kwh`` (E_c^t), ``soc_target_frac``
(SoC^{t,A}), ``mode_s`` (S^t), ``wholesale_per_kwh``, ``imbalance_per_kwh``
``forecast_net_export_kwh`` and ``planned_battery_kwh`` (charge − discharge at the terminals). It decides
only at day boundaries and steps only when the market interval changes (the first clock step in each
interval): its outputs are persistent in mosaik, so the recorder and the contract see the interval's values
in every minute all the same, without a step of their own.

A failed MILP (infeasible, time limit) is counted (``milp_failures``): that
day the fleet bids nothing (commitments 0, S = 0, no SoC target) and the run
goes on. The logic lives in :mod:`dercosim.markets.aggregator` and
:mod:`dercosim.markets.clearing`; this file turns mosaik inputs into arrays.
"""

from __future__ import annotations

import math
from typing import Any

import mosaik_api_v3
from mosaik_api_v3.types import Meta
import numpy as np

from dercosim.markets.aggregator import DayAheadMILP, VirtualBattery, bids_kwh
from dercosim.markets.clearing import clear, clearing_price
from dercosim.sims.pacing import paced
from dercosim.sims.tables import tabled

OUTPUTS = ["bid_kwh", "committed_kwh", "soc_target_frac", "mode_s", "wholesale_per_kwh", "imbalance_per_kwh",
           "forecast_net_export_kwh", "planned_battery_kwh", "milp_failures", "milp_solve_ms"]
META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {"Aggregator": {"public": True, "params": [], "attrs": ["soc_kwh"] + OUTPUTS}},
}


@tabled
@paced
class MarketSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.eid: str | None = None

    def init(self, sid: str, time_resolution: float = 1.0, step_s: int = 60, interval_s: int = 1800,
             first_interval: int = 0, demand_forecast_kwh: Any = None, production_forecast_kwh: Any = None,
             import_price: Any = None, wholesale_price: Any = None, imbalance_price: Any = None,
             battery: dict[str, float] | None = None, soc_init_kwh: float = 0.0, bid_limit_per_kwh: float = 0.0,
             clearing_limit_per_kwh: float | None = None, time_limit_s: float = 10.0,
             residual_demand_slope: float = 0.0) -> Meta:
        """Arrays are per market interval of the whole days the run touches (forecasts in kWh, prices in
        currency/kWh); the run starts at interval ``first_interval``; ``battery``: the :class:`VirtualBattery`
        fields; ``residual_demand_slope`` > 0: a price maker, whose awarded export E depresses the price it is
        paid to π − k E (and ``wholesale_per_kwh`` is that cleared price)."""
        self.step_s, self.interval_s = int(step_s), int(interval_s)
        self.first = int(first_interval)
        self.demand = np.asarray(demand_forecast_kwh, float)
        self.production = np.asarray(production_forecast_kwh, float)
        self.import_price = np.asarray(import_price, float)
        self.wholesale = np.asarray(wholesale_price, float)
        self.slope = float(residual_demand_slope)
        self.imbalance = np.asarray(imbalance_price, float)
        self.battery = VirtualBattery(**(battery or {}))
        self.soc_now_kwh = float(soc_init_kwh)
        self.bid_limit, self.clearing_limit = float(bid_limit_per_kwh), clearing_limit_per_kwh
        self._no_plans()
        self.milps: dict[int, DayAheadMILP] = {}
        self.time_limit_s = float(time_limit_s)
        self.per_day = 86400 // self.interval_s
        self.k = 0
        #: the first day planned in the run's set-up (day-ahead: before the day's first step), from the stored
        #: energy ``soc_init_kwh``; the first step plans it again only if the batteries report another value
        self._planned_from: float | None = None
        if self.first < len(self.wholesale):
            self._plan_day(self.first)
            self._planned_from = self.soc_now_kwh
        return self.meta

    def _no_plans(self) -> None:
        """Nothing planned yet: no bids, commitments 0, S = 0, no SoC target, no MILP solved."""
        n = len(self.wholesale)
        self.cleared = self.wholesale.copy()  #: the price the fleet is paid (= wholesale for a price taker)
        self.bids = np.zeros(n)
        self.committed = np.zeros(n)
        self.target = np.full(n, math.nan)
        self.mode = np.zeros(n)
        self.forecast_export = np.full(n, math.nan)
        self.planned_battery = np.full(n, math.nan)
        self.failures = 0
        self.solve_ms = math.nan

    def create(self, num: int, model: str) -> list[dict]:
        if num != 1 or self.eid is not None:
            raise ValueError("MarketSim holds exactly one Aggregator")
        self.eid = "aggregator"
        return [{"eid": self.eid, "type": model}]

    def _day_end(self, first: int) -> int:
        """The interval after the last of ``first``'s local day (or of the data)."""
        return min(first + self.per_day - first % self.per_day, len(self.wholesale))

    def _milp(self, n: int) -> DayAheadMILP:
        """The day-ahead MILP of ``n`` intervals, built once."""
        milp = self.milps.get(n)
        if milp is None:
            milp = self.milps[n] = DayAheadMILP(
                self.battery, n=n, dt_h=self.interval_s / 3600.0, time_limit_s=self.time_limit_s,
                impact_slope=self.slope,
                export_max_kwh=float(np.max(self.production, initial=0.0)) + self.battery.p_max_kw * self.interval_s / 3600)
        return milp

    def _plan_day(self, first: int) -> None:
        """Phases 1 and 2 for the intervals ``first`` .. the end of its local day."""
        last = self._day_end(first)
        sl = slice(first, last)
        milp = self._milp(last - first)
        args = (self.demand[sl], self.production[sl], self.import_price[sl])
        plan = milp.solve(*args, self.wholesale[sl], self.soc_now_kwh)
        solve_s = plan.solve_s
        if plan.success:
            bids = bids_kwh(plan, self.wholesale[sl], self.bid_limit, self.slope)
            awarded = clear(bids, self.wholesale[sl], self.clearing_limit)
            fixed = np.where(awarded > 0, awarded, np.nan)
            final = milp.solve(*args, np.where(awarded > 0, self.wholesale[sl], 0.0), self.soc_now_kwh,
                               fixed_export_kwh=fixed)
            solve_s += final.solve_s
            if final.success:
                self.bids[sl], self.committed[sl] = bids, awarded
                self.cleared[sl] = clearing_price(self.wholesale[sl], awarded, self.slope)
                self.target[sl] = final.soc_target_frac(self.battery.capacity_kwh)
                self.mode[sl] = final.mode_s
                self.forecast_export[sl] = final.export_kwh - final.import_kwh
                self.planned_battery[sl] = final.charge_kwh - final.discharge_kwh
                self.solve_ms = 1000.0 * solve_s
                return
        self.failures += 1  # no bids: commitments stay 0, S = 0, no target
        self.solve_ms = 1000.0 * solve_s

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        given = inputs.get(self.eid, {}).get("soc_kwh", {})
        if given:
            self.soc_now_kwh = float(sum(given.values()))
        k = self.first + time // self.interval_s
        if time == 0 and self._planned_from is not None:
            planned_soc_kwh, self._planned_from = self._planned_from, None
            if self.soc_now_kwh != planned_soc_kwh:  # not the stored energy set-up planned from: again
                self._no_plans()
                self._plan_day(k)
        elif k < len(self.wholesale) and time % self.interval_s == 0 and (time == 0 or k % self.per_day == 0):
            self._plan_day(k)
        self.k = min(k, len(self.wholesale) - 1)
        next_interval_s = (time // self.interval_s + 1) * self.interval_s  # k changes there, not before
        return max(time + self.step_s, -(-next_interval_s // self.step_s) * self.step_s)  # on the clock's steps

    def get_data(self, outputs: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
        k = self.k
        values = {"bid_kwh": float(self.bids[k]), "committed_kwh": float(self.committed[k]),
                  "soc_target_frac": float(self.target[k]), "mode_s": float(self.mode[k]),
                  "wholesale_per_kwh": float(self.cleared[k]), "imbalance_per_kwh": float(self.imbalance[k]),
                  "forecast_net_export_kwh": float(self.forecast_export[k]),
                  "planned_battery_kwh": float(self.planned_battery[k]), "milp_failures": float(self.failures),
                  "milp_solve_ms": float(self.solve_ms)}
        return {eid: {a: values[a] for a in attrs if a in values} for eid, attrs in outputs.items()}
