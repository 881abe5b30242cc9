"""Community-battery value stacking on a feeder (SPEC C, seed 000), as ADMM agents and a grid operator.

Each community i (hourly, H steps of Δt h) has a battery (1)–(4), an HVAC
thermal model (5)–(7), grid import, PV local use and feed-in, a local-market
buy (8)–(11), and a discharge split into battery-to-building,
battery-to-grid and local-market sale (18)–(22). Its cost (24):

    C_i = Σ_t π_g,t p_grid,t Δt  [+ π_peak · max_t p_grid,t  (two-part tariff)]
        + α_b Σ_t ((p_c Δt)² + (p_d Δt)²)                    (degradation)
        + Σ_t π_ET,t (p_ETB − p_ETS) Δt − Σ_t π_B2G,t p_B2G Δt − Σ_t π_feed,t p_feed Δt
        [+ β Σ_t (T_in,t − T_pref)²  (discomfort, off by default)]

with terminal energy ≥ initial energy. The community exchanges
``x_i = [p_grid, p_ETB, p_ETS, p_B2G, p_feed]`` (five blocks of H, kW) with
the grid operator, whose coupling problem keeps the copies ``z_i`` within the
LinDistFlow limits of the feeder (SPEC B: squared-voltage branch form with the
base loads at every bus, voltage and optional flow limits) and the
local-market balance (23) Σ_i (p_ETS − p_ETB) = 0.

Binaries (SPEC C item 5): charge/discharge (x) and buy/sell (y) are relaxed;
a small penalty on local-market buy and sell discourages doing both. After
ADMM, :func:`complementarity_violations` finds hours where both directions
are used and :meth:`CommunityQP.fix` forbids the weaker direction, and the
problem is re-solved (convex again). ``binaries="mixed_integer"`` instead
rounds inside every subproblem solve (relaxed solve, forbid the weaker
direction, re-solve, until none is left), then keeps the directions the last
iterate chose and re-runs ADMM on that convex problem (round, then polish):
a heuristic with no convergence guarantee for the rounded phase, which
usually stops at ``max_iter``. :meth:`CentralQP.solve_mixed_integer` gives
the integer optimum (MILP) to compare with.

Everything here is plain numpy/scipy/casadi; :mod:`controllers.admm.engine`
runs the iterations.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg  # noqa: F401 - sp.linalg.norm

from dercosim.controllers.admm.qp import SparseQP
from dercosim.grids.lindistflow import LinDistFlow

#: the exchanged quantities, each a block of H hourly values (kW)
EXCHANGED = ("p_grid_kw", "p_etb_kw", "p_ets_kw", "p_b2g_kw", "p_feed_kw")
#: the community's hourly decision variables, in this order, then one ``peak`` scalar
LOCAL = ("p_grid_kw", "p_local_kw", "p_feed_kw", "p_etb_kw", "p_ets_kw", "p_c_kw", "p_d_kw", "p_b2b_kw",
         "p_b2g_kw", "p_ac_kw", "e_kwh", "t_in_c")


@dataclass(frozen=True)
class Community:
    """One residential community with its co-located battery; arrays are hourly (length H)."""

    name: str
    bus: int  #: 1-based bus number
    load_kw: np.ndarray  #: inflexible building load
    pv_kw: np.ndarray  #: available PV
    t_out_c: np.ndarray  #: outdoor temperature
    q_kvar: np.ndarray  #: reactive load (fixed; known to the operator)
    e_max_kwh: float = 500.0
    e_min_kwh: float = 0.0
    e0_kwh: float = 250.0
    p_c_max_kw: float = 100.0
    p_d_max_kw: float = 100.0
    eta_c: float = 0.95  #: μ of (1)
    eta_d: float = 0.95  #: η of (1)
    hvac_p_min_kw: float = 0.0
    hvac_p_max_kw: float = 0.0
    hvac_mu: float = 3.0  #: + COP cooling, − COP heating
    hvac_c_kwh_per_c: float = 300.0
    hvac_r_c_per_kw: float = 0.05
    t_min_c: float = 20.0
    t_max_c: float = 26.0
    t0_c: float = 24.0
    t_pref_c: float = 23.0
    p_grid_max_kw: float = 1000.0
    p_et_max_kw: float = 100.0  #: local-market buy and sell limit
    p_b2b_max_kw: float = 100.0
    p_b2g_max_kw: float = 100.0
    e_end_min_kwh: float | None = None  #: terminal energy lower bound; None = e0 (SPEC C item 4)

    @property
    def horizon(self) -> int:
        return len(self.load_kw)


@dataclass(frozen=True)
class Market:
    """Prices (currency/kWh unless noted), hourly arrays of length H."""

    import_per_kwh: np.ndarray  #: retail energy price (TOU, or the flat energy part of the two-part tariff)
    b2g_per_kwh: np.ndarray  #: battery-to-grid price (wholesale spot)
    et_per_kwh: np.ndarray  #: local-market price (mid-rate)
    feed_per_kwh: np.ndarray  #: PV feed-in tariff
    peak_per_kw: float = 0.0  #: two-part tariff demand price per kW of the day's peak import (0 = TOU)
    degradation_per_kw2h: float = 1e-4  #: α_b, currency per (kWh)² per hour
    trade_penalty_per_kwh: float = 1e-3  #: the relaxation's small penalty on local-market buy and sell
    discomfort_per_c2: float = 0.0  #: β (SPEC C item 4: off by default)
    reg: float = 1e-6  #: tiny quadratic regularisation on every variable (makes the optimum unique)
    dt_h: float = 1.0


@dataclass(frozen=True)
class Streams:
    """Which value streams are allowed (the value-stream study switches one off at a time)."""

    b2b: bool = True
    b2g: bool = True
    trading: bool = True


@dataclass
class Fixings:
    """Directions forbidden per hour after a complementarity check (True = forbidden)."""

    no_charge: np.ndarray
    no_discharge: np.ndarray
    no_buy: np.ndarray
    no_sell: np.ndarray

    @classmethod
    def none(cls, h: int) -> Fixings:
        return cls(*(np.zeros(h, bool) for _ in range(4)))

    @property
    def count(self) -> int:
        return int(self.no_charge.sum() + self.no_discharge.sum() + self.no_buy.sum() + self.no_sell.sum())

    def copy(self) -> Fixings:
        return Fixings(self.no_charge.copy(), self.no_discharge.copy(), self.no_buy.copy(), self.no_sell.copy())

    def upper_bounds(self, block: dict[str, np.ndarray], ubx: np.ndarray) -> np.ndarray:
        """``ubx`` with the forbidden directions' variables (indices in ``block``) bounded to 0."""
        ub = ubx.copy()
        for name, forbidden in (("p_c_kw", self.no_charge), ("p_d_kw", self.no_discharge),
                                ("p_etb_kw", self.no_buy), ("p_ets_kw", self.no_sell)):
            ub[block[name][forbidden]] = 0.0
        return ub


class _Layout:
    """Index ranges of the community's variables."""

    def __init__(self, h: int) -> None:
        self.h = h
        self.block = {name: np.arange(k * h, (k + 1) * h) for k, name in enumerate(LOCAL)}
        self.peak = len(LOCAL) * h
        self.n = self.peak + 1
        self.exchanged = np.concatenate([self.block[name] for name in EXCHANGED])


def _community_matrices(c: Community, m: Market, streams: Streams) -> dict:
    """Cost (P, q), constraints (A, lba, uba) and bounds of one community, with no fixings."""
    h = c.horizon
    lay = _Layout(h)
    b = lay.block
    dt = m.dt_h
    n = lay.n
    p_diag = np.zeros(n)
    q = np.zeros(n)
    p_diag[:] = 2 * m.reg  # strictly convex: a unique optimum, and dual active-set solvers apply
    p_diag[b["p_c_kw"]] += 2 * m.degradation_per_kw2h * dt * dt
    p_diag[b["p_d_kw"]] += 2 * m.degradation_per_kw2h * dt * dt
    q[b["p_grid_kw"]] += m.import_per_kwh * dt
    q[lay.peak] += m.peak_per_kw
    q[b["p_etb_kw"]] += (m.et_per_kwh + m.trade_penalty_per_kwh) * dt
    q[b["p_ets_kw"]] += (-m.et_per_kwh + m.trade_penalty_per_kwh) * dt
    q[b["p_b2g_kw"]] -= m.b2g_per_kwh * dt
    q[b["p_feed_kw"]] -= m.feed_per_kwh * dt
    if m.discomfort_per_c2:
        p_diag[b["t_in_c"]] += 2 * m.discomfort_per_c2
        q[b["t_in_c"]] -= 2 * m.discomfort_per_c2 * c.t_pref_c

    rows: list[sp.spmatrix] = []
    lo: list[np.ndarray] = []
    hi: list[np.ndarray] = []
    eye = sp.identity(h, format="csr")
    shift = sp.eye(h, k=-1, format="csr")  # picks the previous hour

    def block_row(parts: dict[str, sp.spmatrix], peak: np.ndarray | None = None) -> sp.spmatrix:
        mat = sp.lil_matrix((h, n))
        for name, coef in parts.items():
            mat[:, b[name]] = coef
        if peak is not None:
            mat[:, lay.peak] = peak.reshape(-1, 1)
        return mat.tocsr()

    # (1) e_t − e_{t−1} − η_c p_c Δt + p_d Δt / η_d = 0 (e_{−1} = e0)
    rows.append(block_row({"e_kwh": eye - shift, "p_c_kw": -c.eta_c * dt * eye, "p_d_kw": dt / c.eta_d * eye}))
    rhs = np.zeros(h)
    rhs[0] = c.e0_kwh
    lo.append(rhs)
    hi.append(rhs)
    # (5) T_t − (1 − a) T_{t−1} + a μ R p_ac,t = a T_out,t (T_{−1} = T0), a = Δt / (C R)
    a = dt / (c.hvac_c_kwh_per_c * c.hvac_r_c_per_kw)
    if a >= 1:
        raise ValueError(f"community {c.name}: Δt/(C·R) = {a:.3g} must be < 1 for the thermal model")
    rows.append(block_row({"t_in_c": eye - (1 - a) * shift, "p_ac_kw": a * c.hvac_mu * c.hvac_r_c_per_kw * eye}))
    rhs = a * np.asarray(c.t_out_c, float)
    rhs[0] += (1 - a) * c.t0_c
    lo.append(rhs)
    hi.append(rhs.copy())
    # (11) p_grid + p_local + p_etb + p_b2b − p_c − p_ac = load
    rows.append(block_row({"p_grid_kw": eye, "p_local_kw": eye, "p_etb_kw": eye, "p_b2b_kw": eye,
                           "p_c_kw": -eye, "p_ac_kw": -eye}))
    lo.append(np.asarray(c.load_kw, float))
    hi.append(np.asarray(c.load_kw, float))
    # (18) p_d − p_b2b − p_b2g − p_ets = 0
    rows.append(block_row({"p_d_kw": eye, "p_b2b_kw": -eye, "p_b2g_kw": -eye, "p_ets_kw": -eye}))
    lo.append(np.zeros(h))
    hi.append(np.zeros(h))
    # (9) p_local + p_feed ≤ PV
    rows.append(block_row({"p_local_kw": eye, "p_feed_kw": eye}))
    lo.append(np.zeros(h))
    hi.append(np.asarray(c.pv_kw, float))
    # peak ≥ p_grid,t
    rows.append(block_row({"p_grid_kw": eye}, peak=-np.ones(h)))
    lo.append(np.full(h, -np.inf))
    hi.append(np.zeros(h))

    lbx = np.zeros(n)
    ubx = np.full(n, np.inf)

    def bound(name: str, low: float | np.ndarray, high: float | np.ndarray) -> None:
        lbx[b[name]] = low
        ubx[b[name]] = high

    bound("p_grid_kw", 0.0, c.p_grid_max_kw)
    bound("p_local_kw", 0.0, np.asarray(c.pv_kw, float))
    bound("p_feed_kw", 0.0, np.asarray(c.pv_kw, float))
    bound("p_etb_kw", 0.0, c.p_et_max_kw if streams.trading else 0.0)
    bound("p_ets_kw", 0.0, c.p_et_max_kw if streams.trading else 0.0)
    bound("p_c_kw", 0.0, c.p_c_max_kw)
    bound("p_d_kw", 0.0, c.p_d_max_kw)
    bound("p_b2b_kw", 0.0, c.p_b2b_max_kw if streams.b2b else 0.0)
    bound("p_b2g_kw", 0.0, c.p_b2g_max_kw if streams.b2g else 0.0)
    bound("p_ac_kw", c.hvac_p_min_kw, c.hvac_p_max_kw)
    e_low = np.full(h, c.e_min_kwh)
    e_end = c.e0_kwh if c.e_end_min_kwh is None else c.e_end_min_kwh
    e_low[-1] = min(max(c.e_min_kwh, e_end), c.e_max_kwh)  # terminal energy ≥ initial (SPEC C item 4)
    bound("e_kwh", e_low, c.e_max_kwh)
    bound("t_in_c", c.t_min_c, c.t_max_c)
    lbx[lay.peak], ubx[lay.peak] = 0.0, np.inf
    if c.e0_kwh > c.e_max_kwh or c.e0_kwh < c.e_min_kwh:
        raise ValueError(f"community {c.name}: initial energy {c.e0_kwh} kWh outside [{c.e_min_kwh}, {c.e_max_kwh}]")
    return {"layout": lay, "P": sp.diags(p_diag).tocsc(), "q": q, "A": sp.vstack(rows).tocsc(),
            "lba": np.concatenate(lo), "uba": np.concatenate(hi), "lbx": lbx, "ubx": ubx}


def community_cost(c: Community, m: Market, u: np.ndarray) -> float:
    """The community's cost (24) at variables ``u`` (currency), without the regularisation and trade penalty."""
    lay = _Layout(c.horizon)
    v = {k: u[lay.block[k]] for k in LOCAL}
    dt = m.dt_h
    cost = float(np.sum(m.import_per_kwh * v["p_grid_kw"]) * dt + m.peak_per_kw * np.max(v["p_grid_kw"]))
    cost += m.degradation_per_kw2h * float(np.sum((v["p_c_kw"] * dt) ** 2 + (v["p_d_kw"] * dt) ** 2))
    cost += float(np.sum(m.et_per_kwh * (v["p_etb_kw"] - v["p_ets_kw"])) * dt)
    cost -= float(np.sum(m.b2g_per_kwh * v["p_b2g_kw"]) * dt + np.sum(m.feed_per_kwh * v["p_feed_kw"]) * dt)
    if m.discomfort_per_c2:
        cost += m.discomfort_per_c2 * float(np.sum((v["t_in_c"] - c.t_pref_c) ** 2))
    return cost


def _objective(p: sp.spmatrix, q: np.ndarray, u: np.ndarray, c: Community, m: Market) -> float:
    const = m.discomfort_per_c2 * c.t_pref_c ** 2 * c.horizon
    return float(0.5 * u @ (p @ u) + q @ u + const)


def unpack(c: Community, u: np.ndarray) -> dict[str, np.ndarray]:
    """The hourly variables of ``u`` by name (plus ``peak_kw``)."""
    lay = _Layout(c.horizon)
    out = {k: u[lay.block[k]].copy() for k in LOCAL}
    out["peak_kw"] = np.array([u[lay.peak]])
    return out


class CommunityQP:
    """A community's ADMM subproblem, built once: ``solve(z, λ, ρ)`` returns its exchanged vector (5H, kW).

    Minimises C_i(u) + λᵀ(S u − z) + ρ/2 ‖S u − z‖², S selecting the exchanged
    variables. On a solver failure the previous solution is kept and counted
    in ``failures`` (never silently: the engine's residuals show it too).
    """

    def __init__(self, community: Community, market: Market, streams: Streams = Streams(), solver: str = "osqp",
                 mixed_integer: bool = False, fallback: str | None = "highs") -> None:
        self.community, self.market, self.streams = community, market, streams
        mats = _community_matrices(community, market, streams)
        self.layout: _Layout = mats["layout"]
        self.size = len(self.layout.exchanged)
        self._p, self._q, self._a = mats["P"], mats["q"], mats["A"]
        self._lba, self._uba, self._lbx0, self._ubx0 = mats["lba"], mats["uba"], mats["lbx"], mats["ubx"]
        self.fixings = Fixings.none(community.horizon)
        self._ubx = self._ubx0.copy()
        self.mixed_integer = mixed_integer
        self._mask = np.zeros(self.layout.n)
        self._mask[self.layout.exchanged] = 1.0
        self.qp = SparseQP(self._p, self._a, solver)
        self.fallback_qp = SparseQP(self._p, self._a, fallback) if fallback and fallback != solver else None
        self._rho = None
        self._h = self._h_fb = None
        self.u = np.zeros(self.layout.n)
        self.solves = 0
        self.retries = 0
        self.failures = 0

    def fix(self, fixings: Fixings) -> None:
        """Forbid the given directions (upper bound 0) from now on."""
        self.fixings = fixings
        self._ubx = self._bounds_with(fixings)

    def _bounds_with(self, f: Fixings) -> np.ndarray:
        return f.upper_bounds(self.layout.block, self._ubx0)

    def _solve_u(self, g: np.ndarray, ubx: np.ndarray) -> np.ndarray | None:
        self.solves += 1
        sol = self.qp.solve(self._h, g, self._lba, self._uba, self._lbx0, ubx)
        if not sol.success and self.fallback_qp is not None:
            self.retries += 1
            sol = self.fallback_qp.solve(self._h_fb, g, self._lba, self._uba, self._lbx0, ubx)
        return sol.u if sol.success else None

    def solve(self, z: np.ndarray, lam: np.ndarray, rho: float) -> np.ndarray:
        if rho != self._rho:
            self._rho = rho
            self._h = self.qp.hessian(self._p + rho * sp.diags(self._mask))
            if self.fallback_qp is not None:
                self._h_fb = self.fallback_qp.hessian(self._p + rho * sp.diags(self._mask))
        g = self._q.copy()
        g[self.layout.exchanged] += lam - rho * z
        u = self._solve_u(g, self._ubx)
        f = self.fixings
        for _ in range(4 if self.mixed_integer else 0):  # round: forbid the weaker direction until none is left
            if u is None:
                break
            f2 = complementarity_fixings(self.community, u, base=f)
            if f2.count == f.count:
                break
            f = f2
            u2 = self._solve_u(g, self._bounds_with(f))
            u = u2 if u2 is not None else u
        if u is None:
            self.failures += 1
        else:
            self.u = u
        return self.u[self.layout.exchanged].copy()

    def cost(self) -> float:
        """Cost (24) of the latest solution."""
        return community_cost(self.community, self.market, self.u)

    def objective(self) -> float:
        """What the subproblem minimises besides the ADMM terms: cost (24) + trade penalty + regularisation."""
        return _objective(self._p, self._q, self.u, self.community, self.market)


def complementarity_fixings(c: Community, u: np.ndarray, tol_kw: float = 1e-2, base: Fixings | None = None,
                           keep_choices: bool = False) -> Fixings:
    """Forbid directions on top of ``base``: where charge and discharge (or local buy and sell) both exceed
    ``tol_kw``, the smaller one; with ``keep_choices`` also, where exactly one is used, the unused one."""
    v = unpack(c, u)
    f = (base or Fixings.none(c.horizon)).copy()
    for a, b, no_a, no_b in (("p_c_kw", "p_d_kw", f.no_charge, f.no_discharge),
                             ("p_etb_kw", "p_ets_kw", f.no_buy, f.no_sell)):
        used_a, used_b = v[a] > tol_kw, v[b] > tol_kw
        no_b |= used_a & used_b & (v[a] >= v[b])
        no_a |= used_a & used_b & (v[a] < v[b])
        if keep_choices:
            no_b |= used_a & ~used_b
            no_a |= used_b & ~used_a
    return f


def complementarity_violations(c: Community, u: np.ndarray, tol_kw: float = 1e-2) -> int:
    """Hours in which both charge and discharge, or both local buy and sell, exceed ``tol_kw``."""
    v = unpack(c, u)
    return int(np.sum(np.minimum(v["p_c_kw"], v["p_d_kw"]) > tol_kw)
               + np.sum(np.minimum(v["p_etb_kw"], v["p_ets_kw"]) > tol_kw))


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
        self.qp = SparseQP(sp.identity(m, format="csc"), self.a_hour, solver)
        self.fallback_qp = SparseQP(sp.identity(m, format="csc"), self.a_hour, fallback) if fallback else None
        self._h = self.qp.hessian(sp.identity(m, format="csc"))
        self._h_fb = self.fallback_qp.hessian(sp.identity(m, format="csc")) if self.fallback_qp else None
        self._lbx, self._ubx = np.zeros(m), np.full(m, np.inf)
        self.solves = 0
        self.retries = 0
        self.failures = 0
        self.z: np.ndarray | None = None

    def solve(self, x: list[np.ndarray], lam: list[np.ndarray], rho: float) -> list[np.ndarray]:
        v = np.concatenate(x) + np.concatenate(lam) / rho
        z = np.empty(self.n) if self.z is None else self.z.copy()
        for t, (cols, rows) in enumerate(zip(self.cols, self.rows)):
            lo, hi = self.lo[rows] * self._scale, self.hi[rows] * self._scale
            self.solves += 1
            sol = self.qp.solve(self._h, -v[cols], lo, hi, self._lbx, self._ubx)
            if not sol.success and self.fallback_qp is not None:
                self.retries += 1
                sol = self.fallback_qp.solve(self._h_fb, -v[cols], lo, hi, self._lbx, self._ubx)
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


# ---------------------------------------------------------------- the whole problem in one QP


@dataclass
class Solution:
    """A value-stacking solution: per-community variables and costs."""

    u: list[np.ndarray]
    costs: np.ndarray  #: per community, currency
    x: list[np.ndarray] = field(default_factory=list)  #: exchanged vectors
    objective: float = float("nan")  #: cost + trade penalty + regularisation (what the solvers minimise)

    @property
    def total_cost(self) -> float:
        return float(np.sum(self.costs))


class CentralQP:
    """The same model as one QP (all communities, the network rows on their exchanged vectors).

    Solved with ``solver`` (interior point: accurate on this strictly convex
    QP) and, if that reports a failure, again with ``fallback``.
    """

    def __init__(self, communities: list[Community], market: Market, feeder: Feeder, streams: Streams = Streams(),
                 solver: str = "ipopt", fallback: str | None = "highs") -> None:
        self.communities, self.market = communities, market
        h = communities[0].horizon
        mats = [_community_matrices(c, market, streams) for c in communities]
        self.layouts = [mt["layout"] for mt in mats]
        offsets = np.cumsum([0] + [lay.n for lay in self.layouts])
        self.offsets = offsets
        n = int(offsets[-1])
        select = []
        for k, lay in enumerate(self.layouts):
            s = sp.lil_matrix((len(lay.exchanged), n))
            s[np.arange(len(lay.exchanged)), offsets[k] + lay.exchanged] = 1.0
            select.append(s.tocsr())
        a_net, lo_net, hi_net, _ = network_rows(feeder, [c.bus - 1 for c in communities], h)
        self.a = sp.vstack([sp.block_diag([mt["A"] for mt in mats]), a_net @ sp.vstack(select)]).tocsc()
        self.lba = np.concatenate([mt["lba"] for mt in mats] + [lo_net])
        self.uba = np.concatenate([mt["uba"] for mt in mats] + [hi_net])
        self.lbx = np.concatenate([mt["lbx"] for mt in mats])
        self._ubx0 = [mt["ubx"] for mt in mats]
        self.p = sp.block_diag([mt["P"] for mt in mats]).tocsc()
        self.q = np.concatenate([mt["q"] for mt in mats])
        self.qp = SparseQP(self.p, self.a, solver)
        self.fallback_qp = SparseQP(self.p, self.a, fallback) if fallback and fallback != solver else None
        self.h_dm = self.qp.hessian(self.p)
        self.feeder = feeder
        self.retries = 0  #: solves the fallback answered

    def solve(self, fixings: list[Fixings] | None = None) -> Solution:
        ubx = self._ubx0 if fixings is None else [
            f.upper_bounds(lay.block, ub0) for f, lay, ub0 in zip(fixings, self.layouts, self._ubx0)]
        args = (self.h_dm, self.q, self.lba, self.uba, self.lbx, np.concatenate(ubx))
        sol = self.qp.solve(*args)
        if not sol.success and self.fallback_qp is not None:
            first = sol.status or "no status"
            sol = self.fallback_qp.solve(*args)
            self.retries += int(sol.success)
            if not sol.success:
                sol.status = f"{self.qp.solver}: {first}; {self.fallback_qp.solver}: {sol.status or 'no status'}"
        if not sol.success:
            raise InfeasibleGrid(f"the centralised problem failed ({sol.status}); "
                                 + describe_base_violations(self.feeder))
        us = [sol.u[self.offsets[k]:self.offsets[k + 1]] for k in range(len(self.communities))]
        costs = np.array([community_cost(c, self.market, u) for c, u in zip(self.communities, us)])
        objective = _objective(self.p, self.q, sol.u, self.communities[0], self.market) + sum(
            self.market.discomfort_per_c2 * c.t_pref_c ** 2 * c.horizon for c in self.communities[1:])
        return Solution(u=us, costs=costs, x=[u[lay.exchanged] for u, lay in zip(us, self.layouts)],
                        objective=objective)


    def solve_mixed_integer(self, tangents: int = 8, time_limit_s: float = 120.0,
                            mip_rel_gap: float = 1e-4) -> tuple[Solution, str]:
        """The problem with its binaries (charge xor discharge, buy xor sell per hour) as one MILP (HiGHS).

        HiGHS takes no mixed-integer QP, so the quadratic degradation α (p Δt)²
        becomes its epigraph over ``tangents`` tangent lines on [0, p_max]
        (an under-estimate by at most α (p_max Δt / (2 (tangents − 1)))² per
        hour and direction); the tiny regularisation is dropped. Costs are
        re-evaluated exactly at the solution. Returns the solution and HiGHS'
        status; raises :class:`InfeasibleGrid` if there is no integer point.
        """
        import casadi as ca

        from dercosim.controllers.admm.qp import to_dm

        m = self.market
        if m.discomfort_per_c2:
            raise ValueError("solve_mixed_integer: the discomfort term is quadratic in T_in; "
                             "set discomfort_per_c2 = 0 (the default) for the MILP benchmark")
        if tangents < 2:
            raise ValueError(f"tangents must be >= 2, got {tangents}")
        n_u = int(self.offsets[-1])
        lo, hi = [], []
        extra_q, extra_lb, extra_ub, discrete = [], [], [], []
        n_x = n_u
        cols: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (row, col, value) triplets of the new rows
        row = 0
        a_dt = m.degradation_per_kw2h * m.dt_h ** 2
        ubx = np.concatenate(self._ubx0)
        for k, (c, lay) in enumerate(zip(self.communities, self.layouts)):
            off, h = int(self.offsets[k]), lay.h
            idx = {name: off + lay.block[name] for name in ("p_c_kw", "p_d_kw", "p_etb_kw", "p_ets_kw")}
            # epigraph variables d_c, d_d (H each) and binaries x (charge), y (buy)
            d_c, d_d = n_x + np.arange(h), n_x + h + np.arange(h)
            xb, yb = n_x + 2 * h + np.arange(h), n_x + 3 * h + np.arange(h)
            n_x += 4 * h
            extra_q += [np.ones(2 * h) if a_dt > 0 else np.zeros(2 * h), np.zeros(2 * h)]
            extra_lb += [np.zeros(4 * h)]
            extra_ub += [np.full(2 * h, np.inf), np.ones(2 * h)]
            discrete += [False] * (2 * h) + [True] * (2 * h)
            t = np.arange(h)
            for var, d, pmax in ((idx["p_c_kw"], d_c, c.p_c_max_kw), (idx["p_d_kw"], d_d, c.p_d_max_kw)):
                if a_dt > 0:
                    for pj in np.linspace(0.0, pmax, tangents):  # d ≥ 2 a p_j p − a p_j²
                        cols.append((row + t, d, np.ones(h)))
                        cols.append((row + t, var, np.full(h, -2.0 * a_dt * pj)))
                        lo.append(np.full(h, -a_dt * pj * pj))
                        hi.append(np.full(h, np.inf))
                        row += h
            for var, b, cap, on in ((idx["p_c_kw"], xb, c.p_c_max_kw, True), (idx["p_d_kw"], xb, c.p_d_max_kw, False),
                                    (idx["p_etb_kw"], yb, ubx[idx["p_etb_kw"]], True),
                                    (idx["p_ets_kw"], yb, ubx[idx["p_ets_kw"]], False)):
                cap = np.broadcast_to(np.minimum(cap, 1e4), (h,)).astype(float)
                # on: p ≤ cap·b ; off: p ≤ cap·(1 − b)  ⇔  p + cap·b ≤ cap
                cols.append((row + t, var, np.ones(h)))
                cols.append((row + t, b, -cap if on else cap))
                lo.append(np.full(h, -np.inf))
                hi.append(np.zeros(h) if on else cap)
                row += h
        r = np.concatenate([x[0] for x in cols])
        cc = np.concatenate([x[1] for x in cols])
        v = np.concatenate([x[2] for x in cols])
        a_new = sp.csr_matrix((v, (r, cc)), shape=(row, n_x))
        a_old = sp.hstack([self.a, sp.csr_matrix((self.a.shape[0], n_x - n_u))])
        a_all = sp.vstack([a_old, a_new]).tocsc()
        lba = np.concatenate([self.lba] + lo)
        uba = np.concatenate([self.uba] + hi)
        g = np.concatenate([self.q] + extra_q)  # the quadratic degradation is now in d
        lbx = np.concatenate([self.lbx] + extra_lb)
        ubx_all = np.concatenate([ubx] + extra_ub)
        a_dm = to_dm(a_all)
        solver = ca.conic("milp", "highs", {"a": a_dm.sparsity()},
                          {"discrete": [False] * n_u + discrete, "error_on_fail": False,
                           "highs": {"output_flag": False, "time_limit": float(time_limit_s),
                                     "mip_rel_gap": float(mip_rel_gap)}})
        res = solver(g=ca.DM(g), a=a_dm, lba=ca.DM(lba), uba=ca.DM(uba), lbx=ca.DM(lbx), ubx=ca.DM(ubx_all))
        stats = solver.stats()
        status = str(stats.get("return_status", ""))
        u_all = np.asarray(res["x"].full()).ravel()
        if not np.all(np.isfinite(u_all)) or "nfeasible" in status or not (stats.get("success") or "Time limit" in status):
            raise InfeasibleGrid(f"the mixed-integer problem failed ({status or 'no status'}); "
                                 + describe_base_violations(self.feeder))
        us = [u_all[self.offsets[k]:self.offsets[k + 1]] for k in range(len(self.communities))]
        costs = np.array([community_cost(c, m, u) for c, u in zip(self.communities, us)])
        return Solution(u=us, costs=costs, x=[u[lay.exchanged] for u, lay in zip(us, self.layouts)]), status

    def solve_fix_and_resolve(self, rounds: int = 3, relaxed: Solution | None = None
                              ) -> tuple[Solution, list[Fixings], int]:
        """The relaxed optimum, then SPEC C item 5 centrally: fix each violated pair's smaller direction, re-solve.

        Returns the final solution, the fixings and the complementarity
        violations left. Its cost is an upper bound of the mixed-integer
        problem's optimum (a heuristic's feasible point); :meth:`solve`
        without fixings gives the lower bound. ``relaxed``: that solution, if already solved.
        """
        sol = relaxed if relaxed is not None else self.solve()
        fixings = [Fixings.none(c.horizon) for c in self.communities]
        for _ in range(rounds):
            new = [complementarity_fixings(c, u, base=f) for c, u, f in zip(self.communities, sol.u, fixings)]
            if all(a.count == b.count for a, b in zip(new, fixings)):
                break
            fixings = new
            sol = self.solve(fixings)
        left = sum(complementarity_violations(c, u) for c, u in zip(self.communities, sol.u))
        return sol, fixings, int(left)


def with_streams(streams: Streams, **changes: bool) -> Streams:
    return replace(streams, **changes)


# ---------------------------------------------------------------- one planning run


@dataclass
class PlanResult:
    """What :func:`solve_value_stacking` found. Costs in currency, voltages in pu."""

    solution: Solution  #: the communities' final variables (after any fix-and-resolve)
    runs: list  #: the ADMMResult of each ADMM run (the first, then one per fix round)
    relaxed_cost: float  #: total cost (24) after the first (relaxed) ADMM run
    relaxed_objective: float  #: its objective (cost + trade penalty + regularisation)
    central_cost: float | None  #: cost (24) at the centralised optimum of the same relaxed problem
    central_objective: float | None  #: that optimum's objective
    central_fixed_cost: float | None  #: centralised optimum with the same binaries fixed as the final ADMM
    violations: int  #: complementarity violations after the first run
    violations_left: int  #: after the fix rounds
    fixed: int  #: directions forbidden by the fix rounds
    solver_failures: int  #: subproblem solves that failed even on the fallback solver (previous answer kept)
    solver_retries: int  #: subproblem solves the fallback solver answered
    v_plan_pu: np.ndarray  #: (H, n_bus) LinDistFlow voltages (squared form) with the final plan
    central_mixed_integer_cost: float | None = None  #: binaries="mixed_integer": the centralised MILP's cost
    fixings: list[Fixings] = field(default_factory=list)  #: per community, the directions forbidden at the end

    @property
    def iterations(self) -> int:
        return int(sum(r.iterations for r in self.runs))

    @property
    def converged(self) -> bool:
        """Whether the run that produced the final plan converged (the rounded phase of mixed_integer never counts)."""
        return bool(self.runs[-1].converged)

    @property
    def time_to_decision_s(self) -> float:
        return float(sum(r.time_to_decision_s for r in self.runs))

    @property
    def wall_s(self) -> float:
        return float(sum(r.wall_s for r in self.runs))

    @property
    def gap_pct(self) -> float | None:
        """Relative gap of the relaxed ADMM objective to the centralised optimum of the same problem, %.

        Signed: slightly negative when the ADMM copies still violate the
        network rows by the residual it stopped at.
        """
        if self.central_objective is None:
            return None
        return 100.0 * (self.relaxed_objective - self.central_objective) / abs(self.central_objective)


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


def solve_value_stacking(communities: list[Community], market: Market, feeder: Feeder, settings,
                         streams: Streams = Streams(), binaries: str = "relaxed", central: bool = True,
                         fix_rounds: int = 3, agent_solver: str = "osqp", operator_solver: str = "daqp") -> PlanResult:
    """ADMM between the communities and the grid operator, then complementarity fix-and-resolve (SPEC C item 5).

    ``settings`` is an :class:`controllers.admm.engine.ADMMSettings`. With
    ``central`` the same problem is also solved in one QP (relaxed, and with
    the final fixings) for the cost gap, and with ``binaries =
    "mixed_integer"`` as a MILP (:meth:`CentralQP.solve_mixed_integer`).
    """
    from dercosim.controllers.admm.engine import run_admm

    if binaries not in ("relaxed", "mixed_integer"):
        raise ValueError(f"binaries must be 'relaxed' or 'mixed_integer', got {binaries!r}")
    h = communities[0].horizon
    agents = [CommunityQP(c, market, streams, agent_solver, mixed_integer=binaries == "mixed_integer")
              for c in communities]
    operator = GridOperatorQP(feeder, [c.bus for c in communities], h, operator_solver)

    def total() -> float:
        return float(sum(a.cost() for a in agents))

    runs = [run_admm(agents, operator, settings, objective=total)]
    relaxed_cost = total()
    relaxed_objective = float(sum(a.objective() for a in agents))
    fixings = [complementarity_fixings(c, a.u, base=a.fixings) for c, a in zip(communities, agents)]
    violations = sum(complementarity_violations(c, a.u) for c, a in zip(communities, agents))
    if binaries == "mixed_integer":  # polish: keep the directions the rounded run chose, re-run convex
        for c, a in zip(communities, agents):
            a.fix(complementarity_fixings(c, a.u, base=a.fixings, keep_choices=True))
            a.mixed_integer = False
        last = runs[-1]
        runs.append(run_admm(agents, operator, settings, z0=last.z, lam0=last.lam, objective=total))
        fixings = [complementarity_fixings(c, a.u, base=a.fixings) for c, a in zip(communities, agents)]
    for _ in range(fix_rounds if runs[-1].converged else 0):  # fixing an unconverged point fixes noise
        if all(f.count == a.fixings.count for f, a in zip(fixings, agents)):
            break
        for a, f in zip(agents, fixings):
            a.fix(f)
        last = runs[-1]
        runs.append(run_admm(agents, operator, settings, z0=last.z, lam0=last.lam, objective=total))
        fixings = [complementarity_fixings(c, a.u, base=a.fixings) for c, a in zip(communities, agents)]
    left = sum(complementarity_violations(c, a.u) for c, a in zip(communities, agents))
    central_cost = central_fixed = central_objective = central_mi = None
    if central:
        cq = CentralQP(communities, market, feeder, streams)
        best = cq.solve()
        central_cost, central_objective = best.total_cost, best.objective
        if any(a.fixings.count for a in agents):
            central_fixed = cq.solve([a.fixings for a in agents]).total_cost
        else:
            central_fixed = central_cost
        if binaries == "mixed_integer":
            central_mi = cq.solve_mixed_integer()[0].total_cost
    us = [a.u.copy() for a in agents]
    xs = [u[a.layout.exchanged] for u, a in zip(us, agents)]
    sol = Solution(u=us, costs=np.array([community_cost(c, market, u) for c, u in zip(communities, us)]), x=xs)
    return PlanResult(solution=sol, runs=runs, relaxed_cost=relaxed_cost, relaxed_objective=relaxed_objective,
                      central_cost=central_cost, central_objective=central_objective,
                      central_fixed_cost=central_fixed, violations=violations, violations_left=left,
                      fixed=int(sum(a.fixings.count for a in agents)),
                      solver_failures=int(sum(a.failures for a in agents) + operator.failures),
                      solver_retries=int(sum(a.retries for a in agents) + operator.retries),
                      v_plan_pu=plan_voltages_pu(feeder, communities, xs), central_mixed_integer_cost=central_mi,
                      fixings=[a.fixings.copy() for a in agents])
