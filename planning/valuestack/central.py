"""The centralised benchmark: the whole value-stacking problem as one QP, MILP, or fix-and-resolve."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from dercosim.planning.admm.qp import RetryingQP
from dercosim.planning.valuestack.model import (Community, Fixings, Market, Streams, _community_matrices,
                                                   _objective, community_cost, complementarity_fixings,
                                                   complementarity_violations)
from dercosim.planning.valuestack.operator import Feeder, InfeasibleGrid, describe_base_violations, network_rows


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
        self.qp = RetryingQP(self.p, self.a, solver, fallback)
        self.h_dm = self.qp.hessian(self.p)
        self.feeder = feeder

    @property
    def retries(self) -> int:
        """Solves the fallback solver was tried on (``self.qp.rescued`` of them it answered)."""
        return self.qp.retries

    def solve(self, fixings: list[Fixings] | None = None) -> Solution:
        ubx = self._ubx0 if fixings is None else [
            f.upper_bounds(lay.block, ub0) for f, lay, ub0 in zip(fixings, self.layouts, self._ubx0)]
        args = (self.h_dm, self.q, self.lba, self.uba, self.lbx, np.concatenate(ubx))
        sol = self.qp.solve(*args)
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

        from dercosim.planning.admm.qp import to_dm

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
            idx = {name: off + lay.block[name] for name in ("p_charge_kw", "p_discharge_kw", "p_etb_kw", "p_ets_kw")}
            # epigraph variables d_c, d_d (H each) and binaries x (charge), y (buy)
            d_c, d_d = n_x + np.arange(h), n_x + h + np.arange(h)
            xb, yb = n_x + 2 * h + np.arange(h), n_x + 3 * h + np.arange(h)
            n_x += 4 * h
            extra_q += [np.ones(2 * h) if a_dt > 0 else np.zeros(2 * h), np.zeros(2 * h)]
            extra_lb += [np.zeros(4 * h)]
            extra_ub += [np.full(2 * h, np.inf), np.ones(2 * h)]
            discrete += [False] * (2 * h) + [True] * (2 * h)
            t = np.arange(h)
            for var, d, pmax in ((idx["p_charge_kw"], d_c, c.p_charge_max_kw), (idx["p_discharge_kw"], d_d, c.p_discharge_max_kw)):
                if a_dt > 0:
                    for pj in np.linspace(0.0, pmax, tangents):  # d ≥ 2 a p_j p − a p_j²
                        cols.append((row + t, d, np.ones(h)))
                        cols.append((row + t, var, np.full(h, -2.0 * a_dt * pj)))
                        lo.append(np.full(h, -a_dt * pj * pj))
                        hi.append(np.full(h, np.inf))
                        row += h
            for var, b, cap, on in ((idx["p_charge_kw"], xb, c.p_charge_max_kw, True), (idx["p_discharge_kw"], xb, c.p_discharge_max_kw, False),
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

    def solve_fix_and_resolve(self, rounds: int = 10, relaxed: Solution | None = None
                              ) -> tuple[Solution, list[Fixings], int]:
        """The relaxed optimum, then the fix-and-resolve of the ADMM path centrally: fix each violated pair's smaller direction, re-solve.

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
