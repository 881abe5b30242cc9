"""A batched interior-point solver for the household MPC's quadratic program, compiled with numba.

The household QP of :mod:`dercosim.controllers.mpc` (Couraud et al. 2022's
eq. (5) as resolved there) is small (≤ 30 steps of charge, discharge, export,
export-cap violation and SoC) and the same for thousands of households: a
general sparse solver (PIQP through casadi) spends most of its time on
generality. This module solves it as what it is, a chain:

- the commitment term |RE − Σ net export| gets a second state, the
  cumulative net export ``cum_k = cum_{k−1} + dt·(pd − pc − r)``, so every
  constraint couples one step to the next only;
- a primal-dual interior point (Mehrotra's predictor-corrector) whose Newton
  step is a backward recursion over the steps: after eliminating export and
  the cap violation in closed form, each step is a 2-state (SoC, cum),
  2-input (charge, discharge) stage and the recursion costs a few 2×2
  inverses per step (``_chain_one``; the kernel the MPC runs), the terminal
  variables eliminated at the end (Rao, Wright and Rawlings 1998);
- the same method on the QP written as a general sparse problem, its
  quasi-definite Newton system (primal regularisation ρ, dual −δ) factorised
  by a skyline LDLᵀ with no pivoting (``kernel="sparse"``): slower, kept as
  an independent check of the recursion (the tests hold them to 1e-7);
- one compiled loop over the batch, releasing the GIL, so a batch splits over
  threads: the QPs of a call group (same battery and number of active steps)
  share one structure and differ in numbers.

Only active steps are in the QP (the interval's remaining minutes); the
answer is laid out as the casadi formulation's decision vector, inactive
steps at 0 and the SoC held, so :class:`~dercosim.controllers.mpc.Plan`s are
made the same way for every solver. A QP that does not converge in
``MAX_ITER`` iterations is reported as such; the caller solves it again with
PIQP (counted as a retry).

The first call compiles the kernels (~10 s) and caches them on disk (numba's
``cache=True``: ``__pycache__`` beside this file, or ``NUMBA_CACHE_DIR``).

References
----------
- Couraud et al. 2022: B. Couraud, V. Robu, D. Flynn, M. Andoni, S. Norbu and H. Quinard, "Real-Time Control of
    Distributed Batteries with Blockchain-Enabled Market Export Commitments," IEEE Transactions on Sustainable
    Energy, 2022 (the household problem, eq. (5), (8)–(9)).
- S. Mehrotra, "On the Implementation of a Primal-Dual Interior Point Method," SIAM Journal on Optimization 2(4),
  1992 (the predictor-corrector).
- R. J. Vanderbei, "Symmetric Quasidefinite Matrices," SIAM Journal on Optimization 5(1), 1995 (LDLᵀ in any order).
- C. V. Rao, S. J. Wright and J. B. Rawlings, "Application of Interior-Point Methods to Model Predictive Control,"
  Journal of Optimization Theory and Applications 99(3), 1998 (the stage-wise structure of an MPC's Newton step).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numba import njit

MAX_ITER = 60
TOL_PRIMAL = 1e-9  #: kW, kWh: constraint residuals (bounds and rows)
TOL_DUAL = 1e-9  #: currency per kW: stationarity
TOL_GAP = 1e-11  #: mean complementarity
REG_PRIMAL = 1e-11  #: ρ on the primal diagonal (cum has no other term)
REG_DUAL = 1e-11  #: δ on the multipliers' diagonal

# status codes of the kernel
SOLVED, MAX_ITERATIONS, NUMERICAL = 0, 1, 2
STATUS_NAMES = {SOLVED: "solved", MAX_ITERATIONS: "max iterations", NUMERICAL: "numerical trouble"}


# --------------------------------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True, error_model="numpy")
def _ldl_factor(val: np.ndarray, first: np.ndarray, start: np.ndarray, d: np.ndarray, tmp: np.ndarray) -> bool:
    """LDLᵀ of a symmetric matrix stored by its lower envelope, in place (row i holds columns first[i]..i at
    val[start[i]:start[i] + i − first[i] + 1]); d gets the pivots. False if a pivot is zero or not finite."""
    n = len(first)
    for i in range(n):
        fi = first[i]
        si = start[i] - fi  # val[si + j] is entry (i, j)
        acc = 0.0
        for j in range(fi, i):
            fj = first[j]
            sj = start[j] - fj
            s = val[si + j]
            k0 = fi if fi > fj else fj
            for k in range(k0, j):
                s -= tmp[k] * val[sj + k]
            tmp[j] = s  # L[i, j]·D[j]
            lij = s / d[j]
            val[si + j] = lij
            acc += s * lij
        di = val[si + i] - acc
        if di == 0.0 or not math.isfinite(di):
            return False
        d[i] = di
    return True


@njit(cache=True, nogil=True, error_model="numpy")
def _ldl_solve(val: np.ndarray, first: np.ndarray, start: np.ndarray, d: np.ndarray, x: np.ndarray) -> None:
    """Solve (L D Lᵀ) x = b in place (x holds b on entry)."""
    n = len(first)
    for i in range(n):
        fi = first[i]
        si = start[i] - fi
        s = x[i]
        for k in range(fi, i):
            s -= val[si + k] * x[k]
        x[i] = s
    for i in range(n):
        x[i] /= d[i]
    for i in range(n - 1, -1, -1):
        fi = first[i]
        si = start[i] - fi
        xi = x[i]
        for k in range(fi, i):
            x[k] -= val[si + k] * xi


@njit(cache=True, nogil=True, error_model="numpy")
def _sym_matvec(val: np.ndarray, first: np.ndarray, start: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    n = len(first)
    for i in range(n):
        out[i] = 0.0
    for i in range(n):
        fi = first[i]
        si = start[i] - fi
        s = val[si + i] * x[i]
        xi = x[i]
        for j in range(fi, i):
            v = val[si + j]
            s += v * x[j]
            out[j] += v * xi
        out[i] += s


@njit(cache=True, nogil=True, error_model="numpy")
def _solve_one(p_diag, q, b_eq, lo, up, eq_ptr, eq_idx, eq_val, in_ptr, in_idx, in_val, pos_x, pos_y,
               first, start, base, pair_ptr, pair_slot, x, y, tol_p, tol_d, tol_gap, max_iter):
    """One QP: min ½xᵀPx + qᵀx s.t. A x = b, lo ≤ C x ≤ up (P diagonal; A, C in CSR; ±inf for no side).
    x, y: out (primal, equality multipliers). Returns (status, iterations)."""
    n, me, mi = len(q), len(b_eq), len(lo)
    nk = len(first)
    has_l = np.empty(mi, np.bool_)
    has_u = np.empty(mi, np.bool_)
    cx = np.empty(mi)
    wl, zl, wu, zu = np.zeros(mi), np.zeros(mi), np.zeros(mi), np.zeros(mi)
    dwl, dzl, dwu, dzu = np.zeros(mi), np.zeros(mi), np.zeros(mi), np.zeros(mi)
    rl, ru, ccl, ccu = np.zeros(mi), np.zeros(mi), np.zeros(mi), np.zeros(mi)
    dsum = np.zeros(mi)
    rd, rp = np.empty(n), np.empty(me)
    kval = np.empty(len(base))
    kfac = np.empty(len(base))
    dpiv = np.empty(nk)
    tmp = np.empty(nk)
    rhs = np.empty(nk)
    sol = np.empty(nk)
    res = np.empty(nk)
    dx, dy = np.empty(n), np.empty(me)
    dx_aff, dy_aff = np.empty(n), np.empty(me)
    n_side = 0
    for i in range(mi):
        has_l[i] = lo[i] > -1e300
        has_u[i] = up[i] < 1e300
        n_side += has_l[i] + has_u[i]
    # start: x = 0, y = 0, slacks ≥ 1 (the infeasible-start method reaches feasibility on the way)
    for j in range(n):
        x[j] = 0.0
    for r in range(me):
        y[r] = 0.0
    for i in range(mi):
        if has_l[i]:
            wl[i] = max(-lo[i], 1.0)
            zl[i] = 1.0
        if has_u[i]:
            wu[i] = max(up[i], 1.0)
            zu[i] = 1.0
    norm_b = 0.0
    for r in range(me):
        norm_b = max(norm_b, abs(b_eq[r]))
    norm_q = 0.0
    for j in range(n):
        norm_q = max(norm_q, abs(q[j]))
    status = MAX_ITERATIONS
    it = 0
    while it < max_iter:
        # residuals
        for i in range(mi):
            s = 0.0
            for k in range(in_ptr[i], in_ptr[i + 1]):
                s += in_val[k] * x[in_idx[k]]
            cx[i] = s
        for j in range(n):
            rd[j] = p_diag[j] * x[j] + q[j]
        for r in range(me):
            s = 0.0
            for k in range(eq_ptr[r], eq_ptr[r + 1]):
                s += eq_val[k] * x[eq_idx[k]]
                rd[eq_idx[k]] -= eq_val[k] * y[r]
            rp[r] = s - b_eq[r]
        err_p = 0.0
        for r in range(me):
            err_p = max(err_p, abs(rp[r]))
        mu = 0.0
        for i in range(mi):
            zdiff = 0.0
            if has_l[i]:
                rl[i] = cx[i] - wl[i] - lo[i]
                err_p = max(err_p, abs(rl[i]))
                zdiff += zl[i]
                mu += wl[i] * zl[i]
            if has_u[i]:
                ru[i] = cx[i] + wu[i] - up[i]
                err_p = max(err_p, abs(ru[i]))
                zdiff -= zu[i]
                mu += wu[i] * zu[i]
            if zdiff != 0.0:
                for k in range(in_ptr[i], in_ptr[i + 1]):
                    rd[in_idx[k]] -= in_val[k] * zdiff
        mu = mu / max(n_side, 1)
        err_d = 0.0
        for j in range(n):
            err_d = max(err_d, abs(rd[j]))
        if err_p <= tol_p * (1.0 + norm_b) and err_d <= tol_d * (1.0 + norm_q) and mu <= tol_gap:
            status = SOLVED
            break
        it += 1
        # the Newton matrix: base (P + ρ, A, −δ) + Cᵀ D C
        for k in range(len(base)):
            kval[k] = base[k]
        for i in range(mi):
            dsum[i] = 0.0
            if has_l[i]:
                dsum[i] += zl[i] / wl[i]
            if has_u[i]:
                dsum[i] += zu[i] / wu[i]
            di = dsum[i]
            if di == 0.0:
                continue
            slot = pair_ptr[i]
            for a in range(in_ptr[i], in_ptr[i + 1]):
                for c in range(in_ptr[i], a + 1):
                    kval[pair_slot[slot]] += di * in_val[a] * in_val[c]
                    slot += 1
        for k in range(len(kval)):
            kfac[k] = kval[k]
        if not _ldl_factor(kfac, first, start, dpiv, tmp):
            status = NUMERICAL
            break
        alpha = 1.0
        sigma_mu = 0.0
        for phase in range(2):
            # complementarity right-hand sides: affine (phase 0), then centred and corrected (phase 1)
            for i in range(mi):
                if has_l[i]:
                    ccl[i] = -wl[i] * zl[i]
                    if phase == 1:
                        ccl[i] += sigma_mu - dwl[i] * dzl[i]
                if has_u[i]:
                    ccu[i] = -wu[i] * zu[i]
                    if phase == 1:
                        ccu[i] += sigma_mu - dwu[i] * dzu[i]
            for k in range(nk):
                rhs[k] = 0.0
            for j in range(n):
                rhs[pos_x[j]] = -rd[j]
            for r in range(me):
                rhs[pos_y[r]] = -rp[r]
            for i in range(mi):
                g = 0.0
                if has_l[i]:
                    g += ccl[i] / wl[i] - zl[i] / wl[i] * rl[i]
                if has_u[i]:
                    g += -ccu[i] / wu[i] - zu[i] / wu[i] * ru[i]
                if g != 0.0:
                    for k in range(in_ptr[i], in_ptr[i + 1]):
                        rhs[pos_x[in_idx[k]]] += in_val[k] * g
            for k in range(nk):
                sol[k] = rhs[k]
            _ldl_solve(kfac, first, start, dpiv, sol)
            # one step of iterative refinement against the matrix without ρ and δ
            _sym_matvec(kval, first, start, sol, res)
            for j in range(n):
                res[pos_x[j]] -= REG_PRIMAL * sol[pos_x[j]]
            for r in range(me):
                res[pos_y[r]] += REG_DUAL * sol[pos_y[r]]
            for k in range(nk):
                res[k] = rhs[k] - res[k]
            _ldl_solve(kfac, first, start, dpiv, res)
            for k in range(nk):
                sol[k] += res[k]
            for j in range(n):
                dx[j] = sol[pos_x[j]]
            for r in range(me):
                dy[r] = -sol[pos_y[r]]
            # slacks and multipliers
            alpha_p = 1.0
            alpha_d = 1.0
            for i in range(mi):
                cdx = 0.0
                for k in range(in_ptr[i], in_ptr[i + 1]):
                    cdx += in_val[k] * dx[in_idx[k]]
                if has_l[i]:
                    dwl[i] = cdx + rl[i]
                    dzl[i] = (ccl[i] - zl[i] * dwl[i]) / wl[i]
                    if dwl[i] < 0.0:
                        alpha_p = min(alpha_p, -wl[i] / dwl[i])
                    if dzl[i] < 0.0:
                        alpha_d = min(alpha_d, -zl[i] / dzl[i])
                if has_u[i]:
                    dwu[i] = -cdx - ru[i]
                    dzu[i] = (ccu[i] - zu[i] * dwu[i]) / wu[i]
                    if dwu[i] < 0.0:
                        alpha_p = min(alpha_p, -wu[i] / dwu[i])
                    if dzu[i] < 0.0:
                        alpha_d = min(alpha_d, -zu[i] / dzu[i])
            alpha = min(alpha_p, alpha_d)
            if phase == 0:
                mu_aff = 0.0
                for i in range(mi):
                    if has_l[i]:
                        mu_aff += (wl[i] + alpha * dwl[i]) * (zl[i] + alpha * dzl[i])
                    if has_u[i]:
                        mu_aff += (wu[i] + alpha * dwu[i]) * (zu[i] + alpha * dzu[i])
                mu_aff /= max(n_side, 1)
                ratio = mu_aff / mu if mu > 0.0 else 0.0
                sigma_mu = ratio * ratio * ratio * mu
                for j in range(n):
                    dx_aff[j] = dx[j]
                for r in range(me):
                    dy_aff[r] = dy[r]
        step = min(1.0, 0.99 * alpha)
        for j in range(n):
            x[j] += step * dx[j]
        for r in range(me):
            y[r] += step * dy[r]
        for i in range(mi):
            if has_l[i]:
                wl[i] += step * dwl[i]
                zl[i] += step * dzl[i]
            if has_u[i]:
                wu[i] += step * dwu[i]
                zu[i] += step * dzu[i]
        if not math.isfinite(step):
            status = NUMERICAL
            break
    return status, it


@njit(cache=True, nogil=True, error_model="numpy")
def _solve_batch(p_diag, q, b_eq, lo, up, eq_ptr, eq_idx, eq_val, in_ptr, in_idx, in_val, pos_x, pos_y,
                 first, start, base, pair_ptr, pair_slot, tol_p, tol_d, tol_gap, max_iter):
    """:func:`_solve_one` over the rows of q, b_eq, lo, up (one QP each, one sparsity pattern)."""
    batch, n = q.shape
    me = b_eq.shape[1]
    xs = np.zeros((batch, n))
    ys = np.zeros((batch, me))
    status = np.zeros(batch, np.int64)
    iters = np.zeros(batch, np.int64)
    for b in range(batch):
        st, it = _solve_one(p_diag, q[b], b_eq[b], lo[b], up[b], eq_ptr, eq_idx, eq_val, in_ptr, in_idx, in_val,
                            pos_x, pos_y, first, start, base, pair_ptr, pair_slot, xs[b], ys[b], tol_p, tol_d,
                            tol_gap, max_iter)
        status[b] = st
        iters[b] = it
    return xs, ys, status, iters


# --------------------------------------------------------------------------------------------------------------
# the household QP as a chain
# --------------------------------------------------------------------------------------------------------------

#: variables of step k at 6k + offset; the terminal ones after the last step
_PE, _VE, _PC, _PD, _SOC, _CUM = range(6)
_AB, _SH, _E1, _E2 = range(4)
#: inequality rows per step and at the end
_ROWS_PER_STEP, _TERMINAL_ROWS = 7, 8


@dataclass(frozen=True)
class Chain:
    """The sparsity pattern and fixed numbers of the household QP with ``steps`` active steps (one per battery,
    step length, weights and number of steps; see :func:`chain`)."""

    steps: int
    p_diag: np.ndarray
    eq_ptr: np.ndarray
    eq_idx: np.ndarray
    eq_val: np.ndarray
    in_ptr: np.ndarray
    in_idx: np.ndarray
    in_val: np.ndarray
    pos_x: np.ndarray
    pos_y: np.ndarray
    first: np.ndarray
    start: np.ndarray
    base: np.ndarray
    pair_ptr: np.ndarray
    pair_slot: np.ndarray

    @property
    def kernel_arguments(self) -> tuple[np.ndarray, ...]:
        return (self.eq_ptr, self.eq_idx, self.eq_val, self.in_ptr, self.in_idx, self.in_val, self.pos_x,
                self.pos_y, self.first, self.start, self.base, self.pair_ptr, self.pair_slot)


def _csr(rows: list[list[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ptr = np.zeros(len(rows) + 1, np.int64)
    ptr[1:] = np.cumsum([len(r) for r in rows])
    idx = np.array([j for r in rows for j, _ in r], np.int64)
    val = np.array([v for r in rows for _, v in r], float)
    return ptr, idx, val


@lru_cache(maxsize=512)
def chain(steps: int, p_charge_max_kw: float, p_discharge_max_kw: float, eta_charge: float, eta_discharge: float,
          dt_h: float, reg_per_kw2h: float) -> Chain:
    """The household QP's pattern for ``steps`` active steps (built once per process and shape)."""
    h = int(steps)
    n, me = 6 * h + 4, 2 * h
    var = lambda k, off: 6 * k + off  # noqa: E731
    term = lambda off: 6 * h + off  # noqa: E731
    p_diag = np.zeros(n)
    for k in range(h):
        p_diag[var(k, _PC)] = p_diag[var(k, _PD)] = 2.0 * reg_per_kw2h * dt_h
    eq: list[list[tuple[int, float]]] = []
    for k in range(h):
        soc_row = [(var(k, _SOC), 1.0), (var(k, _PC), -dt_h * eta_charge), (var(k, _PD), dt_h / eta_discharge)]
        cum_row = [(var(k, _CUM), 1.0), (var(k, _PC), dt_h), (var(k, _PD), -dt_h)]
        if k:
            soc_row.append((var(k - 1, _SOC), -1.0))
            cum_row.append((var(k - 1, _CUM), -1.0))
        eq += [soc_row, cum_row]
    ineq: list[list[tuple[int, float]]] = []
    for k in range(h):
        ineq += [[(var(k, _PC), 1.0), (var(k, _PD), -1.0), (var(k, _PE), 1.0)],  # import ∈ [0, cap]
                 [(var(k, _PE), 1.0), (var(k, _VE), -1.0)],  # export − violation ≤ cap
                 [(var(k, _PC), 1.0)], [(var(k, _PD), 1.0)], [(var(k, _PE), 1.0)], [(var(k, _VE), 1.0)],
                 [(var(k, _SOC), 1.0)]]
    last_soc, last_cum = var(h - 1, _SOC), var(h - 1, _CUM)
    ineq += [[(term(_SH), 1.0)], [(term(_AB), 1.0)], [(term(_E1), 1.0)], [(term(_E2), 1.0)],
             [(term(_SH), 1.0), (last_soc, 1.0)],  # sh ≥ target − soc_end
             [(term(_AB), 1.0), (last_cum, 1.0)],  # ab ≥ RE − net export
             [(term(_AB), 1.0), (last_cum, -1.0)],  # ab ≥ net export − RE
             [(last_soc, 1.0), (term(_E1), -1.0), (term(_E2), -1.0)]]  # e1 + e2 ≤ soc_end
    # the Newton system's order: per step pc, pd, pe, ve, the two dynamics multipliers, soc, cum; then ab, sh, e1, e2
    order = {_PC: 0, _PD: 1, _PE: 2, _VE: 3, _SOC: 6, _CUM: 7}
    pos_x = np.empty(n, np.int64)
    for k in range(h):
        for off, place in order.items():
            pos_x[var(k, off)] = 8 * k + place
    for off, place in ((_AB, 0), (_SH, 1), (_E1, 2), (_E2, 3)):
        pos_x[term(off)] = 8 * h + place
    pos_y = np.array([8 * (r // 2) + 4 + r % 2 for r in range(me)], np.int64)
    nk = n + me
    entries: set[tuple[int, int]] = {(i, i) for i in range(nk)}
    for r, row in enumerate(eq):
        entries |= {(max(pos_y[r], pos_x[j]), min(pos_y[r], pos_x[j])) for j, _ in row}
    for row in ineq:
        entries |= {(max(pos_x[a], pos_x[c]), min(pos_x[a], pos_x[c])) for a, _ in row for c, _ in row}
    first = np.arange(nk, dtype=np.int64)
    for i, j in entries:
        first[i] = min(first[i], j)
    widths = np.arange(nk) - first + 1
    start = np.zeros(nk, np.int64)
    start[1:] = np.cumsum(widths)[:-1]
    slot = lambda i, j: start[i] + j - first[i]  # noqa: E731
    base = np.zeros(int(widths.sum()))
    for j in range(n):
        base[slot(pos_x[j], pos_x[j])] = p_diag[j] + REG_PRIMAL
    for r in range(me):
        base[slot(pos_y[r], pos_y[r])] = -REG_DUAL
    for r, row in enumerate(eq):
        for j, v in row:
            base[slot(max(pos_y[r], pos_x[j]), min(pos_y[r], pos_x[j]))] += v
    pair_ptr = np.zeros(len(ineq) + 1, np.int64)
    pair_slot: list[int] = []
    for i, row in enumerate(ineq):
        for a in range(len(row)):
            for c in range(a + 1):
                pa, pc_ = pos_x[row[a][0]], pos_x[row[c][0]]
                pair_slot.append(slot(max(pa, pc_), min(pa, pc_)))
        pair_ptr[i + 1] = len(pair_slot)
    return Chain(h, p_diag, *_csr(eq), *_csr(ineq), pos_x, pos_y, first, start, base, pair_ptr,
                 np.array(pair_slot, np.int64))


@dataclass(frozen=True)
class BatchResult:
    """Answers of :func:`solve_compact`, one row per call."""

    x: np.ndarray  #: the casadi formulation's decision vector (inactive steps at 0, the SoC held)
    objective: np.ndarray  #: the QP's objective, regularisation included (as the casadi formulation's f)
    status: np.ndarray  #: SOLVED, MAX_ITERATIONS or NUMERICAL
    iterations: np.ndarray


@lru_cache(maxsize=None)
def load_kernels() -> None:
    """Load the compiled chain kernel now (from numba's cache; compiled there on the very first use): the MPC
    calls this when it is built, so that the ~0.1–0.2 s it takes is spent in the run's set-up, not in its
    first step. Once per process."""
    one = np.zeros((1, 1))
    _chain_batch(1, one, one, np.ones((1, len(_SCALARS))), 1.0, 1.0, 1.0, 1.0, 1.0, 1e-3, 0.0, 1.0, TOL_PRIMAL,
                 TOL_DUAL, TOL_GAP, 1)


def solve_compact(compact: np.ndarray, battery: Any, h: int, dt_h: float, weights: Any,
                  max_iter: int | None = None, kernel: str = "chain", threads: int = 1) -> BatchResult:
    """Solve the household QPs given as the columns of ``compact`` (the casadi batch's input: the parameters
    ``p`` of :func:`dercosim.controllers.mpc._arguments_many`, then the numbers its bounds are made of, in the
    order of ``mpc._COMPACT``), grouped by their number of active steps.

    ``kernel``: "chain" (the backward recursion; what the MPC runs) or "sparse" (the same method on the QP as
    general sparse rows, its Newton system by an envelope LDLᵀ: slower, an independent check). ``max_iter``:
    default :data:`MAX_ITER`. ``threads``: the chain kernel's calls (the only part that releases the GIL) are
    split over this many threads, the arrays around them made once; every QP is solved on its own, so the
    answers do not depend on it."""
    if kernel not in ("chain", "sparse"):
        raise ValueError(f"kernel must be 'chain' or 'sparse', got {kernel!r}")
    max_iter = MAX_ITER if max_iter is None else max_iter
    n_calls = compact.shape[1]
    n_x = 5 * h + 4
    xs = np.zeros((n_calls, n_x))
    objective = np.full(n_calls, np.nan)
    status = np.full(n_calls, NUMERICAL, np.int64)
    iterations = np.zeros(n_calls, np.int64)
    residual, c_imp = compact[:h], compact[h:2 * h]
    k_exp, k_sh, k_ab, v1, v2 = compact[2 * h:2 * h + 5]
    (steps, soc_lb, soc_ub, soc0, cap1, cap2, target, re, _minus_re, export_cap,
     import_cap) = compact[2 * h + 5:2 * h + 16]
    b, w = battery, weights
    reg = w.reg_per_kw2h(b)
    if b.p_charge_max_kw <= 0 or b.p_discharge_max_kw <= 0:
        return BatchResult(xs, objective, status, iterations)  # a fixed variable has no interior: the fallback's
    steps = steps.astype(np.int64)
    groups = []  # (active steps, columns) of each group of calls with the same number of active steps
    for ha in np.unique(steps):
        cols = np.flatnonzero((steps == ha) & (soc_ub > soc_lb))
        if len(cols):
            groups.append((int(ha), cols))
    chain_args = (float(b.p_charge_max_kw), float(b.p_discharge_max_kw), float(dt_h * b.eta_charge),
                  float(dt_h / b.eta_discharge), float(dt_h), float(2.0 * reg * dt_h), float(dt_h * w.both_ways_per_kwh),
                  float(dt_h * w.cap_violation_per_kwh), TOL_PRIMAL, TOL_DUAL, TOL_GAP, int(max_iter))
    prepared: list[Any] = []
    for ha, cols in groups:
        m = len(cols)
        r = np.ascontiguousarray(residual[:ha, cols].T)  # (m, ha)
        c = np.ascontiguousarray(c_imp[:ha, cols].T)
        c1, c2 = cap1[cols], cap2[cols]
        # a tier of size 0 is a variable fixed at 0: no upper bound and no value instead (the same optimum)
        v1_eff, v2_eff = np.where(c1 > 0, v1[cols], 0.0), np.where(c2 > 0, v2[cols], 0.0)
        c1_eff, c2_eff = np.where(c1 > 0, c1, np.inf), np.where(c2 > 0, c2, np.inf)
        # sh and ab get upper bounds no optimum reaches, so that a zero weight leaves them bounded
        sh_max = np.maximum(target[cols] - soc_lb[cols], 0.0) + 1.0
        ab_max = np.abs(re[cols]) + dt_h * (ha * (b.p_charge_max_kw + b.p_discharge_max_kw)
                                            + np.abs(r).sum(axis=1)) + 1.0
        if kernel == "chain":
            sc = np.ascontiguousarray(np.column_stack([
                k_exp[cols], k_sh[cols], k_ab[cols], v1_eff, v2_eff, soc0[cols], soc_lb[cols], soc_ub[cols],
                target[cols], re[cols], export_cap[cols], import_cap[cols], c1_eff, c2_eff, sh_max, ab_max]))
            prepared.append((r, c, sc))
            continue
        # kernel == "sparse": solved here, group by group
        ch = chain(int(ha), float(b.p_charge_max_kw), float(b.p_discharge_max_kw), float(b.eta_charge),
                   float(b.eta_discharge), float(dt_h), float(reg))
        q = np.zeros((m, ha, 6))
        q[:, :, _PE] = dt_h * (c + k_exp[cols, None])
        q[:, :, _VE] = dt_h * w.cap_violation_per_kwh
        q[:, :, _PC] = dt_h * (c + w.both_ways_per_kwh)
        q[:, :, _PD] = dt_h * (w.both_ways_per_kwh - c)
        q_term = np.column_stack([k_ab[cols], k_sh[cols], -v1_eff, -v2_eff])
        q_all = np.ascontiguousarray(np.concatenate([q.reshape(m, -1), q_term], axis=1))
        b_eq = np.zeros((m, ha, 2))
        b_eq[:, 0, 0] = soc0[cols]
        b_eq[:, :, 1] = -dt_h * r
        lo = np.zeros((m, ha, _ROWS_PER_STEP))
        up = np.full((m, ha, _ROWS_PER_STEP), np.inf)
        lo[:, :, 0] = -r
        up[:, :, 0] = import_cap[cols, None] - r
        lo[:, :, 1] = -np.inf
        up[:, :, 1] = export_cap[cols, None]
        up[:, :, 2] = b.p_charge_max_kw
        up[:, :, 3] = b.p_discharge_max_kw
        lo[:, :, 6] = soc_lb[cols, None]
        up[:, :, 6] = soc_ub[cols, None]
        lo_t = np.column_stack([np.zeros((m, 4)), target[cols], re[cols], -re[cols], np.zeros(m)])
        up_t = np.column_stack([sh_max, ab_max, c1_eff, c2_eff, np.full((m, 4), np.inf)])
        lo_all = np.ascontiguousarray(np.concatenate([lo.reshape(m, -1), lo_t], axis=1))
        up_all = np.ascontiguousarray(np.concatenate([up.reshape(m, -1), up_t], axis=1))
        x, _, st, its = _solve_batch(ch.p_diag, q_all, np.ascontiguousarray(b_eq.reshape(m, -1)), lo_all,
                                     up_all, *ch.kernel_arguments, TOL_PRIMAL, TOL_DUAL, TOL_GAP, int(max_iter))  # type: ignore[call-arg]
        stage = x[:, :6 * ha].reshape(m, ha, 6)
        pe_, ve_, pc_, pd_, soc_ = (stage[:, :, i] for i in (_PE, _VE, _PC, _PD, _SOC))
        sh_, ab_, e1_, e2_ = (x[:, 6 * ha + i] for i in (_SH, _AB, _E1, _E2))
        _finish(xs, objective, status, iterations, cols, ha, h, n_x, r, c, compact, battery, dt_h, weights,
                (pe_, ve_, pc_, pd_, soc_, sh_, ab_, e1_, e2_, st, its))
    if kernel == "chain" and groups:
        solved = _run_chain_kernels([(ha, r, c, sc) for (ha, _), (r, c, sc) in zip(groups, prepared)], chain_args,
                                    max(1, int(threads)))
        for (ha, cols), (r, c, _), (stage, term, st, its) in zip(groups, prepared, solved):
            pe_, ve_, pc_, pd_, soc_ = (stage[:, :, i] for i in range(5))
            sh_, ab_, e1_, e2_ = term.T
            _finish(xs, objective, status, iterations, cols, ha, h, n_x, r, c, compact, battery, dt_h, weights,
                    (pe_, ve_, pc_, pd_, soc_, sh_, ab_, e1_, e2_, st, its))
    return BatchResult(xs, objective, status, iterations)


def _finish(xs: np.ndarray, objective: np.ndarray, status: np.ndarray, iterations: np.ndarray, cols: np.ndarray,
            ha: int, h: int, n_x: int, r: np.ndarray, c: np.ndarray, compact: np.ndarray, battery: Any, dt_h: float,
            weights: Any, answer: tuple[np.ndarray, ...]) -> None:
    """One group's kernel answer (pe, ve, pc, pd, soc per step; sh, ab, e1, e2; status, iterations) into the
    rows ``cols`` of the batch's answer: bounds held exactly, the casadi formulation's layout, the objective
    recomputed from the answer."""
    pe_, ve_, pc_, pd_, soc_, sh_, ab_, e1_, e2_, st, its = answer
    b, w = battery, weights
    reg = w.reg_per_kw2h(b)
    m = len(cols)
    k_exp, k_sh, k_ab, v1, v2 = compact[2 * h:2 * h + 5]
    soc_lb, soc_ub, cap1, cap2 = compact[2 * h + 6], compact[2 * h + 7], compact[2 * h + 9], compact[2 * h + 10]
    c1, c2 = cap1[cols], cap2[cols]
    # simple bounds hold exactly (the interior point keeps them to its tolerance)
    pc = np.clip(pc_, 0.0, b.p_charge_max_kw)
    pd = np.clip(pd_, 0.0, b.p_discharge_max_kw)
    pe = np.maximum(pe_, 0.0)
    ve = np.maximum(ve_, 0.0)
    soc = np.clip(soc_, soc_lb[cols, None], soc_ub[cols, None])
    sh, ab = np.maximum(sh_, 0.0), np.maximum(ab_, 0.0)
    e1 = np.where(c1 > 0, np.clip(e1_, 0.0, c1), 0.0)
    e2 = np.where(c2 > 0, np.clip(e2_, 0.0, c2), 0.0)
    out = np.zeros((m, n_x))
    out[:, 0:ha] = pc
    out[:, h:h + ha] = pd
    out[:, 2 * h:2 * h + ha] = pe
    out[:, 3 * h:3 * h + ha] = soc
    out[:, 3 * h + ha:4 * h] = soc[:, -1:]
    out[:, 4 * h:4 * h + ha] = ve
    out[:, 5 * h:] = np.column_stack([sh, ab, e1, e2])
    xs[cols] = out
    objective[cols] = (dt_h * ((c * (r + pc - pd + pe)).sum(axis=1) + k_exp[cols] * pe.sum(axis=1)
                               + w.both_ways_per_kwh * (pc + pd).sum(axis=1)
                               + w.cap_violation_per_kwh * ve.sum(axis=1))
                       + k_sh[cols] * sh + k_ab[cols] * ab - v1[cols] * e1 - v2[cols] * e2
                       + reg * dt_h * ((pc * pc).sum(axis=1) + (pd * pd).sum(axis=1)))
    status[cols] = st
    iterations[cols] = its


def _run_chain_kernels(jobs: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]], chain_args: tuple,
                       threads: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`_chain_batch` on each job (active steps, r, c, sc), its rows cut into pieces (at least 8 rows, up to
    four per thread) that ``threads`` threads take one after another, largest first (rows × steps), the calling
    thread among them: a thread whose QPs took fewer iterations takes more pieces. Every QP is solved on its own,
    so the answers do not depend on the split."""
    pieces: list[tuple[int, int, int]] = []  # (job, first row, end row)
    for j, (_, r, _, _) in enumerate(jobs):
        m = r.shape[0]
        k = max(1, min(4 * threads, m // 8)) if threads > 1 else 1
        edges = np.linspace(0, m, k + 1).astype(np.int64)
        pieces.extend((j, int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo)
    order = sorted(pieces, key=lambda p: -(p[2] - p[1]) * jobs[p[0]][0])
    answers: dict[tuple[int, int, int], Any] = {}
    taken = iter(order)
    lock = threading.Lock()

    def run() -> None:
        while True:
            with lock:
                piece = next(taken, None)
            if piece is None:
                return
            j, lo, hi = piece
            ha, r, c, sc = jobs[j]
            answers[piece] = _chain_batch(ha, r[lo:hi], c[lo:hi], sc[lo:hi], *chain_args)

    helpers = min(threads, len(pieces)) - 1
    futures = [thread_pool(helpers).submit(run) for _ in range(helpers)] if helpers > 0 else []
    run()
    for future in futures:
        future.result()
    out: list[Any] = []
    for j in range(len(jobs)):
        parts = [answers[p] for p in pieces if p[0] == j]
        out.append(parts[0] if len(parts) == 1 else tuple(np.concatenate(a) for a in zip(*parts)))
    return out


_POOLS: dict[int, Any] = {}
_POOLS_LOCK = threading.Lock()


def thread_pool(threads: int) -> Any:
    """A pool of ``threads`` worker threads for the kernels (made once per size, shared)."""
    from concurrent.futures import ThreadPoolExecutor

    with _POOLS_LOCK:
        if threads not in _POOLS:
            _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="dercosim-ipm")
        return _POOLS[threads]


# --------------------------------------------------------------------------------------------------------------
# the structure-exploiting kernel: the same method, the Newton step by a backward recursion over the steps
# --------------------------------------------------------------------------------------------------------------

#: per-call numbers of :func:`_chain_batch`, in this order (cap1, cap2: inf = no upper bound)
_SCALARS = ("k_exp", "k_sh", "k_ab", "v1", "v2", "soc0", "soc_lb", "soc_ub", "target", "re", "export_cap",
            "import_cap", "cap1", "cap2", "sh_max", "ab_max")
_NS, _NT = 11, 12  #: inequality rows per step, at the end
#: the start's multipliers and least slack: on every 7th QP of an s4 day, (Z0, W0) = (1, 0.1) took 14.3
#: iterations on average, (10, 1) 12.0, (3, 1) 13.0, (10, 0.01) 12.4, (10, 10) 12.4, (0.1, 0.1) 22.2
Z0 = 10.0
W0 = 1.0


@njit(cache=True, nogil=True, error_model="numpy")
def _inv2(a11, a12, a22):
    det = a11 * a22 - a12 * a12
    return a22 / det, -a12 / det, a11 / det


@njit(cache=True, nogil=True, error_model="numpy")
def _chain_one(N, r, c, sc, p_c, p_d, a, bb, dt, reg2, cb, ccap, tol_p, tol_d, tol_gap, max_iter, xo, to):
    """One household QP by Mehrotra's predictor-corrector; the Newton step by a backward recursion over the steps
    (2 states: SoC and cumulative net export; 2 inputs: charge and discharge after eliminating export and the cap
    violation in closed form; the terminal variables eliminated into the last step). xo (N, 6): pe, ve, pc, pd,
    soc, cum out; to (4,): sh, ab, e1, e2 out. Returns (status, iterations)."""
    k_exp, k_sh, k_ab, v1, v2, soc0, slo, shi, target, re, ecap, icap, cap1, cap2, sh_max, ab_max = (
        sc[0], sc[1], sc[2], sc[3], sc[4], sc[5], sc[6], sc[7], sc[8], sc[9], sc[10], sc[11], sc[12], sc[13],
        sc[14], sc[15])
    fi = icap < 1e300
    fe = ecap < 1e300
    f1 = cap1 < 1e300
    f2 = cap2 < 1e300
    act = np.ones(_NS)
    act[1] = 1.0 if fi else 0.0
    act[2] = 1.0 if fe else 0.0
    act_t = np.ones(_NT)
    act_t[5] = 1.0 if f1 else 0.0
    act_t[7] = 1.0 if f2 else 0.0
    n_side = 0.0
    for i in range(_NS):
        n_side += act[i] * N
    for i in range(_NT):
        n_side += act_t[i]
    pe, ve, pc, pd, s, m = xo[:, 0], xo[:, 1], xo[:, 2], xo[:, 3], xo[:, 4], xo[:, 5]
    q_pe = np.empty(N)
    q_pc = np.empty(N)
    q_pd = np.empty(N)
    for k in range(N):
        q_pe[k] = dt * (c[k] + k_exp)
        q_pc[k] = dt * c[k] + cb
        q_pd[k] = -dt * c[k] + cb
    q_t0, q_t1 = k_sh, k_ab
    q_t2 = -v1
    q_t3 = -v2
    # the start: no battery power, the SoC held, surplus exported; slacks at least 1
    cum = 0.0
    for k in range(N):
        pc[k] = 0.0
        pd[k] = 0.0
        pe[k] = max(-r[k], 0.0)
        ve[k] = 0.0
        s[k] = soc0
        cum -= dt * r[k]
        m[k] = cum
    for i in range(4):
        to[i] = 0.0
    ys = np.zeros(N)
    ym = np.zeros(N)
    w = np.ones((N, _NS))
    z = np.full((N, _NS), Z0)
    wt = np.ones(_NT)
    zt = np.full(_NT, Z0)
    g = np.empty((N, _NS))
    gt = np.empty(_NT)
    rw = np.zeros((N, _NS))
    rwt = np.zeros(_NT)
    for k in range(N):
        pim = r[k] + pc[k] - pd[k] + pe[k]
        g[k, 0] = pim
        g[k, 1] = icap - pim
        g[k, 2] = ecap - pe[k] + ve[k]
        g[k, 3] = pc[k]
        g[k, 4] = p_c - pc[k]
        g[k, 5] = pd[k]
        g[k, 6] = p_d - pd[k]
        g[k, 7] = pe[k]
        g[k, 8] = ve[k]
        g[k, 9] = s[k] - slo
        g[k, 10] = shi - s[k]
        for i in range(_NS):
            if act[i] == 0.0:
                z[k, i] = 0.0
            else:
                w[k, i] = max(g[k, i], W0)
    for i in range(_NT):
        if act_t[i] == 0.0:
            zt[i] = 0.0
    # work arrays
    rd = np.empty((N, 6))
    rdt = np.empty(4)
    rps = np.empty(N)
    rpm = np.empty(N)
    dx = np.empty((N, 6))
    dxt = np.empty(4)
    dvs = np.empty(N)
    dvm = np.empty(N)
    dw = np.empty((N, _NS))
    dz = np.empty((N, _NS))
    dwt = np.empty(_NT)
    dzt = np.empty(_NT)
    rho = np.empty((N, _NS))
    rhot = np.empty(_NT)
    dd = np.empty((N, _NS))
    ddt = np.empty(_NT)
    # per step of the recursion
    Qi = np.empty((N, 3))  # Q⁻¹ (11, 12, 22)
    Gi = np.empty((N, 3))
    Wk = np.empty((N, 3))
    wk = np.empty((N, 2))
    fu = np.empty((N, 2))
    fsv = np.empty((N, 2))
    wwi = np.empty((N, 3))  # (pe, ve) block inverse
    gw = np.empty((N, 2))
    norm_q = abs(k_sh) + abs(k_ab) + abs(v1) + abs(v2) + ccap
    for k in range(N):
        norm_q = max(norm_q, abs(q_pe[k]), abs(q_pc[k]), abs(q_pd[k]))
    norm_b = max(abs(soc0), 0.0)
    for k in range(N):
        norm_b = max(norm_b, abs(dt * r[k]))
    status = MAX_ITERATIONS
    it = 0
    while True:
        # constraint values, residuals
        for k in range(N):
            pim = r[k] + pc[k] - pd[k] + pe[k]
            g[k, 0] = pim
            g[k, 1] = icap - pim
            g[k, 2] = ecap - pe[k] + ve[k]
            g[k, 3] = pc[k]
            g[k, 4] = p_c - pc[k]
            g[k, 5] = pd[k]
            g[k, 6] = p_d - pd[k]
            g[k, 7] = pe[k]
            g[k, 8] = ve[k]
            g[k, 9] = s[k] - slo
            g[k, 10] = shi - s[k]
        sN, mN = s[N - 1], m[N - 1]
        sh, ab, e1, e2 = to[0], to[1], to[2], to[3]
        gt[0] = sh
        gt[1] = sh_max - sh
        gt[2] = ab
        gt[3] = ab_max - ab
        gt[4] = e1
        gt[5] = cap1 - e1
        gt[6] = e2
        gt[7] = cap2 - e2
        gt[8] = sh + sN - target
        gt[9] = ab + mN - re
        gt[10] = ab - mN + re
        gt[11] = sN - e1 - e2
        err_p = 0.0
        mu = 0.0
        for k in range(N):
            for i in range(_NS):
                if act[i] != 0.0:
                    rw[k, i] = g[k, i] - w[k, i]
                    err_p = max(err_p, abs(rw[k, i]))
                    mu += w[k, i] * z[k, i]
        for i in range(_NT):
            if act_t[i] != 0.0:
                rwt[i] = gt[i] - wt[i]
                err_p = max(err_p, abs(rwt[i]))
                mu += wt[i] * zt[i]
        mu /= n_side
        prev_s, prev_m = soc0, 0.0
        for k in range(N):
            rps[k] = s[k] - prev_s - a * pc[k] + bb * pd[k]
            rpm[k] = m[k] - prev_m + dt * (pc[k] - pd[k] + r[k])
            prev_s, prev_m = s[k], m[k]
            err_p = max(err_p, abs(rps[k]), abs(rpm[k]))
        for k in range(N):
            zk = z[k]
            rd[k, 0] = q_pe[k] - (zk[0] - zk[1] - zk[2] + zk[7])
            rd[k, 1] = ccap - (zk[2] + zk[8])
            rd[k, 2] = reg2 * pc[k] + q_pc[k] - (-a * ys[k] + dt * ym[k]) - (zk[0] - zk[1] + zk[3] - zk[4])
            rd[k, 3] = reg2 * pd[k] + q_pd[k] - (bb * ys[k] - dt * ym[k]) - (-zk[0] + zk[1] + zk[5] - zk[6])
            ys_next = ys[k + 1] if k + 1 < N else 0.0
            ym_next = ym[k + 1] if k + 1 < N else 0.0
            rd[k, 4] = -(ys[k] - ys_next) - (zk[9] - zk[10])
            rd[k, 5] = -(ym[k] - ym_next)
        rd[N - 1, 4] -= zt[8] + zt[11]
        rd[N - 1, 5] -= zt[9] - zt[10]
        rdt[0] = q_t0 - (zt[0] - zt[1] + zt[8])
        rdt[1] = q_t1 - (zt[2] - zt[3] + zt[9] + zt[10])
        rdt[2] = q_t2 - (zt[4] - zt[5] - zt[11])
        rdt[3] = q_t3 - (zt[6] - zt[7] - zt[11])
        err_d = 0.0
        for k in range(N):
            for j in range(6):
                err_d = max(err_d, abs(rd[k, j]))
        for j in range(4):
            err_d = max(err_d, abs(rdt[j]))
        if err_p <= tol_p * (1.0 + norm_b) and err_d <= tol_d * (1.0 + norm_q) and mu <= tol_gap:
            status = SOLVED
            break
        if it >= max_iter:
            break
        it += 1
        # the Newton matrix, reduced to the recursion's blocks (the same for both solves of the iteration)
        for k in range(N):
            for i in range(_NS):
                dd[k, i] = z[k, i] / w[k, i] if act[i] != 0.0 else 0.0
        for i in range(_NT):
            ddt[i] = zt[i] / wt[i] if act_t[i] != 0.0 else 0.0
        for k in range(N):
            d = dd[k]
            d1 = d[0] + d[1]
            d3 = d[2]
            hpe = d1 + d3 + d[7]
            hve = d3 + d[8]
            i11, i12, i22 = _inv2(hpe, -d3, hve)
            wwi[k, 0], wwi[k, 1], wwi[k, 2] = i11, i12, i22
            # d1 − d1²·[Hww⁻¹]₁₁ without cancellation (d1 is huge where the import bound is active)
            sp = d1 * (d[7] * hve + d3 * d[8]) / ((d1 + d[7]) * hve + d3 * d[8])
            q11 = reg2 + d[3] + d[4] + sp
            q22 = reg2 + d[5] + d[6] + sp
            q12 = -sp
            Qi[k, 0], Qi[k, 1], Qi[k, 2] = _inv2(q11, q12, q22)
        # terminal block: (sh), (ab), (e1, e2) eliminated into the last step's states
        h_sh = ddt[0] + ddt[1] + ddt[8]
        h_ab = ddt[2] + ddt[3] + ddt[9] + ddt[10]
        e11, e12, e22 = _inv2(ddt[4] + ddt[5] + ddt[11], ddt[11], ddt[6] + ddt[7] + ddt[11])
        c_ab = ddt[9] - ddt[10]
        cd = ddt[11]
        # c = (−cd, −cd): cᵀE⁻¹c
        # the same without cancellation (a term is huge where its row is active)
        a_e, b_e = ddt[4] + ddt[5], ddt[6] + ddt[7]
        t_soc = ddt[8] * (ddt[0] + ddt[1]) / h_sh + cd * a_e * b_e / (a_e * b_e + cd * (a_e + b_e))
        t_cum = (4.0 * ddt[9] * ddt[10] + (ddt[9] + ddt[10]) * (ddt[2] + ddt[3])) / h_ab
        # backward recursion's matrices (rhs-independent)
        W11, W12, W22 = 0.0, 0.0, 0.0
        for k in range(N - 1, -1, -1):
            hs11 = dd[k, 9] + dd[k, 10]
            hs12 = 0.0
            hs22 = 0.0
            if k == N - 1:
                hs11 += t_soc
                hs22 += t_cum
            G11, G12, G22 = hs11 - W11, hs12 - W12, hs22 - W22
            gi11, gi12, gi22 = _inv2(G11, G12, G22)
            Gi[k, 0], Gi[k, 1], Gi[k, 2] = gi11, gi12, gi22
            # M = B Q⁻¹ Bᵀ, B = [[−a, bb], [dt, −dt]]
            a11, a12, a22 = Qi[k, 0], Qi[k, 1], Qi[k, 2]
            # rows of B Q⁻¹
            bq11 = -a * a11 + bb * a12
            bq12 = -a * a12 + bb * a22
            bq21 = dt * a11 - dt * a12
            bq22 = dt * a12 - dt * a22
            m11 = bq11 * -a + bq12 * bb
            m12 = bq11 * dt + bq12 * -dt
            m22 = bq21 * dt + bq22 * -dt
            zi11, zi12, zi22 = _inv2(m11 + gi11, m12 + gi12, m22 + gi22)
            W11, W12, W22 = -zi11, -zi12, -zi22
            Wk[k, 0], Wk[k, 1], Wk[k, 2] = W11, W12, W22
        alpha = 1.0
        sigma_mu = 0.0
        for phase in range(2):
            for k in range(N):
                for i in range(_NS):
                    if act[i] != 0.0:
                        cc = -w[k, i] * z[k, i]
                        if phase == 1:
                            cc += sigma_mu - dw[k, i] * dz[k, i]
                        rho[k, i] = (cc - z[k, i] * rw[k, i]) / w[k, i]
                        dz[k, i] = cc  # kept: the complementarity rhs
                    else:
                        rho[k, i] = 0.0
            for i in range(_NT):
                if act_t[i] != 0.0:
                    cc = -wt[i] * zt[i]
                    if phase == 1:
                        cc += sigma_mu - dwt[i] * dzt[i]
                    rhot[i] = (cc - zt[i] * rwt[i]) / wt[i]
                    dzt[i] = cc
                else:
                    rhot[i] = 0.0
            # right-hand sides: −rd + Gᵀρ; eliminate (pe, ve) per step and the terminal variables
            for k in range(N):
                p_ = rho[k]
                g_pe = -rd[k, 0] + p_[0] - p_[1] - p_[2] + p_[7]
                g_ve = -rd[k, 1] + p_[2] + p_[8]
                g_pc = -rd[k, 2] + p_[0] - p_[1] + p_[3] - p_[4]
                g_pd = -rd[k, 3] - p_[0] + p_[1] + p_[5] - p_[6]
                gw[k, 0], gw[k, 1] = g_pe, g_ve
                t = wwi[k, 0] * g_pe + wwi[k, 1] * g_ve
                d1 = dd[k, 0] + dd[k, 1]
                fu[k, 0] = g_pc - d1 * t
                fu[k, 1] = g_pd + d1 * t
                fsv[k, 0] = -rd[k, 4] + p_[9] - p_[10]
                fsv[k, 1] = -rd[k, 5]
            g_sh = -rdt[0] + rhot[0] - rhot[1] + rhot[8]
            g_ab = -rdt[1] + rhot[2] - rhot[3] + rhot[9] + rhot[10]
            g_e1 = -rdt[2] + rhot[4] - rhot[5] - rhot[11]
            g_e2 = -rdt[3] + rhot[6] - rhot[7] - rhot[11]
            fsv[N - 1, 0] += rhot[8] + rhot[11]
            fsv[N - 1, 1] += rhot[9] - rhot[10]
            # Schur: soc gets −D8·g_sh/h_sh − cᵀE⁻¹g_e, c = (−cd, −cd); cum gets −c_ab·g_ab/h_ab
            fsv[N - 1, 0] += -ddt[8] * g_sh / h_sh + cd * ((e11 + e12) * g_e1 + (e12 + e22) * g_e2)
            fsv[N - 1, 1] += -c_ab * g_ab / h_ab
            # backward: w_k
            w1, w2 = 0.0, 0.0
            for k in range(N - 1, -1, -1):
                a11, a12, a22 = Qi[k, 0], Qi[k, 1], Qi[k, 2]
                u1 = a11 * fu[k, 0] + a12 * fu[k, 1]
                u2 = a12 * fu[k, 0] + a22 * fu[k, 1]
                e_s = -rps[k] - (-a * u1 + bb * u2)
                e_m = -rpm[k] - (dt * u1 - dt * u2)
                r1 = fsv[k, 0] + w1
                r2 = fsv[k, 1] + w2
                gi11, gi12, gi22 = Gi[k, 0], Gi[k, 1], Gi[k, 2]
                t1 = gi11 * r1 + gi12 * r2 - e_s
                t2 = gi12 * r1 + gi22 * r2 - e_m
                # Z⁻¹ = −W_k
                w1 = -(Wk[k, 0] * t1 + Wk[k, 1] * t2)
                w2 = -(Wk[k, 1] * t1 + Wk[k, 2] * t2)
                wk[k, 0], wk[k, 1] = w1, w2
                fsv[k, 0], fsv[k, 1] = r1, r2  # rhsS_k, used going forward
            # forward: v_k, s_k, u_k, then (pe, ve)
            sp1, sp2 = 0.0, 0.0
            for k in range(N):
                v1_ = Wk[k, 0] * sp1 + Wk[k, 1] * sp2 + wk[k, 0]
                v2_ = Wk[k, 1] * sp1 + Wk[k, 2] * sp2 + wk[k, 1]
                r1 = fsv[k, 0] - v1_
                r2 = fsv[k, 1] - v2_
                s1 = Gi[k, 0] * r1 + Gi[k, 1] * r2
                s2 = Gi[k, 1] * r1 + Gi[k, 2] * r2
                f1_ = fu[k, 0] - (-a * v1_ + dt * v2_)
                f2_ = fu[k, 1] - (bb * v1_ - dt * v2_)
                du1 = Qi[k, 0] * f1_ + Qi[k, 1] * f2_
                du2 = Qi[k, 1] * f1_ + Qi[k, 2] * f2_
                d1 = dd[k, 0] + dd[k, 1]
                h1 = gw[k, 0] - d1 * (du1 - du2)
                h2 = gw[k, 1]
                dx[k, 0] = wwi[k, 0] * h1 + wwi[k, 1] * h2
                dx[k, 1] = wwi[k, 1] * h1 + wwi[k, 2] * h2
                dx[k, 2] = du1
                dx[k, 3] = du2
                dx[k, 4] = s1
                dx[k, 5] = s2
                dvs[k] = v1_
                dvm[k] = v2_
                sp1, sp2 = s1, s2
            dsN, dmN = dx[N - 1, 4], dx[N - 1, 5]
            dxt[0] = (g_sh - ddt[8] * dsN) / h_sh
            dxt[1] = (g_ab - c_ab * dmN) / h_ab
            h1 = g_e1 + cd * dsN
            h2 = g_e2 + cd * dsN
            dxt[2] = e11 * h1 + e12 * h2
            dxt[3] = e12 * h1 + e22 * h2
            # slacks and multipliers, step length
            alpha_p, alpha_d = 1.0, 1.0
            for k in range(N):
                x0, x1, x2, x3, x4 = dx[k, 0], dx[k, 1], dx[k, 2], dx[k, 3], dx[k, 4]
                dpi = x2 - x3 + x0
                gd0, gd1, gd2, gd3, gd4 = dpi, -dpi, -x0 + x1, x2, -x2
                gd5, gd6, gd7, gd8, gd9, gd10 = x3, -x3, x0, x1, x4, -x4
                gdk = (gd0, gd1, gd2, gd3, gd4, gd5, gd6, gd7, gd8, gd9, gd10)
                for i in range(_NS):
                    if act[i] != 0.0:
                        dwi = gdk[i] + rw[k, i]
                        dzi = (dz[k, i] - z[k, i] * dwi) / w[k, i]
                        dw[k, i] = dwi
                        dz[k, i] = dzi
                        if dwi < 0.0:
                            alpha_p = min(alpha_p, -w[k, i] / dwi)
                        if dzi < 0.0:
                            alpha_d = min(alpha_d, -z[k, i] / dzi)
                    else:
                        dw[k, i] = 0.0
                        dz[k, i] = 0.0
            dsN, dmN = dx[N - 1, 4], dx[N - 1, 5]
            gdt = (dxt[0], -dxt[0], dxt[1], -dxt[1], dxt[2], -dxt[2], dxt[3], -dxt[3], dxt[0] + dsN,
                   dxt[1] + dmN, dxt[1] - dmN, dsN - dxt[2] - dxt[3])
            for i in range(_NT):
                if act_t[i] != 0.0:
                    dwi = gdt[i] + rwt[i]
                    dzi = (dzt[i] - zt[i] * dwi) / wt[i]
                    dwt[i] = dwi
                    dzt[i] = dzi
                    if dwi < 0.0:
                        alpha_p = min(alpha_p, -wt[i] / dwi)
                    if dzi < 0.0:
                        alpha_d = min(alpha_d, -zt[i] / dzi)
                else:
                    dwt[i] = 0.0
                    dzt[i] = 0.0
            alpha = min(alpha_p, alpha_d)
            if phase == 0:
                mu_aff = 0.0
                for k in range(N):
                    for i in range(_NS):
                        if act[i] != 0.0:
                            mu_aff += (w[k, i] + alpha * dw[k, i]) * (z[k, i] + alpha * dz[k, i])
                for i in range(_NT):
                    if act_t[i] != 0.0:
                        mu_aff += (wt[i] + alpha * dwt[i]) * (zt[i] + alpha * dzt[i])
                mu_aff /= n_side
                ratio = mu_aff / mu if mu > 0.0 else 0.0
                sigma_mu = ratio * ratio * ratio * mu
        step = min(1.0, 0.99 * alpha)
        total = dxt[0] + dxt[1] + dxt[2] + dxt[3]
        for k in range(N):
            total += dx[k, 0] + dx[k, 1] + dx[k, 2] + dx[k, 3] + dx[k, 4] + dx[k, 5]
        if not (math.isfinite(alpha) and math.isfinite(total)):
            status = NUMERICAL
            break
        for k in range(N):
            for j in range(6):
                xo[k, j] += step * dx[k, j]
            ys[k] -= step * dvs[k]
            ym[k] -= step * dvm[k]
            for i in range(_NS):
                w[k, i] += step * dw[k, i]
                z[k, i] += step * dz[k, i]
        for j in range(4):
            to[j] += step * dxt[j]
        for i in range(_NT):
            wt[i] += step * dwt[i]
            zt[i] += step * dzt[i]
    return status, it


@njit(cache=True, nogil=True, error_model="numpy")
def _chain_batch(N, r, c, sc, p_c, p_d, a, bb, dt, reg2, cb, ccap, tol_p, tol_d, tol_gap, max_iter):
    """:func:`_chain_one` over the rows of r, c (prices) and sc (:data:`_SCALARS`)."""
    batch = r.shape[0]
    xs = np.zeros((batch, N, 6))
    ts = np.zeros((batch, 4))
    status = np.zeros(batch, np.int64)
    iters = np.zeros(batch, np.int64)
    for b in range(batch):
        st, it = _chain_one(N, r[b], c[b], sc[b], p_c, p_d, a, bb, dt, reg2, cb, ccap, tol_p, tol_d, tol_gap,
                            max_iter, xs[b], ts[b])
        status[b] = st
        iters[b] = it
    return xs, ts, status, iters
