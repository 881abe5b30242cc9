"""mosaik simulator of the value-stacking planner (Jiang & Wang 2024): ADMM each day, hourly schedules out.

Entities: one ``Community`` per community (outputs its battery setpoint and
HVAC power for the current hour, and the plan's figures for the recorder) and
one ``Operator`` (the latest plan's ADMM statistics). Time-based, every 60 s.

At the start of each day (``replan = "hourly"``: of every hour, to the end of
the day, from the measured battery energy and indoor temperature) it solves
:func:`controllers.valuestack.solve_value_stacking`. If planning raises (an
infeasible operator problem, a solver error) the plan falls back to idle
batteries and thermostat HVAC for that horizon, and the failure is counted; an
ADMM that stops at its iteration cap is used but flagged ``admm_converged = 0``.
"""

from __future__ import annotations

import math
import time as _time
from typing import Any

import mosaik_api_v3
from mosaik_api_v3.types import Meta
import numpy as np

from dercosim.planning.valuestack import PlanResult, solve_value_stacking, unpack
from dercosim.sims.entities import hand_out
from dercosim.sims.pacing import paced
from dercosim.sims.tables import tabled

COMMUNITY_OUT = ["p_set_kw", "hvac_set_kw", "plan_net_kw", "plan_vm_pu", "plan_soc_kwh", "plan_p_grid_kw",
                 "plan_p_b2b_kw", "plan_p_b2g_kw", "plan_p_ets_kw", "plan_p_etb_kw", "plan_p_feed_kw"]
OPERATOR_OUT = ["admm_iterations", "admm_converged", "admm_time_to_decision_s", "admm_wall_s", "admm_gap_pct",
                "plan_cost", "central_cost", "plan_fallback", "plan_fixed", "plan_violations_left", "plans"]

META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        "Community": {"public": True, "params": [], "attrs": ["soc_kwh", "t_indoor_c"] + COMMUNITY_OUT},
        "Operator": {"public": True, "params": [], "attrs": OPERATOR_OUT},
    },
}


@tabled
@paced
class PlannerSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.n_created = 0
        self.operator_created = False

    def init(self, sid: str, time_resolution: float = 1.0, step_s: int = 60, case: Any = None,
             settings: Any = None, replan: str = "daily", binaries: str = "relaxed", central: bool = True,
             streams: Any = None, log: Any = None) -> Meta:
        """``case``: a :class:`dercosim.scenarios.planner_case.ValueStackingCase`; ``settings``: ADMMSettings."""
        self.step_s = int(step_s)
        self.case, self.settings, self.replan = case, settings, replan
        self.binaries, self.central, self.streams = binaries, central, streams
        self.log = log or (lambda msg: None)
        n = len(case.names)
        self.names = list(case.names)
        self.index = {name: j for j, name in enumerate(self.names)}
        self.schedule = {k: np.full((case.n_hours, n), math.nan) for k in COMMUNITY_OUT if k != "p_set_kw"}
        self.schedule["p_set_kw"] = np.full((case.n_hours, n), math.nan)
        self.stats = dict.fromkeys(OPERATOR_OUT, math.nan)
        self.stats.update(plans=0, plan_fallback=0)
        self.day_e0 = np.asarray(case.battery["soc_init_kwh"], float).copy()
        self.hour = 0
        return self.meta

    def create(self, num: int, model: str) -> list[dict]:
        if model == "Operator":
            if self.operator_created or num != 1:
                raise ValueError("the planner has exactly one Operator")
            self.operator_created = True
            return [{"eid": "operator", "type": model}]
        entities, self.n_created = hand_out(self.names, self.n_created, num, model, "communities")
        return entities

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        self.hour = time // 3600
        if time % 3600 == 0 and self.hour < self.case.n_hours:
            day_start = self.hour % 24 == 0
            if day_start or self.replan == "hourly":
                soc = self._measured(inputs, "soc_kwh")
                t_in = self._measured(inputs, "t_indoor_c")
                if day_start:
                    self.day_e0 = np.where(np.isfinite(soc), soc, self.day_e0)
                self._plan(self.hour, min(24 - self.hour % 24, self.case.n_hours - self.hour), soc, t_in)
        return time + self.step_s

    def _measured(self, inputs: dict, attr: str) -> np.ndarray:
        out = np.full(len(self.names), math.nan)
        for eid, attrs in inputs.items():
            values = attrs.get(attr, {})
            if values and eid in self.index:
                out[self.index[eid]] = float(sum(values.values()))
        return out

    def _plan(self, hour0: int, hours: int, soc: np.ndarray, t_in: np.ndarray) -> None:
        case = self.case
        bat = case.battery
        e0 = np.where(np.isfinite(soc), soc, bat["soc_init_kwh"].to_numpy(float))
        t0 = np.where(np.isfinite(t_in), t_in, case.hvac["t0_c"].to_numpy(float))
        # the end-of-day bound is the day's initial energy, if the remaining hours can still reach it
        reach = e0 + hours * bat["p_charge_max_kw"].to_numpy(float) * bat["eta_charge"].to_numpy(float) * 0.99
        e_end = np.minimum(self.day_e0, reach)
        comms, market, feeder = case.problem(hour0, hours, e0, t0, e_end)
        settings = self.settings
        from dataclasses import replace

        settings = replace(settings, seed=int(settings.seed) * 1000 + hour0)  # a fresh, reproducible network draw
        sl = slice(hour0, hour0 + hours)
        self.stats["plans"] += 1
        wall = _time.perf_counter()
        try:
            kwargs: dict[str, Any] = {"binaries": self.binaries, "central": self.central}
            if self.streams is not None:
                kwargs["streams"] = self.streams
            res: PlanResult = solve_value_stacking(comms, market, feeder, settings, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a failed plan must not end the run
            self.stats["plan_fallback"] += 1
            self.log(f"hour {hour0}: planning failed ({exc}); batteries idle, HVAC on thermostat until re-planned")
            for k in self.schedule:
                self.schedule[k][sl] = 0.0 if k == "p_set_kw" else math.nan
            self.stats.update(admm_iterations=0, admm_converged=0, admm_wall_s=_time.perf_counter() - wall)
            return
        for j, (c, u) in enumerate(zip(comms, res.solution.u)):
            v = unpack(c, u)
            self.schedule["p_set_kw"][sl, j] = v["p_charge_kw"] - v["p_discharge_kw"]
            self.schedule["hvac_set_kw"][sl, j] = v["p_ac_kw"] if c.hvac_p_max_kw > 0 else math.nan
            self.schedule["plan_soc_kwh"][sl, j] = v["soc_kwh"]
            for name in ("p_grid", "p_b2b", "p_b2g", "p_ets", "p_etb", "p_feed"):
                self.schedule[f"plan_{name}_kw"][sl, j] = v[f"{name}_kw"]
            self.schedule["plan_net_kw"][sl, j] = (v["p_grid_kw"] + v["p_etb_kw"] - v["p_ets_kw"] - v["p_b2g_kw"]
                                                   - v["p_feed_kw"])
            self.schedule["plan_vm_pu"][sl, j] = res.v_plan_pu[:, c.bus - 1]
        self.stats.update(admm_iterations=res.iterations, admm_converged=int(res.converged),
                          admm_time_to_decision_s=res.time_to_decision_s, admm_wall_s=res.wall_s,
                          admm_gap_pct=math.nan if res.gap_pct is None else res.gap_pct,
                          plan_cost=res.solution.total_cost,
                          central_cost=next((float(c) for c in (res.central_mixed_integer_cost,
                                                                 res.central_fixed_cost) if c is not None), math.nan),
                          plan_fixed=res.fixed, plan_violations_left=res.violations_left)
        self.log(f"hour {hour0}: plan of {hours} h, {res.iterations} ADMM iterations "
                 f"({'converged' if res.converged else 'NOT converged'}), {res.time_to_decision_s:.1f} s simulated, "
                 f"{res.wall_s:.1f} s wall, cost {res.solution.total_cost:.2f} {case.currency}"
                 + ("" if res.gap_pct is None else f", gap to centralised {res.gap_pct:+.3f} %"))

    def get_data(self, outputs: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
        h = min(self.hour, self.case.n_hours - 1)
        data: dict[str, dict[str, Any]] = {}
        for eid, attrs in outputs.items():
            if eid == "operator":
                data[eid] = {a: float(self.stats[a]) for a in attrs}
                continue
            j = self.index[eid]
            data[eid] = {a: float(self.schedule[a][h, j]) if a in self.schedule else math.nan for a in attrs}
        return data
