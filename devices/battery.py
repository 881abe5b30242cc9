"""Battery fleet with its real-time power-management system (PMS), vectorised with numpy.

Couraud et al. 2022, eqs. (8)–(9): inside every simulation step the PMS runs ``n = step_s /
cycle_s`` cycles. In each cycle a battery either follows the actual residual
demand of its connection point (``p = −residual``: charge surplus, cover
deficit) or holds its setpoint, always within its power and SoC limits.
Power is positive when charging; stored energy changes by ``η_c·p·dt`` when
charging and ``p·dt/η_d`` when discharging; self-discharge removes
``r·soc·dt`` (``r`` per hour) at the start of each cycle. The SoC bounds limit
what the PMS charges and discharges; self-discharge is physics and may take the
SoC a little below ``soc_min``.

Two ways to run a step give the same numbers (to rounding):

- ``method="loop"``: cycle by cycle, vectorised over batteries (the reference);
- ``method="auto"`` (default): batteries whose SoC bounds cannot bind within
  the step are computed for all cycles at once (closed-form SoC trajectory);
  the others go through the same loop compiled with numba (the same
  operations in the same order: the same numbers as ``"loop"``, to the bit).

Energy closes per battery: ``soc_end − soc_start = η_c·E_charged −
E_discharged/η_d − E_self_discharge`` with the four totals accumulated
independently of the SoC.

References
----------
- Couraud et al. 2022: B. Couraud, V. Robu, D. Flynn, M. Andoni, S. Norbu and H. Quinard, "Real-Time Control of
    Distributed Batteries with Blockchain-Enabled Market Export Commitments," IEEE Transactions
    on Sustainable Energy, 2022. (eqs. (8)–(9), the power-management loop)
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np
from numba import njit


@dataclass(frozen=True)
class BatteryParams:
    """Per-battery parameters, arrays of length n."""

    capacity_kwh: np.ndarray
    p_charge_max_kw: np.ndarray
    p_discharge_max_kw: np.ndarray
    eta_charge: np.ndarray
    eta_discharge: np.ndarray
    soc_min_frac: np.ndarray
    soc_max_frac: np.ndarray
    self_discharge_per_h: np.ndarray

    @classmethod
    def of(cls, n: int, **values: float | np.ndarray) -> BatteryParams:
        """Parameters for n batteries from scalars or arrays."""
        return cls(**{f.name: np.broadcast_to(np.asarray(values[f.name], float), (n,)).copy() for f in fields(cls)})

    @property
    def n(self) -> int:
        return len(self.capacity_kwh)


@dataclass(frozen=True)
class StepResult:
    """What a battery did during one simulation step (arrays of length n)."""

    p_kw: np.ndarray  #: mean battery power over the step, + = charging
    meter_kw: np.ndarray  #: mean net power at the connection point (residual + battery), load convention
    e_charge_kwh: np.ndarray  #: energy drawn to charge (terminal side)
    e_discharge_kwh: np.ndarray  #: energy delivered when discharging (terminal side)
    e_self_discharge_kwh: np.ndarray
    e_clipped_kwh: np.ndarray  #: |asked − delivered| energy, when a power or SoC limit bound
    soc_kwh: np.ndarray  #: at the end of the step


class BatteryFleet:
    """State and PMS of n batteries. ``soc_kwh`` is the stored energy."""

    def __init__(self, params: BatteryParams, soc_init_kwh: np.ndarray, cycle_s: float = 1.0,
                 step_s: int = 60) -> None:
        n_cycles = step_s / cycle_s
        if cycle_s <= 0 or abs(n_cycles - round(n_cycles)) > 1e-9:
            raise ValueError(f"pms_cycle_s must divide the step ({step_s} s), got {cycle_s}")
        self.params = params
        self.cycle_s = float(cycle_s)
        self.step_s = int(step_s)
        self.n_cycles = int(round(n_cycles))
        self.dt_h = self.cycle_s / 3600.0
        self.soc_kwh = np.asarray(soc_init_kwh, float).copy()
        self.soc_init_kwh = self.soc_kwh.copy()
        n = params.n
        self.e_charge_kwh = np.zeros(n)
        self.e_discharge_kwh = np.zeros(n)
        self.e_self_discharge_kwh = np.zeros(n)
        self.e_clipped_kwh = np.zeros(n)
        self.soc_min_kwh = params.soc_min_frac * params.capacity_kwh
        self.soc_max_kwh = params.soc_max_frac * params.capacity_kwh
        self.decay = params.self_discharge_per_h * self.dt_h  # fraction lost per cycle
        _load_pms_kernel()  # in the run's set-up, not in the step that first needs it

    @property
    def soc_frac(self) -> np.ndarray:
        return self.soc_kwh / self.params.capacity_kwh

    def step(self, residual_kw: np.ndarray, follow_residual: np.ndarray, p_set_kw: np.ndarray,
             method: str = "auto") -> StepResult:
        """Run one step of ``n_cycles`` PMS cycles.

        ``residual_kw``: (n_cycles, n) residual demand (load − PV) per cycle, or
        (n,) to hold it over the step. ``follow_residual``: (n,) bool.
        ``p_set_kw``: (n,) setpoint used where not following.
        """
        n = self.params.n
        residual = np.asarray(residual_kw, float)
        if residual.ndim == 1:
            residual = np.broadcast_to(residual, (self.n_cycles, n))
        if residual.shape != (self.n_cycles, n):
            raise ValueError(f"residual_kw must be ({self.n_cycles}, {n}), got {residual.shape}")
        follow = np.asarray(follow_residual, bool)
        target = np.where(follow[None, :], -residual, np.asarray(p_set_kw, float)[None, :])

        before = (self.e_charge_kwh.copy(), self.e_discharge_kwh.copy(), self.e_self_discharge_kwh.copy(),
                  self.e_clipped_kwh.copy())
        p_sum = np.zeros(n)
        if method == "loop":
            loop_cols = np.arange(n)
        elif method == "auto":
            safe = self._bounds_cannot_bind(target)
            p_sum[safe] = self._block(target[:, safe], np.flatnonzero(safe))
            loop_cols = np.flatnonzero(~safe)
        else:
            raise ValueError(f"method must be 'auto' or 'loop', got {method!r}")
        if len(loop_cols):
            run = self._loop if method == "loop" else self._compiled
            p_sum[loop_cols] = run(target[:, loop_cols], loop_cols)

        p_mean = p_sum / self.n_cycles
        return StepResult(
            p_kw=p_mean,
            meter_kw=residual.mean(axis=0) + p_mean,
            e_charge_kwh=self.e_charge_kwh - before[0],
            e_discharge_kwh=self.e_discharge_kwh - before[1],
            e_self_discharge_kwh=self.e_self_discharge_kwh - before[2],
            e_clipped_kwh=self.e_clipped_kwh - before[3],
            soc_kwh=self.soc_kwh.copy(),
        )

    # -- internals -------------------------------------------------------------

    def _bounds_cannot_bind(self, target: np.ndarray) -> np.ndarray:
        """Batteries whose SoC cannot reach a bound this step whatever the order of the cycles."""
        p = self.params
        charge = np.minimum(np.clip(target, 0, None), p.p_charge_max_kw).sum(axis=0) * self.dt_h * p.eta_charge
        discharge = np.minimum(np.clip(-target, 0, None), p.p_discharge_max_kw).sum(axis=0) * self.dt_h / p.eta_discharge
        lowest = self.soc_kwh * (1.0 - self.decay) ** self.n_cycles - discharge
        margin = 1e-9 * np.maximum(p.capacity_kwh, 1.0)
        return (self.soc_kwh + charge < self.soc_max_kwh - margin) & (lowest > self.soc_min_kwh + margin)

    def _block(self, target: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """All cycles at once for batteries that cannot hit a SoC bound; returns the power sum."""
        if len(cols) == 0:
            return np.zeros(0)
        p = self.params
        power = np.clip(target, -p.p_discharge_max_kw[cols], p.p_charge_max_kw[cols])
        self.e_clipped_kwh[cols] += np.abs(target - power).sum(axis=0) * self.dt_h
        charge = np.clip(power, 0, None) * self.dt_h
        discharge = np.clip(-power, 0, None) * self.dt_h
        u = p.eta_charge[cols] * charge - discharge / p.eta_discharge[cols]  # (K, m)
        b = 1.0 - self.decay[cols]
        k = np.arange(self.n_cycles)[:, None]
        # soc_{k+1} = b soc_k + u_k  =>  soc_k = b^k (soc_0 + sum_{j<k} u_j b^-(j+1))
        scaled = np.cumsum(u * b[None, :] ** (-(k + 1.0)), axis=0)
        soc0 = self.soc_kwh[cols]
        soc_k = b[None, :] ** k * (soc0[None, :] + np.vstack([np.zeros((1, len(cols))), scaled[:-1]]))
        self.e_self_discharge_kwh[cols] += (soc_k * self.decay[cols][None, :]).sum(axis=0)
        self.e_charge_kwh[cols] += charge.sum(axis=0)
        self.e_discharge_kwh[cols] += discharge.sum(axis=0)
        self.soc_kwh[cols] = b ** self.n_cycles * (soc0 + scaled[-1])
        return power.sum(axis=0)

    def _compiled(self, target: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """:meth:`_loop` compiled (the same numbers); returns the power sum. Targets that are not finite go
        through :meth:`_loop` (numpy's NaN rules)."""
        if not np.isfinite(target).all():
            return self._loop(target, cols)
        p = self.params
        sums = _pms_cycles(np.ascontiguousarray(target), self.soc_kwh[cols].copy(), self.decay[cols],
                           p.eta_charge[cols], p.eta_discharge[cols], p.p_charge_max_kw[cols],
                           p.p_discharge_max_kw[cols], self.soc_min_kwh[cols], self.soc_max_kwh[cols], self.dt_h)
        soc, e_ch, e_dis, e_self, e_clip, p_sum = sums
        self.soc_kwh[cols] = soc
        self.e_charge_kwh[cols] += e_ch
        self.e_discharge_kwh[cols] += e_dis
        self.e_self_discharge_kwh[cols] += e_self
        self.e_clipped_kwh[cols] += e_clip
        return p_sum

    def _loop(self, target: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Cycle by cycle (the reference); returns the power sum."""
        p = self.params
        dt = self.dt_h
        soc = self.soc_kwh[cols].copy()
        decay = self.decay[cols]
        eta_charge, eta_discharge = p.eta_charge[cols], p.eta_discharge[cols]
        p_ch, p_dis = p.p_charge_max_kw[cols], p.p_discharge_max_kw[cols]
        lo, hi = self.soc_min_kwh[cols], self.soc_max_kwh[cols]
        e_ch = np.zeros(len(cols))
        e_dis = np.zeros(len(cols))
        e_self = np.zeros(len(cols))
        e_clip = np.zeros(len(cols))
        p_sum = np.zeros(len(cols))
        for k in range(self.n_cycles):
            loss = soc * decay
            e_self += loss
            soc = soc - loss
            up = np.clip(np.minimum(p_ch, (hi - soc) / (eta_charge * dt)), 0.0, None)
            down = np.clip(np.minimum(p_dis, (soc - lo) * eta_discharge / dt), 0.0, None)
            power = np.clip(target[k], -down, up)
            e_clip += np.abs(target[k] - power) * dt
            charge = np.clip(power, 0, None) * dt
            discharge = np.clip(-power, 0, None) * dt
            e_ch += charge
            e_dis += discharge
            soc = soc + eta_charge * charge - discharge / eta_discharge
            p_sum += power
        self.soc_kwh[cols] = soc
        self.e_charge_kwh[cols] += e_ch
        self.e_discharge_kwh[cols] += e_dis
        self.e_self_discharge_kwh[cols] += e_self
        self.e_clipped_kwh[cols] += e_clip
        return p_sum

    def energy_balance_error_kwh(self) -> np.ndarray:
        """soc_end − soc_start − (η_c·E_ch − E_dis/η_d − E_self), per battery (should be ~0)."""
        p = self.params
        expected = (p.eta_charge * self.e_charge_kwh - self.e_discharge_kwh / p.eta_discharge
                    - self.e_self_discharge_kwh)
        return (self.soc_kwh - self.soc_init_kwh) - expected


@lru_cache(maxsize=None)
def _load_pms_kernel() -> None:
    """Load :func:`_pms_cycles` now (from numba's cache; compiled there on the very first use). Once per process."""
    one = np.ones(1)
    _pms_cycles(np.zeros((1, 1)), one.copy(), one, one, one, one, one, one, one, 1.0)


@njit(cache=True, nogil=True)
def _pms_cycles(target: np.ndarray, soc: np.ndarray, decay: np.ndarray, eta_charge: np.ndarray,
                eta_discharge: np.ndarray, p_ch: np.ndarray, p_dis: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:meth:`BatteryFleet._loop` battery by battery, each operation as numpy does it (``maximum(a, b)`` is
    ``a if a >= b else b``, ``minimum(a, b)`` is ``a if a <= b else b``, ``clip(x, l, u)`` is
    ``minimum(maximum(x, l), u)``); ``soc`` is updated in place. Returns (soc, charged, discharged,
    self-discharged, clipped, power sum) per battery."""
    n_cycles, m = target.shape
    e_ch = np.zeros(m)
    e_dis = np.zeros(m)
    e_self = np.zeros(m)
    e_clip = np.zeros(m)
    p_sum = np.zeros(m)
    for j in range(m):
        s = soc[j]
        for k in range(n_cycles):
            loss = s * decay[j]
            e_self[j] += loss
            s = s - loss
            a = (hi[j] - s) / (eta_charge[j] * dt)
            a = p_ch[j] if p_ch[j] <= a else a
            up = a if a >= 0.0 else 0.0
            d = (s - lo[j]) * eta_discharge[j] / dt
            d = p_dis[j] if p_dis[j] <= d else d
            down = d if d >= 0.0 else 0.0
            t = target[k, j]
            power = t if t >= -down else -down
            power = power if power <= up else up
            e_clip[j] += abs(t - power) * dt
            charge = (power if power >= 0.0 else 0.0) * dt
            discharge = (-power if -power >= 0.0 else 0.0) * dt
            e_ch[j] += charge
            e_dis[j] += discharge
            s = s + eta_charge[j] * charge - discharge / eta_discharge[j]
            p_sum[j] += power
        soc[j] = s
    return soc, e_ch, e_dis, e_self, e_clip, p_sum
