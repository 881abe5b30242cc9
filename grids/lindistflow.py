"""LinDistFlow (Baran & Wu 1989, branch form): the linear feeder model controllers plan with, extracted from a pandapower net.

Branch form on the radial tree of in-service lines: for every bus j with
parent i, the flow into j is the net load of j's subtree (losses neglected),

    P_ij = p_net_j + Σ_k P_jk        Q_ij likewise,

and voltages follow either

- the squared-voltage form (default): ``v_j = v_i − 2 (r_ij P_ij + x_ij Q_ij)``,
  ``|V_j| = sqrt(v_j)``; or
- the magnitude form of the paper's (16): ``V_j = V_i − (r_ij P_ij + x_ij Q_ij) / V_0``.

Per unit on the net's nominal voltage and ``s_base_mva``. At the IEEE-33 base
load the squared form is off by at most 0.0028 pu (bus 18) against AC power
flow and the magnitude form by 0.0064 pu; both overestimate the voltage.
Validation reports must name the form.

References
----------
- Baran & Wu 1989: M. E. Baran and F. F. Wu, "Network reconfiguration in distribution systems for loss reduction
    and load balancing," IEEE Transactions on Power Delivery 4(2), 1989. (the DistFlow equations and their linearisation)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandapower as pp

Form = Literal["squared", "magnitude"]


@dataclass(frozen=True)
class LinDistFlow:
    """The tree and impedances of a radial feeder (arrays in pandapower bus-index order)."""

    parent: np.ndarray  #: parent bus of each bus, −1 at the root
    r_pu: np.ndarray  #: resistance of the line feeding each bus (0 at the root), pu
    x_pu: np.ndarray  #: reactance of that line, pu
    subtree: np.ndarray  #: subtree[j, k] = 1 if bus k is j itself or below j
    root: int
    s_base_mva: float
    v_root_pu: float

    @classmethod
    def from_pandapower(cls, net: pp.pandapowerNet, s_base_mva: float = 1.0) -> LinDistFlow:
        """Extract the tree from the in-service lines; raises if they do not form one radial tree."""
        n = len(net.bus)
        if not np.array_equal(net.bus.index.values, np.arange(n)):
            raise ValueError("bus indices must be 0..n-1")
        root = int(net.ext_grid.bus.iloc[0])
        v_kv = float(net.bus.vn_kv.iloc[root])
        z_base = v_kv ** 2 / s_base_mva
        lines = net.line[net.line.in_service]
        r = (lines.r_ohm_per_km * lines.length_km / lines.parallel).to_numpy() / z_base
        x = (lines.x_ohm_per_km * lines.length_km / lines.parallel).to_numpy() / z_base
        neighbours: dict[int, list[tuple[int, float, float]]] = {b: [] for b in range(n)}
        for f, t, rr, xx in zip(lines.from_bus.to_numpy(), lines.to_bus.to_numpy(), r, x):
            neighbours[int(f)].append((int(t), rr, xx))
            neighbours[int(t)].append((int(f), rr, xx))
        parent = np.full(n, -2)
        parent[root] = -1
        r_pu, x_pu = np.zeros(n), np.zeros(n)
        order = []
        queue = deque([root])
        while queue:
            i = queue.popleft()
            order.append(i)
            for j, rr, xx in neighbours[i]:
                if parent[j] == -2:
                    parent[j], r_pu[j], x_pu[j] = i, rr, xx
                    queue.append(j)
                elif j != parent[i]:
                    raise ValueError(f"the in-service lines form a loop (at buses {i} and {j}); LinDistFlow needs a tree")
        if np.any(parent == -2):
            raise ValueError(f"buses not connected to the root: {np.flatnonzero(parent == -2).tolist()}")
        subtree = np.eye(n)
        for j in reversed(order):  # children before parents
            if parent[j] >= 0:
                subtree[parent[j]] += subtree[j]
        return cls(parent, r_pu, x_pu, subtree, root, s_base_mva, float(net.ext_grid.vm_pu.iloc[0]))

    def branch_flows_kw(self, p_kw: np.ndarray, q_kvar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flow into each bus from its parent (kW, kVAr); the root's entry is the feeder-head flow."""
        return self.subtree @ np.asarray(p_kw, float), self.subtree @ np.asarray(q_kvar, float)

    def voltages_pu_many(self, p_kw: np.ndarray, q_kvar: np.ndarray, form: Form = "squared") -> np.ndarray:
        """:meth:`voltages_pu` for many snapshots at once: ``p_kw``, ``q_kvar`` (T, n) → (T, n), vectorised."""
        p = np.atleast_2d(np.asarray(p_kw, float))
        q = np.atleast_2d(np.asarray(q_kvar, float))
        s_base_kva = self.s_base_mva * 1000.0
        drop = (p @ self.subtree.T) * (self.r_pu / s_base_kva) + (q @ self.subtree.T) * (self.x_pu / s_base_kva)
        drop[:, self.root] = 0.0
        path_drop = drop @ self.subtree
        if form == "squared":
            return np.sqrt(np.clip(self.v_root_pu ** 2 - 2.0 * path_drop, 0.0, None))
        if form == "magnitude":
            return self.v_root_pu - path_drop / self.v_root_pu
        raise ValueError(f"form must be 'squared' or 'magnitude', got {form!r}")

    def voltages_pu(self, p_kw: np.ndarray, q_kvar: np.ndarray, form: Form = "squared") -> np.ndarray:
        """Voltage magnitude per bus (pu) for net loads ``p_kw``, ``q_kvar`` per bus (load convention)."""
        p_flow, q_flow = self.branch_flows_kw(p_kw, q_kvar)
        s_base_kva = self.s_base_mva * 1000.0
        drop = self.r_pu * p_flow / s_base_kva + self.x_pu * q_flow / s_base_kva
        drop[self.root] = 0.0
        path_drop = self.subtree.T @ drop  # sum over the lines from the root down to each bus
        if form == "squared":
            return np.sqrt(np.clip(self.v_root_pu ** 2 - 2.0 * path_drop, 0.0, None))
        if form == "magnitude":
            return self.v_root_pu - path_drop / self.v_root_pu
        raise ValueError(f"form must be 'squared' or 'magnitude', got {form!r}")
