"""A sparse QP built once and re-solved with new numbers (casadi ``conic``).

    minimise ½ uᵀ H u + gᵀ u   subject to  lba ≤ A u ≤ uba,  lbx ≤ u ≤ ubx

The sparsity of H and A is fixed at construction; every solve passes new
values (H changes only when ρ does), so no problem is rebuilt per ADMM
iteration. Solvers: ``"highs"`` (default, active set: exact vertices, which
ADMM's stopping test likes), ``"piqp"`` (interior point; HiGHS's QP solver can
stall when only a few variables carry curvature), ``"osqp"`` and ``"qpoases"``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import casadi as ca
import numpy as np
import scipy.sparse as sp

SOLVERS = ("highs", "osqp", "qpoases", "daqp", "qrqp", "ipopt", "piqp")


def to_dm(m: sp.spmatrix) -> ca.DM:
    """A scipy sparse matrix as a casadi DM with the same sparsity."""
    m = sp.csc_matrix(m)
    m.sort_indices()
    sparsity = ca.Sparsity(m.shape[0], m.shape[1], m.indptr.tolist(), m.indices.tolist())
    return ca.DM(sparsity, m.data)


@contextlib.contextmanager
def _quiet():
    """Silence a solver's C-level stdout (qpOASES prints its licence banner)."""
    fd = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(fd, 1)
        os.close(fd)


@dataclass
class QPSolution:
    u: np.ndarray
    success: bool
    status: str
    lam_a: np.ndarray  #: multipliers of the linear constraints


class SparseQP:
    """One parametric QP; ``solve`` takes the numbers, the structure stays."""

    def __init__(self, h_pattern: sp.spmatrix, a: sp.spmatrix, solver: str = "highs") -> None:
        if solver not in SOLVERS:
            raise ValueError(f"QP solver must be one of {SOLVERS}, got {solver!r}")
        self.solver = solver
        # make the diagonal structurally present so that any diagonal update keeps the sparsity
        pattern = sp.csc_matrix(h_pattern) + sp.identity(h_pattern.shape[0], format="csc")
        self._h_sparsity = to_dm(pattern).sparsity()
        self.a = to_dm(a)
        self.n = h_pattern.shape[0]
        opts: dict = {"error_on_fail": False}
        if solver == "highs":
            opts["highs"] = {"output_flag": False}
        elif solver == "osqp":
            opts["osqp"] = {"verbose": False, "eps_abs": 1e-8, "eps_rel": 1e-8, "polish": True, "max_iter": 20000}
            opts["warm_start_primal"] = True
        elif solver == "qpoases":
            opts.update(printLevel="none", sparse=True)
        elif solver == "qrqp":
            opts.update(print_iter=False, print_header=False, print_info=False)
        elif solver == "ipopt":
            solver = "nlpsol"
            opts.update(nlpsol="ipopt", nlpsol_options={"ipopt.print_level": 0, "print_time": False,
                                                        "ipopt.tol": 1e-10, "ipopt.sb": "yes"})
        with _quiet():
            self._conic = ca.conic("qp", solver, {"h": self._h_sparsity, "a": self.a.sparsity()}, opts)
        self._u0: np.ndarray | None = None

    def hessian(self, h: sp.spmatrix) -> ca.DM:
        """``h`` projected onto the fixed sparsity (entries outside it would be an error)."""
        dm = to_dm(sp.csc_matrix(h) + 0.0 * sp.identity(self.n, format="csc"))
        return ca.project(dm, self._h_sparsity)

    def solve(self, h: ca.DM, g: np.ndarray, lba: np.ndarray, uba: np.ndarray, lbx: np.ndarray,
              ubx: np.ndarray) -> QPSolution:
        args = {"h": h, "g": ca.DM(g), "a": self.a, "lba": ca.DM(lba), "uba": ca.DM(uba),
                "lbx": ca.DM(lbx), "ubx": ca.DM(ubx)}
        if self._u0 is not None and self.solver == "osqp":
            args["x0"] = ca.DM(self._u0)
        res = self._conic(**args)
        stats = self._conic.stats()
        u = np.asarray(res["x"].full()).ravel()
        ok = bool(stats.get("success", False)) and bool(np.all(np.isfinite(u)))
        if ok:
            self._u0 = u
        return QPSolution(u=u, success=ok, status=str(stats.get("return_status", "")),
                          lam_a=np.asarray(res["lam_a"].full()).ravel())


class RetryingQP:
    """A :class:`SparseQP` with a second solver for when the first one fails, written once.

    Both are built once on the same structure. ``solve`` tries ``solver``;
    if it fails, ``fallback`` (unless None or the same). Counters, all since
    construction: ``solves`` (calls), ``retries`` (calls the fallback was
    tried on), ``rescued`` (calls the fallback answered), ``failures`` (calls
    neither answered; the caller decides what to do, never silently).
    """

    def __init__(self, h_pattern: sp.spmatrix, a: sp.spmatrix, solver: str, fallback: str | None = "highs") -> None:
        self.primary = SparseQP(h_pattern, a, solver)
        self.fallback = SparseQP(h_pattern, a, fallback) if fallback and fallback != solver else None
        self.solver = solver
        self.solves = self.retries = self.rescued = self.failures = 0

    def hessian(self, h: sp.spmatrix) -> tuple[ca.DM, ca.DM | None]:
        """``h`` for each solver (pass the pair to :meth:`solve`; rebuild only when ``h`` changes)."""
        return self.primary.hessian(h), (self.fallback.hessian(h) if self.fallback is not None else None)

    def solve(self, h: tuple[ca.DM, ca.DM | None], g: np.ndarray, lba: np.ndarray, uba: np.ndarray,
              lbx: np.ndarray, ubx: np.ndarray) -> QPSolution:
        """The first solver's answer, else the fallback's; ``status`` names both when both fail."""
        self.solves += 1
        sol = self.primary.solve(h[0], g, lba, uba, lbx, ubx)
        if sol.success or self.fallback is None:
            self.failures += int(not sol.success)
            return sol
        self.retries += 1
        first = sol.status or "no status"
        assert h[1] is not None  # made by hessian() with the fallback present
        sol = self.fallback.solve(h[1], g, lba, uba, lbx, ubx)
        if sol.success:
            self.rescued += 1
        else:
            self.failures += 1
            sol.status = f"{self.primary.solver}: {first}; {self.fallback.solver}: {sol.status or 'no status'}"
        return sol
