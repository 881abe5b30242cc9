"""Cooperative price-maker storage: units split by ADMM, the market's convex cost as the coupling party.

Units j (power P_j, energy E_j) buy x_j,t (kWh per step; negative = sell)
on a market whose price moves with the fleet's aggregate action: a linear
residual-demand curve, price_t(z) = π_t + k z (k ≥ 0, currency per kWh per
kWh traded), so the cost of the aggregate action z_t = Σ_j x_j,t is

    C_t(z) = π_t z + k z²            (convex; k = 0 is the price taker)

and the fleet solves min Σ_t C_t(Σ_j x_j,t) subject to, per unit,
−P_j Δ ≤ x_j,t ≤ P_j Δ, 0 ≤ S_j,0 + Σ_{l≤t} x_j,l ≤ E_j and S_j,T = S̄_j,T.
ADMM splits it by unit (Boyd et al. 2011, §7.3, the sharing problem): each
unit projects z_j − λ_j/ρ onto its own constraints (a sparse QP built once),
and the aggregate step has a closed form per time step,

    S_t = (V_t − N π_t/ρ) / (1 + 2 k N/ρ),   z_j,t = v_j,t − (π_t + 2 k S_t)/ρ,   v = x + λ/ρ.

Time decomposition (Cruise et al. 2019): decisions early in the horizon
depend on prices only up to a horizon set by the units' energy-to-power
ratio, so :func:`solve_rolling` solves windows of ``window`` steps, keeps
the first ``commit`` steps, carries the stored energy and moves on.

References
----------
- Solà Vilalta, Anjos and Cruise 2022: A. Solà Vilalta, M. F. Anjos and J. R. Cruise, "ADMM-based Unit and Time
    Decomposition for Price Arbitrage by Cooperative Price-Maker Electricity Storage Units," Modern Techniques
    of Very Large Optimization, Edinburgh, 2022.
- Cruise et al. 2019: J. R. Cruise, L. Flatley, R. J. Gibbens and S. Zachary, "Control of energy storage with
    market impact: Lagrangian approach and horizons," Operations Research 67(1):1–9, 2019.
- Boyd et al. 2011: S. Boyd, N. Parikh, E. Chu, B. Peleato and J. Eckstein, "Distributed Optimization and
    Statistical Learning via the Alternating Direction Method of Multipliers," Foundations and Trends in
    Machine Learning 3(1), 2011.
"""

from __future__ import annotations

from collections.abc import Sequence

import time
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from dercosim.planning.admm import ADMMResult, ADMMSettings, run_admm
from dercosim.planning.admm.qp import SparseQP
from dercosim.planning.sharing.blocks import Block, BlockAgent, InfeasibleBlock


@dataclass(frozen=True)
class StorageUnit:
    """One unit: power limit (kW), energy capacity (kWh), initial and final stored energy (kWh; final None = initial)."""

    p_max_kw: float
    e_max_kwh: float
    s0_kwh: float = 0.0
    s_end_kwh: float | None = None

    @property
    def s_end(self) -> float:
        return self.s0_kwh if self.s_end_kwh is None else self.s_end_kwh


@dataclass(frozen=True)
class ResidualDemand:
    """The market's price per step (currency/kWh) and its slope k (currency/kWh per kWh of net purchase)."""

    price: np.ndarray
    slope: float = 0.0

    def __post_init__(self) -> None:
        if self.slope < 0:
            raise ValueError(f"the residual-demand slope must be ≥ 0 (a convex cost), got {self.slope}")

    def cost(self, z: np.ndarray) -> float:
        """C(z) = Σ_t π_t z_t + k z_t² for the aggregate purchase z (kWh per step)."""
        z = np.asarray(z, float)
        return float(np.dot(self.price[:len(z)], z) + self.slope * np.dot(z, z))

    def clearing_price(self, z: np.ndarray) -> np.ndarray:
        """The price the market clears at when the fleet buys z (kWh per step)."""
        return self.price[:len(z)] + self.slope * np.asarray(z, float)


def unit_block(unit: StorageUnit, n_t: int, dt_h: float, s_end: float | None) -> Block:
    """A unit's limits as a block on [x (n_t), s (n_t)]: s_t − s_{t−1} − x_t = 0 (s_{−1} = S_0),
    |x| ≤ P Δ, 0 ≤ s ≤ E, s at the end = ``s_end`` (None: free). Its exchanged variables are x."""
    eye = sp.identity(n_t, format="csr")
    a = sp.hstack([-eye, eye - sp.eye(n_t, k=-1, format="csr")], format="csr")
    e = unit.p_max_kw * dt_h
    lbx = np.r_[np.full(n_t, -e), np.zeros(n_t)]
    ubx = np.r_[np.full(n_t, e), np.full(n_t, unit.e_max_kwh)]
    if s_end is not None:
        lbx[-1] = ubx[-1] = s_end
    rhs = np.zeros(n_t)
    rhs[0] = unit.s0_kwh
    return Block("unit", c=np.zeros(2 * n_t), a=a, lba=rhs, uba=rhs.copy(), lbx=lbx, ubx=ubx,
                 exchanged=np.arange(n_t), index={"x": slice(0, n_t), "s": slice(n_t, 2 * n_t)})


class MarketCoupling:
    """The aggregate step (closed form, vectorised over units and steps); see the module doc."""

    def __init__(self, market: ResidualDemand, t0: int, n_t: int) -> None:
        self.price = np.asarray(market.price, float)[t0:t0 + n_t]
        self.slope = market.slope

    def solve(self, x: Sequence[np.ndarray], lam: Sequence[np.ndarray], rho: float) -> list[np.ndarray]:
        v = np.asarray(x) + np.asarray(lam) / rho
        n = len(v)
        s = (v.sum(axis=0) - n * self.price / rho) / (1.0 + 2.0 * self.slope * n / rho)
        z = v - ((self.price + 2.0 * self.slope * s) / rho)[None, :]
        return list(z)


@dataclass
class FleetSolution:
    x_kwh: np.ndarray  #: (units, steps), bought per step (negative = sold)
    cost: float  #: C(Σ_j x_j) at the units' own schedules
    wall_s: float
    iterations: int = 0  #: ADMM iterations (summed over windows); 0 for the central solve
    converged: bool = True
    admm: list[ADMMResult] | None = None


def _check(units: list[StorageUnit], market: ResidualDemand) -> None:
    for j, u in enumerate(units):
        if not (u.p_max_kw > 0 and u.e_max_kwh > 0 and 0 <= u.s0_kwh <= u.e_max_kwh and 0 <= u.s_end <= u.e_max_kwh):
            raise ValueError(f"unit {j}: need P > 0, E > 0 and 0 ≤ S_0, S_T ≤ E, got {u}")
    if len(market.price) == 0:
        raise ValueError("the market has no price steps")


def solve_central(units: list[StorageUnit], market: ResidualDemand, dt_h: float = 1.0,
                  solver: str = "piqp") -> FleetSolution:
    """All units and the market in one QP (PIQP): the reference for ADMM."""
    _check(units, market)
    t0 = time.perf_counter()
    n_t, n_u = len(market.price), len(units)
    blocks = [unit_block(u, n_t, dt_h, u.s_end) for u in units]
    # variables: [x_1, s_1, …, x_N, s_N, z]; rows: each unit's, then z_t = Σ_j x_j,t
    n_var = 2 * n_t * n_u + n_t
    a = sp.hstack([sp.block_diag([b.a for b in blocks], format="csr"), sp.csr_matrix((n_t * n_u, n_t))],
                  format="csr")
    sum_rows = sp.hstack([sp.hstack([sp.identity(n_t), sp.csr_matrix((n_t, n_t))])] * n_u + [-sp.identity(n_t)],
                         format="csr")
    a = sp.vstack([a, sum_rows], format="csr")
    rhs = np.concatenate([b.lba for b in blocks] + [np.zeros(n_t)])
    lbx = np.concatenate([b.lbx for b in blocks] + [np.full(n_t, -np.inf)])
    ubx = np.concatenate([b.ubx for b in blocks] + [np.full(n_t, np.inf)])
    g = np.zeros(n_var)
    g[-n_t:] = market.price
    h = np.zeros(n_var)
    h[-n_t:] = 2.0 * market.slope
    qp = SparseQP(sp.diags(h), a, solver)
    sol = qp.solve(qp.hessian(sp.diags(h)), g, rhs, rhs, lbx, ubx)
    if not sol.success:
        raise InfeasibleBlock(f"central price-maker problem: {sol.status}")
    x = np.array([sol.u[2 * n_t * j:2 * n_t * j + n_t] for j in range(n_u)])
    return FleetSolution(x, market.cost(x.sum(axis=0)), time.perf_counter() - t0)


def solve_admm(units: list[StorageUnit], market: ResidualDemand, settings: ADMMSettings = ADMMSettings(rho=1.0),
               dt_h: float = 1.0) -> FleetSolution:
    """The whole horizon by ADMM, one subproblem per unit plus the aggregate."""
    return solve_rolling(units, market, settings, dt_h, window=None)


def solve_rolling(units: list[StorageUnit], market: ResidualDemand, settings: ADMMSettings = ADMMSettings(rho=1.0),
                  dt_h: float = 1.0, window: int | None = None, commit: int | None = None) -> FleetSolution:
    """ADMM over windows of ``window`` steps, keeping the first ``commit`` (default: half the window).

    Inside a window that does not reach the end the stored energy at its end
    is free; the last window ends at each unit's S̄_T. ``window=None``: one
    window, the whole horizon.
    """
    _check(units, market)
    t_start = time.perf_counter()
    n_t = len(market.price)
    window = n_t if window is None else int(window)
    commit = max(1, window // 2) if commit is None else int(commit)
    if not 1 <= commit <= window:
        raise ValueError(f"need 1 ≤ commit ({commit}) ≤ window ({window})")
    x = np.zeros((len(units), n_t))
    s = np.array([u.s0_kwh for u in units])
    t0, iterations, converged, results = 0, 0, True, []
    while t0 < n_t:
        last = t0 + window >= n_t
        n_w = n_t - t0 if last else window
        keep = n_w if last else commit
        agents = [BlockAgent(unit_block(replace(u, s0_kwh=float(s[j])), n_w, dt_h, u.s_end if last else None),
                             solver="piqp") for j, u in enumerate(units)]
        res = run_admm(agents, MarketCoupling(market, t0, n_w), settings)
        iterations += res.iterations
        converged &= res.converged
        results.append(res)
        xw = np.array([a.u[:n_w] for a in agents])
        x[:, t0:t0 + keep] = xw[:, :keep]
        s = s + xw[:, :keep].sum(axis=1)
        t0 += keep
    return FleetSolution(x, market.cost(x.sum(axis=0)), time.perf_counter() - t_start, iterations, converged, results)
