"""Convex blocks coupled by exchanged variables: one agent per party, one coupling party, or one central QP.

A :class:`Block` is one party's convex problem (a QP with a diagonal
Hessian, often an LP):

    minimise   ½ Σ h_k u_k² + cᵀ u    subject to   lba ≤ A u ≤ uba,   lbx ≤ u ≤ ubx

Some of its variables (``exchanged``) are what it exchanges with the coupling
party; the coupling party's block has one such slice per agent. Coupling
constraint (what agent i sends = what the coupling party receives from i):

    u_i[exchanged_i] = u_0[exchange_slices[i]]

:class:`BlockAgent` and :class:`BlockCoupling` are the ADMM x- and
z-updates of :func:`dercosim.planning.admm.run_admm` on such blocks, each
a sparse QP built once whose linear term (and, when ρ changes, Hessian)
changes per iteration; :func:`solve_central` solves all blocks with the
coupling as equality rows in one QP, the reference the distributed solution
is measured against.
"""

from __future__ import annotations

from collections.abc import Sequence

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from dercosim.planning.admm.qp import SparseQP


class InfeasibleBlock(RuntimeError):
    """A block (or the central problem) has no solution; the message names it and the solver's status."""


@dataclass
class Block:
    """One party's convex problem; see the module doc. All arrays are float, ``a`` is sparse."""

    name: str
    c: np.ndarray
    a: sp.csr_matrix
    lba: np.ndarray
    uba: np.ndarray
    lbx: np.ndarray
    ubx: np.ndarray
    h: np.ndarray | None = None  #: diagonal of the Hessian (None: an LP)
    exchanged: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  #: indices sent to the coupling party
    index: dict[str, slice] = field(default_factory=dict)  #: named variable ranges, for reading a solution

    @property
    def n(self) -> int:
        return len(self.c)

    def hess(self) -> np.ndarray:
        return np.zeros(self.n) if self.h is None else np.asarray(self.h, float)

    def cost(self, u: np.ndarray) -> float:
        """½ uᵀ diag(h) u + cᵀ u at ``u``."""
        return float(0.5 * np.dot(self.hess() * u, u) + np.dot(self.c, u))

    def part(self, u: np.ndarray, name: str) -> np.ndarray:
        return np.asarray(u)[self.index[name]]

    def solve(self, fix_exchanged: float | None = None, solver: str = "highs") -> np.ndarray:
        """The block alone (``fix_exchanged``: pin every exchanged variable to this value, e.g. 0 = no sharing)."""
        lbx, ubx = self.lbx.copy(), self.ubx.copy()
        if fix_exchanged is not None:
            lbx[self.exchanged] = ubx[self.exchanged] = fix_exchanged
        qp = SparseQP(sp.diags(self.hess()), self.a, solver)
        sol = qp.solve(qp.hessian(sp.diags(self.hess())), self.c, self.lba, self.uba, lbx, ubx)
        if not sol.success:
            raise InfeasibleBlock(f"{self.name}: {sol.status}")
        return sol.u


class _ProximalQP:
    """A block's QP plus ρ/2 on the squares of ``prox`` (its exchanged variables), built once.

    ``_solve(g_extra)`` adds ``g_extra`` to the linear term; the Hessian is
    rebuilt only when ρ changes. On a solver failure the previous answer is
    kept and counted in ``failures`` (the engine's residuals then show it too).
    """

    def __init__(self, block: Block, prox: np.ndarray, solver: str) -> None:
        self.block = block
        self._mask = np.zeros(block.n)
        self._mask[prox] = 1.0
        self.qp = SparseQP(sp.diags(block.hess() + self._mask), block.a, solver)
        self._rho: float | None = None
        self._h: Any = None  # the Hessian for the current rho (SparseQP.hessian)
        self.u = np.zeros(block.n)
        self.failures = 0

    def _solve(self, rho: float, g_extra: np.ndarray) -> np.ndarray:
        b = self.block
        if rho != self._rho:
            self._rho, self._h = rho, self.qp.hessian(sp.diags(b.hess() + rho * self._mask))
        sol = self.qp.solve(self._h, b.c + g_extra, b.lba, b.uba, b.lbx, b.ubx)
        if sol.success:
            self.u = sol.u
        else:
            self.failures += 1
        return self.u

    def cost(self) -> float:
        return self.block.cost(self.u)


class BlockAgent(_ProximalQP):
    """ADMM x-update of one block: argmin f(u) + λᵀ(u_e − z) + ρ/2 ‖u_e − z‖², u_e the exchanged part."""

    def __init__(self, block: Block, solver: str = "highs") -> None:
        super().__init__(block, block.exchanged, solver)
        self.size = len(block.exchanged)

    def solve(self, z: np.ndarray, lam: np.ndarray, rho: float) -> np.ndarray:
        g = np.zeros(self.block.n)
        g[self.block.exchanged] = lam - rho * z
        return self._solve(rho, g)[self.block.exchanged].copy()


class BlockCoupling(_ProximalQP):
    """ADMM z-update of the coupling party's block: argmin f_0(u) + Σ_i λ_iᵀ(x_i − u_i) + ρ/2 ‖x_i − u_i‖².

    ``exchange_slices[i]`` are the coupling block's variables that mirror agent i's exchanged ones.
    """

    def __init__(self, block: Block, exchange_slices: list[np.ndarray], solver: str = "highs") -> None:
        self.slices = [np.asarray(s, int) for s in exchange_slices]
        super().__init__(block, np.concatenate(self.slices), solver)

    def solve(self, x: Sequence[np.ndarray], lam: Sequence[np.ndarray], rho: float) -> list[np.ndarray]:
        g = np.zeros(self.block.n)
        for s, x_i, l_i in zip(self.slices, x, lam):
            g[s] = -l_i - rho * x_i
        u = self._solve(rho, g)
        return [u[s].copy() for s in self.slices]


@dataclass
class CentralSolution:
    u: list[np.ndarray]  #: per agent block, then the coupling block last
    cost: float


def solve_central(agents: list[Block], coupling: Block, exchange_slices: list[np.ndarray],
                  solver: str = "highs") -> CentralSolution:
    """All blocks in one QP, the coupling as equality rows; the reference for the distributed solution."""
    blocks = [*agents, coupling]
    offsets = np.cumsum([0] + [b.n for b in blocks])
    n = int(offsets[-1])
    rows = [sp.block_diag([b.a for b in blocks], format="csr")]
    lba = [np.concatenate([b.lba for b in blocks])]
    uba = [np.concatenate([b.uba for b in blocks])]
    for i, (b, s) in enumerate(zip(agents, exchange_slices)):
        k = len(b.exchanged)
        m = sp.lil_matrix((k, n))
        m[np.arange(k), offsets[i] + b.exchanged] = 1.0
        m[np.arange(k), offsets[-2] + np.asarray(s, int)] = -1.0
        rows.append(m.tocsr())
        lba.append(np.zeros(k))
        uba.append(np.zeros(k))
    a = sp.vstack(rows, format="csr")
    h = np.concatenate([b.hess() for b in blocks])
    c = np.concatenate([b.c for b in blocks])
    qp = SparseQP(sp.diags(h), a, solver)
    sol = qp.solve(qp.hessian(sp.diags(h)), c, np.concatenate(lba), np.concatenate(uba),
                   np.concatenate([b.lbx for b in blocks]), np.concatenate([b.ubx for b in blocks]))
    if not sol.success:
        raise InfeasibleBlock(f"central problem: {sol.status}")
    parts = [sol.u[offsets[i]:offsets[i + 1]] for i in range(len(blocks))]
    return CentralSolution(u=parts, cost=float(sum(b.cost(p) for b, p in zip(blocks, parts))))
