"""A community's ADMM subproblem (x-update), built once and re-solved with new numbers."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from dercosim.planning.admm.qp import RetryingQP
from dercosim.planning.valuestack.model import (Community, Fixings, Market, Streams, _community_matrices,
                                                   _Layout, _objective, community_cost, complementarity_fixings)


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
        self.qp = RetryingQP(self._p, self._a, solver, fallback)
        self._rho: float | None = None
        self._h: Any = None  # the Hessian pair for the current rho (RetryingQP.hessian)
        self.u = np.zeros(self.layout.n)
        self.failures = 0  #: subproblem solves neither solver answered (the previous answer was kept)

    def fix(self, fixings: Fixings) -> None:
        """Forbid the given directions (upper bound 0) from now on."""
        self.fixings = fixings
        self._ubx = self._bounds_with(fixings)

    def _bounds_with(self, f: Fixings) -> np.ndarray:
        return f.upper_bounds(self.layout.block, self._ubx0)

    @property
    def retries(self) -> int:
        """QP solves the fallback solver was tried on."""
        return self.qp.retries

    def _solve_u(self, g: np.ndarray, ubx: np.ndarray) -> np.ndarray | None:
        sol = self.qp.solve(self._h, g, self._lba, self._uba, self._lbx0, ubx)
        return sol.u if sol.success else None

    def solve(self, z: np.ndarray, lam: np.ndarray, rho: float) -> np.ndarray:
        if rho != self._rho:
            self._rho = rho
            self._h = self.qp.hessian(self._p + rho * sp.diags(self._mask))
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
