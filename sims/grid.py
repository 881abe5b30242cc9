"""mosaik simulator of the feeder: base load + connected injections per bus, AC power flow every step.

One ``Feeder`` entity with one ``Bus`` child per bus (eid ``bus_<n>``, 1-based) and, where the lines have
ratings, one ``Line`` child per in-service line (eid ``line_<k>``: ``loading_pct``, ``i_ka``).
Connect anything with ``p_kw``/``q_kvar`` (load convention) to a bus; these
are inputs only, summed per bus. Outputs per bus: ``vm_pu``, ``va_degree``, ``p_net_kw``,
``q_net_kvar`` (base + connected). Feeder-wide: ``losses_kw``, ``p_head_kw``,
``q_head_kvar``, ``converged``, ``vm_min_pu``, ``vm_max_pu``,
``line_loading_max_pct`` (NaN without a line rating), ``base_p_kw``.
A diverged power flow gives ``converged=False`` and NaN voltages.
"""

from __future__ import annotations

from typing import Any

import mosaik_api_v3
from mosaik_api_v3.types import Meta
import numpy as np

from dercosim.grids.feeders import load_feeder
from dercosim.grids.powerflow import PowerFlowEngine, PowerFlowResult, make_engine
from dercosim.sims.pacing import paced
from dercosim.sims.tables import tabled

FEEDER_ATTRS = ["losses_kw", "p_head_kw", "q_head_kvar", "converged", "vm_min_pu", "vm_max_pu",
                "line_loading_max_pct", "base_p_kw"]
BUS_ATTRS = ["p_kw", "q_kvar", "vm_pu", "va_degree", "p_net_kw", "q_net_kvar"]
LINE_ATTRS = ["loading_pct", "i_ka"]

META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        "Feeder": {"public": True, "params": ["feeder", "engine", "base_shape", "line_max_i_ka", "no_base_at"],
                   "attrs": FEEDER_ATTRS},
        "Bus": {"public": False, "params": [], "attrs": BUS_ATTRS},
        "Line": {"public": False, "params": [], "attrs": LINE_ATTRS},
    },
}


@tabled
@paced
class GridSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.step_s = 60
        self.engine: PowerFlowEngine | None = None
        self.result: PowerFlowResult | None = None
        self.p_net_kw = np.zeros(0)
        self.q_net_kvar = np.zeros(0)

    def init(self, sid: str, time_resolution: float = 1.0, step_s: int = 60) -> Meta:
        if time_resolution != 1.0:
            raise ValueError("dercosim runs on a 1-second mosaik clock (time_resolution=1.0)")
        self.step_s = int(step_s)
        return self.meta

    def create(self, num: int, model: str, feeder: str = "ieee33", engine: str = "fast",
               base_shape: list[float] | None = None, line_max_i_ka: float | None = None,
               no_base_at: list[int] | None = None) -> list[dict]:
        """``no_base_at``: bus numbers whose case load households replace (no base load there)."""
        if model != "Feeder" or num != 1 or self.engine is not None:
            raise ValueError("GridSim holds exactly one Feeder; create it once with num=1")
        case = load_feeder(feeder)  # a JSON file's path is absolute here (the scenario resolved it)
        net = case.make_net(line_max_i_ka)
        self.engine = make_engine(engine, net)  # type: ignore[arg-type]
        self.has_rating = line_max_i_ka is not None or case.rated_lines
        self.base_p_kw, self.base_q_kvar = case.base_p_kw.copy(), case.base_q_kvar.copy()
        if no_base_at:
            idx = np.asarray(no_base_at, int) - 1
            self.base_p_kw[idx] = 0.0
            self.base_q_kvar[idx] = 0.0
        self.base_shape = np.asarray(base_shape if base_shape is not None else [1.0], float)
        self.constant_shape = base_shape is None
        self.bus_of = {f"bus_{b}": int(b) - 1 for b in case.numbers}  # eid -> 0-based position
        children = [{"eid": eid, "type": "Bus", "rel": []} for eid in self.bus_of]
        # one Line per in-service line (engine order) where the lines have ratings: loading and current per step
        n_lines = int(net.line.in_service.sum()) if self.has_rating else 0
        self.line_of = {f"line_{k + 1}": k for k in range(n_lines)}
        children += [{"eid": eid, "type": "Line", "rel": []} for eid in self.line_of]
        return [{"eid": "feeder", "type": "Feeder", "rel": [], "children": children}]

    def step(self, time: int, inputs: dict[str, dict[str, dict[str, Any]]], max_advance: int) -> int:
        k = 0 if self.constant_shape else time // self.step_s
        if k >= len(self.base_shape):
            raise ValueError(f"no base-load shape for t = {time} s (shape has {len(self.base_shape)} steps)")
        shape = self.base_shape[k]  # one multiplier, or one per bus (SimBench profiles)
        p = self.base_p_kw * shape
        q = self.base_q_kvar * shape
        for eid, attrs in inputs.items():
            i = self.bus_of[eid]
            p[i] += sum(attrs.get("p_kw", {}).values())
            q[i] += sum(attrs.get("q_kvar", {}).values())
        self.p_net_kw, self.q_net_kvar = p, q
        self.base_now_kw = (float(self.base_p_kw.sum() * shape) if self.base_shape.ndim == 1
                            else float((self.base_p_kw * shape).sum()))
        assert self.engine is not None, "create the Feeder before stepping"
        self.result = self.engine.solve(p, q)
        return time + self.step_s

    def get_data(self, outputs: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
        r = self.result
        assert r is not None, "get_data before the first step"
        data: dict[str, dict[str, Any]] = {}
        for eid, attrs in outputs.items():
            if eid == "feeder":
                values = {
                    "losses_kw": r.losses_kw, "p_head_kw": r.p_head_kw, "q_head_kvar": r.q_head_kvar,
                    "converged": bool(r.converged),
                    "vm_min_pu": float(np.min(r.vm_pu)) if r.converged else float("nan"),
                    "vm_max_pu": float(np.max(r.vm_pu)) if r.converged else float("nan"),
                    "line_loading_max_pct": float(np.max(r.line_loading_pct)) if self.has_rating and r.converged
                    else float("nan"),
                    "base_p_kw": self.base_now_kw,
                }
            elif eid in self.line_of:
                k = self.line_of[eid]
                values = {"loading_pct": float(r.line_loading_pct[k]), "i_ka": float(r.line_i_ka[k])}
            else:
                i = self.bus_of[eid]
                values = {"vm_pu": float(r.vm_pu[i]), "va_degree": float(r.va_degree[i]),
                          "p_net_kw": float(self.p_net_kw[i]), "q_net_kvar": float(self.q_net_kvar[i])}
            data[eid] = {a: values[a] for a in attrs}
        return data
