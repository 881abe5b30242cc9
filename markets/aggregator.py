"""Day-ahead aggregator of a residential battery fleet: one virtual battery, a MILP on HiGHS, bids and targets.

Phase 1 (Couraud et al. 2022, eqs. (1)–(4)): the fleet is one virtual
battery — capacities and powers summed, efficiencies capacity-weighted (3) —
with the fleet's forecast demand ``D_t`` and production ``P_t`` per market
interval (kWh). Over the day's intervals the MILP

    minimise   Σ_t π_i,t · i_t − π_e,t · e_t                      (1)
    subject to i_t − e_t = D_t − P_t + c_t − d_t                    (2) energy balance
               s_t = s_{t−1} + η_c c_t − d_t / η_d                   battery (kWh stored)
               s_min ≤ s_t ≤ s_max,  s_T ≥ s_end_min                 (4)
               0 ≤ c_t ≤ P_max Δt · b_t,  0 ≤ d_t ≤ P_max Δt (1 − b_t)
               0 ≤ i_t ≤ M u_t,  0 ≤ e_t ≤ M (1 − u_t),  u_t, b_t ∈ {0, 1}

gives the net import ``i_t`` and export ``e_t`` of the fleet (kWh per
interval), the charge ``c_t`` and discharge ``d_t`` at the battery
terminals, and the stored energy ``s_t`` at the end of each interval. The
paper's (2) mixes the efficiency into the balance; here it sits in the
battery equation, as in :mod:`dercosim.devices.battery`. The paper leaves
the end of the day open; without a bound the MILP would sell the whole
battery every evening, so ``s_end_min`` defaults to the initial energy.

Phase 2: the export ``e_t`` is bid where the forecast price is above the bid
limit (never into negative prices); the market clears (:mod:`.market`); the
aggregator re-solves with ``π_e = 0`` where nothing was awarded and
``e_t = E_c,t`` where it was, and publishes per interval the virtual SoC
target ``SoC^{t,A}`` (fraction of capacity at the end of the interval), the
commitment ``E_c^t`` and the mode ``S^t`` (0: the batteries follow the
residual demand, 1: otherwise, i.e. the plan charges or discharges other
than the residual would make it).

The model is built once (:class:`DayAheadMILP`); a re-solve changes costs
and bounds only.

References
----------
- Couraud et al. 2022: B. Couraud, V. Robu, D. Flynn, M. Andoni, S. Norbu and H. Quinard,
    "Real-Time Control of Distributed Batteries with Blockchain-Enabled Market Export
    Commitments," IEEE Transactions on Sustainable Energy, 2022 (eqs. (1)–(5), phases 1–2).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VirtualBattery:
    """The fleet as one battery (Couraud et al. 2022, eq. (3)): kWh, kW, efficiencies 0..1."""

    capacity_kwh: float
    p_max_kw: float  #: charge and discharge power limit (sum over the fleet)
    eta_charge: float
    eta_discharge: float
    soc_min_kwh: float = 0.0
    soc_max_kwh: float | None = None  #: None = capacity

    @classmethod
    def of_fleet(cls, capacity_kwh: np.ndarray, p_charge_max_kw: np.ndarray, p_discharge_max_kw: np.ndarray,
                 eta_charge: np.ndarray, eta_discharge: np.ndarray, soc_min_frac: np.ndarray | float = 0.0,
                 soc_max_frac: np.ndarray | float = 1.0) -> VirtualBattery:
        """Sum of capacities and powers; capacity-weighted efficiencies (eq. (3)). The power limit is the
        smaller of the fleet's summed charge and discharge limits (one limit, as in the paper)."""
        cap = np.asarray(capacity_kwh, float)
        total = float(cap.sum())
        if total <= 0:
            raise ValueError("the fleet has no battery capacity: an aggregator needs batteries")
        w = cap / total
        return cls(capacity_kwh=total,
                   p_max_kw=float(min(np.sum(p_charge_max_kw), np.sum(p_discharge_max_kw))),
                   eta_charge=float(np.sum(w * np.asarray(eta_charge, float))),
                   eta_discharge=float(np.sum(w * np.asarray(eta_discharge, float))),
                   soc_min_kwh=float(np.sum(cap * soc_min_frac)), soc_max_kwh=float(np.sum(cap * soc_max_frac)))

    @property
    def soc_upper_kwh(self) -> float:
        return self.capacity_kwh if self.soc_max_kwh is None else self.soc_max_kwh


@dataclass
class DayAheadPlan:
    """One solve of the day-ahead MILP; arrays per market interval, energies in kWh per interval."""

    success: bool
    status: str
    solve_s: float
    import_kwh: np.ndarray
    export_kwh: np.ndarray
    charge_kwh: np.ndarray  #: at the battery terminals
    discharge_kwh: np.ndarray
    soc_kwh: np.ndarray  #: stored energy at the end of each interval
    cost: float  #: Σ π_i i − π_e e, currency
    mode_s: np.ndarray  #: S^t: 1 where the battery does other than follow the residual, else 0

    def soc_target_frac(self, capacity_kwh: float) -> np.ndarray:
        """SoC^{t,A}: the virtual battery's state of charge at the end of each interval, 0..1."""
        return self.soc_kwh / capacity_kwh


class DayAheadMILP:
    """The day-ahead MILP of a virtual battery over ``n`` market intervals of ``dt_h`` hours, built once.

    :meth:`solve` takes the day's numbers (forecast demand and production,
    prices, initial energy, and optionally fixed exports) and changes only
    costs and bounds of the model built here.
    """

    #: column blocks, in this order
    BLOCKS = ("import", "export", "charge", "discharge", "soc", "u_import", "b_charge", "impact")
    #: tangents of k e² per interval (price-maker clearing): the approximation is exact at the breakpoints
    IMPACT_BREAKPOINTS = 24

    def __init__(self, battery: VirtualBattery, n: int = 48, dt_h: float = 0.5, big_m_kwh: float | None = None,
                 time_limit_s: float = 10.0, mip_rel_gap: float = 1e-6, impact_slope: float = 0.0,
                 export_max_kwh: float | None = None) -> None:
        """``impact_slope`` k (currency/kWh per kWh): a price-maker's export e depresses the price to π − k e,
        so the revenue is π e − k e², with k e² as the upper envelope of :attr:`IMPACT_BREAKPOINTS` tangents
        on [0, ``export_max_kwh``] (default: the battery's energy per interval, doubled)."""
        import highspy

        if impact_slope < 0:
            raise ValueError(f"impact_slope must be ≥ 0, got {impact_slope}")
        self.battery, self.n, self.dt_h = battery, int(n), float(dt_h)
        self.impact_slope = float(impact_slope)
        self.e_step_kwh = battery.p_max_kw * self.dt_h
        self.big_m_kwh = big_m_kwh
        n = self.n
        self.col = {name: np.arange(k * n, (k + 1) * n) for k, name in enumerate(self.BLOCKS)}
        n_cols = len(self.BLOCKS) * n
        rows: list[tuple[dict[int, float], float, float]] = []
        self.row_balance = []
        self.row_soc = []
        self.row_import_m = []
        self.row_export_m = []
        c = self.col
        for t in range(n):  # (2): i − e − c + d = D − P  (bounds set per solve)
            self.row_balance.append(len(rows))
            rows.append(({c["import"][t]: 1.0, c["export"][t]: -1.0, c["charge"][t]: -1.0,
                          c["discharge"][t]: 1.0}, 0.0, 0.0))
        for t in range(n):  # s_t − s_{t−1} − η_c c_t + d_t/η_d = 0 (t = 0: = s_0, set per solve)
            self.row_soc.append(len(rows))
            coef = {c["soc"][t]: 1.0, c["charge"][t]: -battery.eta_charge, c["discharge"][t]: 1.0 / battery.eta_discharge}
            if t > 0:
                coef[c["soc"][t - 1]] = -1.0
            rows.append((coef, 0.0, 0.0))
        for t in range(n):  # c ≤ P Δt b,  d ≤ P Δt (1 − b)
            rows.append(({c["charge"][t]: 1.0, c["b_charge"][t]: -self.e_step_kwh}, -np.inf, 0.0))
            rows.append(({c["discharge"][t]: 1.0, c["b_charge"][t]: self.e_step_kwh}, -np.inf, self.e_step_kwh))
        for t in range(n):  # i ≤ M u,  e ≤ M (1 − u)  (M set per solve)
            self.row_import_m.append(len(rows))
            rows.append(({c["import"][t]: 1.0, c["u_import"][t]: -1.0}, -np.inf, 0.0))
            self.row_export_m.append(len(rows))
            rows.append(({c["export"][t]: 1.0, c["u_import"][t]: 1.0}, -np.inf, 1.0))
        if self.impact_slope > 0:  # w_t ≥ k (2 a e_t − a²) for each breakpoint a: w_t ≥ k e_t² at the breakpoints
            e_max = export_max_kwh if export_max_kwh is not None else 2.0 * self.e_step_kwh
            for a in np.linspace(0.0, max(e_max, 1e-9), self.IMPACT_BREAKPOINTS):
                for t in range(n):
                    rows.append(({c["impact"][t]: 1.0, c["export"][t]: -2.0 * self.impact_slope * a},
                                 -self.impact_slope * a * a, np.inf))
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("time_limit", float(time_limit_s))
        h.setOptionValue("mip_rel_gap", float(mip_rel_gap))
        inf = highspy.kHighsInf
        lower = np.zeros(n_cols)
        upper = np.full(n_cols, inf)
        upper[c["charge"]] = upper[c["discharge"]] = self.e_step_kwh
        lower[c["soc"]] = battery.soc_min_kwh
        upper[c["soc"]] = battery.soc_upper_kwh
        upper[c["u_import"]] = upper[c["b_charge"]] = 1.0
        if self.impact_slope == 0:
            upper[c["impact"]] = 0.0
        self._lower0, self._upper0 = lower, upper
        h.addVars(n_cols, lower, upper)
        integrality = np.zeros(n_cols, dtype=np.int32)
        integrality[np.concatenate([c["u_import"], c["b_charge"]])] = 1
        h.changeColsIntegrality(n_cols, np.arange(n_cols, dtype=np.int32), integrality)
        for coef, lo, hi in rows:
            idx = np.fromiter(coef.keys(), np.int32)
            val = np.fromiter(coef.values(), float)
            h.addRow(-inf if lo == -np.inf else lo, inf if hi == np.inf else hi, len(idx), idx, val)
        self._h = h
        self._inf = inf
        self.n_cols = n_cols

    def solve(self, demand_kwh: np.ndarray, production_kwh: np.ndarray, import_price: np.ndarray,
              export_price: np.ndarray, soc_init_kwh: float, soc_end_min_kwh: float | None = None,
              fixed_export_kwh: np.ndarray | None = None) -> DayAheadPlan:
        """Solve for one day. Arrays per interval; ``fixed_export_kwh``: NaN = free, else e_t is fixed to it.

        ``soc_end_min_kwh`` None: the energy at the end must be at least the
        initial energy (clipped to what the bounds allow).
        """
        started = time.perf_counter()
        n, c, h, inf = self.n, self.col, self._h, self._inf
        demand = np.asarray(demand_kwh, float)
        production = np.asarray(production_kwh, float)
        for name, arr in (("demand", demand), ("production", production), ("import_price", import_price),
                          ("export_price", export_price)):
            if np.shape(arr) != (n,) or not np.all(np.isfinite(arr)):
                raise ValueError(f"{name}: expected {n} finite values, got shape {np.shape(arr)}")
        residual = demand - production
        big_m = self.big_m_kwh or float(np.max(np.abs(residual)) + 2.0 * self.e_step_kwh + 1.0)
        # costs: import price on i, minus export price on e
        cost = np.zeros(self.n_cols)
        cost[c["import"]] = import_price
        cost[c["export"]] = -np.asarray(export_price, float)
        cost[c["impact"]] = 1.0  # k e²: what the export's own price impact takes off the revenue
        h.changeColsCost(self.n_cols, np.arange(self.n_cols, dtype=np.int32), cost)
        # rows: balance = residual; soc start; big-M
        h.changeRowsBounds(n, np.asarray(self.row_balance, np.int32), residual, residual)
        s0 = float(np.clip(soc_init_kwh, self.battery.soc_min_kwh, self.battery.soc_upper_kwh))
        h.changeRowBounds(int(self.row_soc[0]), s0, s0)
        for t in range(n):
            h.changeCoeff(int(self.row_import_m[t]), int(c["u_import"][t]), -big_m)
            h.changeCoeff(int(self.row_export_m[t]), int(c["u_import"][t]), big_m)
            h.changeRowBounds(int(self.row_export_m[t]), -inf, big_m)
        lower, upper = self._lower0.copy(), self._upper0.copy()
        end = s0 if soc_end_min_kwh is None else float(soc_end_min_kwh)
        lower[c["soc"][-1]] = float(np.clip(end, self.battery.soc_min_kwh, self.battery.soc_upper_kwh))
        if fixed_export_kwh is not None:
            fixed = np.asarray(fixed_export_kwh, float)
            where = np.flatnonzero(np.isfinite(fixed))
            lower[c["export"][where]] = upper[c["export"][where]] = fixed[where]
        upper = np.where(np.isinf(upper), inf, upper)
        h.changeColsBounds(self.n_cols, np.arange(self.n_cols, dtype=np.int32), lower, upper)
        h.run()
        status = h.modelStatusToString(h.getModelStatus())
        ok = status == "Optimal"
        if not ok:
            empty = np.full(n, np.nan)
            return DayAheadPlan(False, status, time.perf_counter() - started, empty, empty.copy(), empty.copy(),
                                empty.copy(), empty.copy(), float("nan"), np.zeros(n))
        x = np.asarray(h.getSolution().col_value)
        imp, exp = x[c["import"]], x[c["export"]]
        charge, discharge = x[c["charge"]], x[c["discharge"]]
        soc = x[c["soc"]]
        return DayAheadPlan(True, status, time.perf_counter() - started, imp, exp, charge, discharge, soc,
                            float(np.dot(import_price, imp) - np.dot(export_price, exp)
                                  + self.impact_slope * np.dot(exp, exp)),
                            mode_s(residual, charge, discharge, self.e_step_kwh))


def mode_s(residual_kwh: np.ndarray, charge_kwh: np.ndarray, discharge_kwh: np.ndarray, e_step_kwh: float,
           tol_kwh: float = 1e-3) -> np.ndarray:
    """S^t (Couraud et al. 2022, eq. (5)): 0 where the planned battery energy is what following the residual
    demand gives (charge the surplus, cover the deficit, within the power limit), else 1."""
    follow = np.clip(-np.asarray(residual_kwh, float), -e_step_kwh, e_step_kwh)  # + = charge
    planned = np.asarray(charge_kwh, float) - np.asarray(discharge_kwh, float)
    return (np.abs(planned - follow) > tol_kwh).astype(float)


def bids_kwh(plan: DayAheadPlan, price: np.ndarray, limit_price: float = 0.0, slope: float = 0.0) -> np.ndarray:
    """Export bids per interval: the planned export where the price it would be paid is above ``limit_price``
    (never into negative prices with the default limit 0), else 0. A price maker (``slope`` k > 0) is paid the
    cleared price π − k E, so it bids at most E = (π − limit) / k: the price its own export depresses stays
    above the limit."""
    price = np.asarray(price, float)
    if not plan.success:
        return np.zeros_like(price)
    export = np.clip(plan.export_kwh, 0.0, None)
    if slope > 0:
        export = np.minimum(export, np.clip((price - limit_price) / slope, 0.0, None))
    return np.where(price > limit_price, export, 0.0)
