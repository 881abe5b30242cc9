"""One planning run: ADMM between the communities and the grid operator, fix-and-resolve, the benchmark."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dercosim.planning.valuestack.central import CentralQP, Solution
from dercosim.planning.valuestack.community import CommunityQP
from dercosim.planning.valuestack.model import (Community, Fixings, Market, Streams, community_cost,
                                                   complementarity_fixings, complementarity_violations)
from dercosim.planning.valuestack.operator import Feeder, GridOperatorQP, plan_voltages_pu


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
    solver_retries: int  #: subproblem QP solves the fallback solver was tried on
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


def solve_value_stacking(communities: list[Community], market: Market, feeder: Feeder, settings,
                         streams: Streams = Streams(), binaries: str = "relaxed", central: bool = True,
                         fix_rounds: int = 10, agent_solver: str = "osqp", operator_solver: str = "daqp") -> PlanResult:
    """ADMM between the communities and the grid operator, then complementarity fix-and-resolve (dercosim resolves the paper's binaries this way).

    ``settings`` is an :class:`dercosim.planning.admm.engine.ADMMSettings`. With
    ``central`` the same problem is also solved in one QP (relaxed, and with
    the final fixings) for the cost gap, and with ``binaries =
    "mixed_integer"`` as a MILP (:meth:`CentralQP.solve_mixed_integer`).
    """
    from dercosim.planning.admm.engine import run_admm

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
