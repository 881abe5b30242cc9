"""mosaik simulator of households: N households as entities, minute profiles inside.

Outputs per household (load convention): ``load_kw``, ``pv_kw``, ``net_kw`` =
load − PV (positive = drawn from the grid), ``q_kvar`` (load at its power
factor, PV at unity), and ``bus`` (1-based).
"""

from __future__ import annotations

from typing import Any

import mosaik_api_v3
import numpy as np

ATTRS = ["load_kw", "pv_kw", "net_kw", "q_kvar", "bus"]
META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {"Household": {"public": True, "params": [], "attrs": ATTRS}},
}


class HouseholdSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.n_created = 0

    def init(self, sid: str, time_resolution: float = 1.0, step_s: int = 60, names: list[str] = (),
             bus: list[int] = (), load_kw: Any = None, pv_kw: Any = None,
             power_factor: list[float] = ()) -> dict:
        """``load_kw``, ``pv_kw``: (n_steps, n) arrays, one row per step from t = 0."""
        self.step_s = int(step_s)
        self.names = list(names)
        self.index = {name: j for j, name in enumerate(self.names)}
        self.bus = np.asarray(bus, int)
        self.load_kw = np.asarray(load_kw, float).reshape(-1, len(self.names))
        self.pv_kw = np.asarray(pv_kw, float).reshape(-1, len(self.names))
        self.tan_phi = np.tan(np.arccos(np.asarray(power_factor, float)))
        self.k = 0
        return self.meta

    def create(self, num: int, model: str) -> list[dict]:
        """Hands out the next ``num`` households of the table given to ``init``."""
        if self.n_created + num > len(self.names):
            raise ValueError(f"only {len(self.names)} households were given, asked for {self.n_created + num}")
        new = self.names[self.n_created:self.n_created + num]
        self.n_created += num
        return [{"eid": name, "type": model} for name in new]

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        self.k = time // self.step_s
        if self.k >= len(self.load_kw):
            raise ValueError(f"household profiles end at step {len(self.load_kw)}, asked for step {self.k}")
        return time + self.step_s

    def get_data(self, outputs: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
        load = self.load_kw[self.k]
        pv = self.pv_kw[self.k]
        data = {}
        for eid, attrs in outputs.items():
            j = self.index[eid]
            values = {"load_kw": float(load[j]), "pv_kw": float(pv[j]), "net_kw": float(load[j] - pv[j]),
                      "q_kvar": float(load[j] * self.tan_phi[j]), "bus": int(self.bus[j])}
            data[eid] = {a: values[a] for a in attrs}
        return data
