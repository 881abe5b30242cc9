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
    #: off-nominal voltage ratio from the root to each bus (transformers whose rated voltages or tap differ from
    #: their buses'); None where every ratio is 1
    ratio: np.ndarray | None = None

    @classmethod
    def from_pandapower(cls, net: pp.pandapowerNet, s_base_mva: float = 1.0) -> LinDistFlow:
        """Extract the tree from the in-service lines and two-winding transformers; raises if they do not form one
        radial tree from one external grid.

        Lines are per unit on their buses' nominal voltage; a transformer is its series impedance (``vk_percent``,
        ``vkr_percent`` on its rating, referred to ``s_base_mva``; magnetising branch neglected), and where its
        rated voltages or tap differ from its buses' nominal voltages, an ideal ratio (:attr:`ratio`).
        """
        n = len(net.bus)
        if not np.array_equal(net.bus.index.values, np.arange(n)):
            raise ValueError("bus indices must be 0..n-1")
        if int(net.ext_grid.in_service.sum()) != 1:
            raise ValueError(f"LinDistFlow needs one external grid; the net has {int(net.ext_grid.in_service.sum())}")
        if "trafo3w" in net and len(net.trafo3w) and net.trafo3w.in_service.any():
            raise ValueError("LinDistFlow does not model three-winding transformers")
        root = int(net.ext_grid.bus[net.ext_grid.in_service.astype(bool)].iloc[0])
        vn_kv = net.bus.vn_kv.to_numpy(float)
        z_base = vn_kv ** 2 / s_base_mva  # per bus
        lines = net.line[net.line.in_service]
        from_bus = lines.from_bus.to_numpy(int)
        r = (lines.r_ohm_per_km * lines.length_km / lines.parallel).to_numpy() / z_base[from_bus]
        x = (lines.x_ohm_per_km * lines.length_km / lines.parallel).to_numpy() / z_base[from_bus]
        #: bus -> [(neighbour, r_pu, x_pu, voltage ratio from this bus to the neighbour)]
        neighbours: dict[int, list[tuple[int, float, float, float]]] = {b: [] for b in range(n)}
        for f, t, rr, xx in zip(from_bus, lines.to_bus.to_numpy(), r, x):
            neighbours[int(f)].append((int(t), rr, xx, 1.0))
            neighbours[int(t)].append((int(f), rr, xx, 1.0))
        if len(net.trafo):
            for tr in net.trafo[net.trafo.in_service.astype(bool)].itertuples():
                hv, lv = int(tr.hv_bus), int(tr.lv_bus)
                parallel = float(getattr(tr, "parallel", 1) or 1)
                z = float(tr.vk_percent) / 100.0 * s_base_mva / float(tr.sn_mva) / parallel
                rr = float(tr.vkr_percent) / 100.0 * s_base_mva / float(tr.sn_mva) / parallel
                xx = float(np.sqrt(max(z * z - rr * rr, 0.0)))
                tap = 1.0
                step = getattr(tr, "tap_step_percent", float("nan"))
                if step == step and getattr(tr, "tap_pos", None) == getattr(tr, "tap_pos", None):
                    tap = 1.0 + (float(tr.tap_pos) - float(tr.tap_neutral)) * float(step) / 100.0
                    if str(getattr(tr, "tap_side", "hv")) == "lv":
                        tap = 1.0 / tap
                a = (vn_kv[hv] / float(tr.vn_hv_kv)) * (float(tr.vn_lv_kv) / vn_kv[lv]) / tap  # hv pu -> lv pu
                neighbours[hv].append((lv, rr, xx, a))
                neighbours[lv].append((hv, rr, xx, 1.0 / a))
        parent = np.full(n, -2)
        parent[root] = -1
        r_pu, x_pu = np.zeros(n), np.zeros(n)
        ratio = np.ones(n)
        order = []
        queue = deque([root])
        while queue:
            i = queue.popleft()
            order.append(i)
            for j, rr, xx, a in neighbours[i]:
                if parent[j] == -2:
                    parent[j], r_pu[j], x_pu[j] = i, rr, xx
                    ratio[j] = ratio[i] * a
                    queue.append(j)
                elif j != parent[i]:
                    raise ValueError(f"the in-service lines form a loop (at buses {i} and {j}); LinDistFlow needs a "
                                     f"radial feeder")
        if np.any(parent == -2):
            raise ValueError(f"buses not connected to the root: {np.flatnonzero(parent == -2).tolist()}")
        subtree = np.eye(n)
        for j in reversed(order):  # children before parents
            if parent[j] >= 0:
                subtree[parent[j]] += subtree[j]
        v_root = float(net.ext_grid.vm_pu[net.ext_grid.in_service.astype(bool)].iloc[0])
        off_nominal = None if np.allclose(ratio, 1.0, rtol=0, atol=1e-12) else ratio
        return cls(parent, r_pu, x_pu, subtree, root, s_base_mva, v_root, off_nominal)

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
        return self._voltages(self._referred(drop, form) @ self.subtree, form)

    def voltages_pu(self, p_kw: np.ndarray, q_kvar: np.ndarray, form: Form = "squared") -> np.ndarray:
        """Voltage magnitude per bus (pu) for net loads ``p_kw``, ``q_kvar`` per bus (load convention)."""
        p_flow, q_flow = self.branch_flows_kw(p_kw, q_kvar)
        s_base_kva = self.s_base_mva * 1000.0
        drop = self.r_pu * p_flow / s_base_kva + self.x_pu * q_flow / s_base_kva
        drop[self.root] = 0.0
        # sum over the lines from the root down to each bus
        return self._voltages(self.subtree.T @ self._referred(drop, form), form)

    def _referred(self, drop: np.ndarray, form: Form) -> np.ndarray:
        """Each line's drop referred to the root's side of the off-nominal ratios (unchanged without any)."""
        if self.ratio is None:
            return drop
        return drop / self.ratio ** 2 if form == "squared" else drop / self.ratio

    def _voltages(self, path_drop: np.ndarray, form: Form) -> np.ndarray:
        """Bus voltages (pu) from the summed drop between the root and each bus, in ``form``."""
        if form == "squared":
            v = np.sqrt(np.clip(self.v_root_pu ** 2 - 2.0 * path_drop, 0.0, None))
        elif form == "magnitude":
            v = self.v_root_pu - path_drop / self.v_root_pu
        else:
            raise ValueError(f"form must be 'squared' or 'magnitude', got {form!r}")
        return v if self.ratio is None else v * self.ratio
