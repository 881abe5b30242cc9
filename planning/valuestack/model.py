"""The value-stacking model of one community: its variables, constraints and cost as sparse matrices.

Jiang & Wang (2024), eqs. (1)–(11) and (18)–(24); see the package docstring
for the model and the resolutions of the paper's gaps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp


#: the exchanged quantities, each a block of H hourly values (kW)
EXCHANGED = ("p_grid_kw", "p_etb_kw", "p_ets_kw", "p_b2g_kw", "p_feed_kw")
#: the community's hourly decision variables, in this order, then one ``peak`` scalar
LOCAL = ("p_grid_kw", "p_local_kw", "p_feed_kw", "p_etb_kw", "p_ets_kw", "p_charge_kw", "p_discharge_kw", "p_b2b_kw",
         "p_b2g_kw", "p_ac_kw", "soc_kwh", "t_in_c")


@dataclass(frozen=True)
class Community:
    """One residential community with its co-located battery; arrays are hourly (length H)."""

    name: str
    bus: int  #: 1-based bus number
    load_kw: np.ndarray  #: inflexible building load
    pv_kw: np.ndarray  #: available PV
    t_out_c: np.ndarray  #: outdoor temperature
    q_kvar: np.ndarray  #: reactive load (fixed; known to the operator)
    soc_max_kwh: float = 500.0
    soc_min_kwh: float = 0.0
    soc_init_kwh: float = 250.0
    p_charge_max_kw: float = 100.0
    p_discharge_max_kw: float = 100.0
    eta_charge: float = 0.95  #: μ of (1)
    eta_discharge: float = 0.95  #: η of (1)
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
    soc_end_min_kwh: float | None = None  #: terminal energy lower bound; None = e0 (the paper leaves the end of day open; without it the optimiser drains the battery)

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
    discomfort_per_c2: float = 0.0  #: β (off by default: Jiang & Wang 2024 define it but leave it out of (24))
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
        for name, forbidden in (("p_charge_kw", self.no_charge), ("p_discharge_kw", self.no_discharge),
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
    p_diag[b["p_charge_kw"]] += 2 * m.degradation_per_kw2h * dt * dt
    p_diag[b["p_discharge_kw"]] += 2 * m.degradation_per_kw2h * dt * dt
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
    rows.append(block_row({"soc_kwh": eye - shift, "p_charge_kw": -c.eta_charge * dt * eye, "p_discharge_kw": dt / c.eta_discharge * eye}))
    rhs = np.zeros(h)
    rhs[0] = c.soc_init_kwh
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
                           "p_charge_kw": -eye, "p_ac_kw": -eye}))
    lo.append(np.asarray(c.load_kw, float))
    hi.append(np.asarray(c.load_kw, float))
    # (18) p_d − p_b2b − p_b2g − p_ets = 0
    rows.append(block_row({"p_discharge_kw": eye, "p_b2b_kw": -eye, "p_b2g_kw": -eye, "p_ets_kw": -eye}))
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
    bound("p_charge_kw", 0.0, c.p_charge_max_kw)
    bound("p_discharge_kw", 0.0, c.p_discharge_max_kw)
    bound("p_b2b_kw", 0.0, c.p_b2b_max_kw if streams.b2b else 0.0)
    bound("p_b2g_kw", 0.0, c.p_b2g_max_kw if streams.b2g else 0.0)
    bound("p_ac_kw", c.hvac_p_min_kw, c.hvac_p_max_kw)
    e_low = np.full(h, c.soc_min_kwh)
    e_end = c.soc_init_kwh if c.soc_end_min_kwh is None else c.soc_end_min_kwh
    e_low[-1] = min(max(c.soc_min_kwh, e_end), c.soc_max_kwh)  # terminal energy ≥ initial (the paper leaves the end of day open; without it the optimiser drains the battery)
    bound("soc_kwh", e_low, c.soc_max_kwh)
    bound("t_in_c", c.t_min_c, c.t_max_c)
    lbx[lay.peak], ubx[lay.peak] = 0.0, np.inf
    if c.soc_init_kwh > c.soc_max_kwh or c.soc_init_kwh < c.soc_min_kwh:
        raise ValueError(f"community {c.name}: initial energy {c.soc_init_kwh} kWh outside [{c.soc_min_kwh}, {c.soc_max_kwh}]")
    return {"layout": lay, "P": sp.diags(p_diag).tocsc(), "q": q, "A": sp.vstack(rows).tocsc(),
            "lba": np.concatenate(lo), "uba": np.concatenate(hi), "lbx": lbx, "ubx": ubx}


def community_cost(c: Community, m: Market, u: np.ndarray) -> float:
    """The community's cost (24) at variables ``u`` (currency), without the regularisation and trade penalty."""
    lay = _Layout(c.horizon)
    v = {k: u[lay.block[k]] for k in LOCAL}
    dt = m.dt_h
    cost = float(np.sum(m.import_per_kwh * v["p_grid_kw"]) * dt + m.peak_per_kw * np.max(v["p_grid_kw"]))
    cost += m.degradation_per_kw2h * float(np.sum((v["p_charge_kw"] * dt) ** 2 + (v["p_discharge_kw"] * dt) ** 2))
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



def complementarity_fixings(c: Community, u: np.ndarray, tol_kw: float = 1e-2, base: Fixings | None = None,
                           keep_choices: bool = False) -> Fixings:
    """Forbid directions on top of ``base``: where charge and discharge (or local buy and sell) both exceed
    ``tol_kw``, the smaller one; with ``keep_choices`` also, where exactly one is used, the unused one."""
    v = unpack(c, u)
    f = (base or Fixings.none(c.horizon)).copy()
    for a, b, no_a, no_b in (("p_charge_kw", "p_discharge_kw", f.no_charge, f.no_discharge),
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
    return int(np.sum(np.minimum(v["p_charge_kw"], v["p_discharge_kw"]) > tol_kw)
               + np.sum(np.minimum(v["p_etb_kw"], v["p_ets_kw"]) > tol_kw))

def with_streams(streams: Streams, **changes: bool) -> Streams:
    return replace(streams, **changes)
