"""The grid operator: LinDistFlow network rows and the coupling problem (z-update), hour by hour."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg  # noqa: F401 - sp.linalg.norm

from dercosim.planning.admm.qp import RetryingQP
from dercosim.planning.valuestack.model import Community
from dercosim.grids.lindistflow import LinDistFlow


# ---------------------------------------------------------------- the feeder


@dataclass(frozen=True)
class Feeder:
    """What the grid operator knows: the LinDistFlow tree, base loads per bus and hour, and the limits."""

    ldf: LinDistFlow
    base_p_kw: np.ndarray  #: (H, n_bus) base active load, with the communities' fixed reactive part in q
    base_q_kvar: np.ndarray  #: (H, n_bus) reactive load incl. the communities'
    v_min_pu: float = 0.90
    v_max_pu: float = 1.10
    p_line_max_kw: np.ndarray | None = None  #: per bus: limit of the line feeding it (None = no flow limits)

    def base_voltage_sq(self) -> np.ndarray:
        """Squared voltage (pu²) per hour and bus with every community's exchange at zero."""
        s_kva = self.ldf.s_base_mva * 1000.0
        p_flow = self.base_p_kw @ self.ldf.subtree.T
        q_flow = self.base_q_kvar @ self.ldf.subtree.T
        drop = (p_flow * self.ldf.r_pu + q_flow * self.ldf.x_pu) / s_kva
        drop[:, self.ldf.root] = 0.0
        return self.ldf.v_root_pu ** 2 - 2.0 * drop @ self.ldf.subtree

    def sensitivity(self) -> np.ndarray:
        """D[j, k]: resistance (pu) shared by the root→j and root→k paths; dv²_j = −2 D[j, k] p_k / S."""
        r = self.ldf.r_pu.copy()
        r[self.ldf.root] = 0.0
        return self.ldf.subtree.T @ (r[:, None] * self.ldf.subtree)


def _net_injection(h: int) -> sp.csr_matrix:
    """E: the community's net load per hour from its exchanged vector, p_grid + p_ETB − p_ETS − p_B2G − p_feed."""
    eye = sp.identity(h, format="csr")
    return sp.hstack([eye, eye, -eye, -eye, -eye]).tocsr()


def network_rows(feeder: Feeder, buses0: list[int], h: int) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray, list[str]]:
    """Network rows on the stacked exchanged vectors of the communities (at 0-based ``buses0``).

    Returns (A, lower, upper, kinds): squared voltages of every non-root bus,
    flows of limited lines (if any), and the market balance (23).
    """
    ldf = feeder.ldf
    e = _net_injection(h)
    s_kva = ldf.s_base_mva * 1000.0
    nonroot = [j for j in range(len(ldf.parent)) if j != ldf.root]
    d = feeder.sensitivity()
    vbase = feeder.base_voltage_sq()  # (H, n_bus)
    blocks_v = [sp.kron(sp.csr_matrix(-2.0 / s_kva * d[nonroot, b][:, None]), e) for b in buses0]
    a_rows = [sp.hstack(blocks_v)]
    v_now = vbase[:, nonroot].T.ravel()  # row order (bus, hour)
    lo = [feeder.v_min_pu ** 2 - v_now]
    hi = [feeder.v_max_pu ** 2 - v_now]
    kinds = ["voltage"] * (len(nonroot) * h)
    if feeder.p_line_max_kw is not None:
        limited = [j for j in nonroot if np.isfinite(feeder.p_line_max_kw[j])]
        if limited:
            flows = (feeder.base_p_kw @ ldf.subtree.T)[:, limited].T.ravel()
            a_rows.append(sp.hstack([sp.kron(sp.csr_matrix(ldf.subtree[limited, b][:, None]), e) for b in buses0]))
            cap = np.repeat(feeder.p_line_max_kw[limited], h)
            lo.append(-cap - flows)
            hi.append(cap - flows)
            kinds += ["flow"] * (len(limited) * h)
    eye = sp.identity(h, format="csr")
    zero = sp.csr_matrix((h, h))
    bal = sp.hstack([zero, -eye, eye, zero, zero])  # p_ETS − p_ETB
    a_rows.append(sp.hstack([bal] * len(buses0)))
    lo.append(np.zeros(h))
    hi.append(np.zeros(h))
    kinds += ["balance"] * h
    return sp.vstack(a_rows).tocsr(), np.concatenate(lo), np.concatenate(hi), kinds


class GridOperatorQP:
    """The coupling problem: z ← argmin Σ_i −λ_iᵀ z_i + ρ/2 ‖x_i − z_i‖² s.t. LinDistFlow limits and (23).

    z ≥ 0 (every exchanged quantity is non-negative). The z-update is the
    projection of v = x + λ/ρ onto the feasible set, and the network rows of
    hour t touch only hour t's exchanges: the problem splits into H small QPs
    (5N variables, one row per limited bus and the balance) with one and the
    same matrix, built once; ``solve`` passes new numbers. Each hour is solved
    with ``solver``, retried with ``fallback`` if that fails; an hour both fail
    keeps its previous z and is counted in ``failures`` (the engine's residuals
    show it). If the very first solve fails, :class:`InfeasibleGrid` is raised
    with where the base loads alone break the limits.
    """

    def __init__(self, feeder: Feeder, buses: list[int], h: int, solver: str = "daqp",
                 fallback: str | None = "highs") -> None:
        self.feeder, self.h = feeder, h
        self.buses0 = [int(b) - 1 for b in buses]
        self.size = 5 * h
        self.n = self.size * len(buses)
        a, lo, hi, kinds = network_rows(feeder, self.buses0, h)
        a = a.tocsr()
        row_hour = np.concatenate([np.tile(np.arange(h), kinds.count(k) // h) for k in ("voltage", "flow")]
                                  + [np.arange(h)])
        col_hour = np.arange(self.n) % h
        self.cols = [np.flatnonzero(col_hour == t) for t in range(h)]  # community-major, then the 5 quantities
        self.rows = [np.flatnonzero(row_hour == t) for t in range(h)]
        a0 = a[self.rows[0]][:, self.cols[0]]
        # rows scaled to unit norm: voltage rows have coefficients ~1e-5 per kW, the balance row 1
        self._scale = 1.0 / np.maximum(sp.linalg.norm(a0, axis=1), 1e-12)
        self.a_hour = sp.diags(self._scale) @ a0
        self.lo, self.hi = lo, hi
        m = len(self.cols[0])
        self.qp = RetryingQP(sp.identity(m, format="csc"), self.a_hour, solver, fallback)
        self._h = self.qp.hessian(sp.identity(m, format="csc"))
        self._lbx, self._ubx = np.zeros(m), np.full(m, np.inf)
        self.failures = 0  #: hours neither solver answered (their previous z was kept)
        self.z: np.ndarray | None = None

    @property
    def retries(self) -> int:
        """Hourly QP solves the fallback solver was tried on."""
        return self.qp.retries

    def solve(self, x: Sequence[np.ndarray], lam: Sequence[np.ndarray], rho: float) -> list[np.ndarray]:
        v = np.concatenate(x) + np.concatenate(lam) / rho
        z = np.empty(self.n) if self.z is None else self.z.copy()
        for t, (cols, rows) in enumerate(zip(self.cols, self.rows)):
            lo, hi = self.lo[rows] * self._scale, self.hi[rows] * self._scale
            sol = self.qp.solve(self._h, -v[cols], lo, hi, self._lbx, self._ubx)
            if sol.success:
                z[cols] = sol.u
            elif self.z is None:
                raise InfeasibleGrid(f"the grid operator's problem failed in hour {t} ({sol.status}); "
                                     + describe_base_violations(self.feeder))
            else:
                self.failures += 1
        self.z = z
        return list(z.reshape(len(x), self.size).copy())


class InfeasibleGrid(RuntimeError):
    """The operator's limits cannot be met."""


def describe_base_violations(feeder: Feeder) -> str:
    """Where the base loads alone break the voltage limits (the usual cause of an infeasible operator problem)."""
    v = np.sqrt(np.clip(feeder.base_voltage_sq(), 0, None))
    t, j = np.unravel_index(np.argmin(v), v.shape)
    return (f"with the communities at zero exchange, LinDistFlow gives min {v[t, j]:.4f} pu at bus {j + 1}, hour {t} "
            f"(limits {feeder.v_min_pu}..{feeder.v_max_pu} pu)")



def plan_voltages_pu(feeder: Feeder, communities: list[Community], x: list[np.ndarray]) -> np.ndarray:
    """LinDistFlow (squared form) voltages per hour and bus when each community exchanges ``x_i``."""
    h = communities[0].horizon
    e = _net_injection(h)
    n_bus = feeder.base_p_kw.shape[1]
    net = np.zeros((h, n_bus))
    for c, xi in zip(communities, x):
        net[:, c.bus - 1] += e @ xi
    d = feeder.sensitivity()
    v_sq = feeder.base_voltage_sq() - 2.0 / (feeder.ldf.s_base_mva * 1000.0) * net @ d.T
    return np.sqrt(np.clip(v_sq, 0.0, None))
