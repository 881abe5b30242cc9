"""Household energy-management MPC (Couraud et al. 2022), built once in casadi and re-solved with new parameters.

Every call optimises the battery over the rest of the current market interval
(at most ``horizon_max`` steps of ``dt_h``) and returns a plan whose first
step goes to the battery. Variables per step k: charge ``pc``, discharge
``pd``, export ``pe`` (kW, ≥ 0), stored energy ``soc`` (kWh) at the end of
the step, the export-cap violation ``ve``; the SoC shortfall ``sh``; and
``ab`` = |RE − planned net export|. Import is not a variable but the
expression ``pi = residual + pc − pd + pe`` (the meter balance), kept ≥ 0.

Objective (ε = sign(RE)), all energies over ``dt``::

    Σ c_imp·pi + (1 − ε)·c_exp_pen·pe                 import cost, export penalty
  + S·(1 − ε²)·w_soc·sh / capacity                     SoC shortfall below the target
  + |ε|·w_re·ab / (max energy per step)                 missing the export commitment RE
  − v1·e1 − v2·e2,  e1 + e2 ≤ soc_end                   value of energy left in the battery, in two
                                                        capped tiers (the rest is worth nothing)
  + c_both·Σ (pc + pd) + c_cap·Σ ve                     never both ways at once; the export cap is soft
  [+ reg·Σ (pc² + pd²)]                                 qp only: makes the optimum unique; reg is relative to
                                                        the battery's power (a kWh at full power costs the same
                                                        on a 5.3-kW and a 371-kW battery)

Constraints: ``0 ≤ pi ≤ import cap``; SoC dynamics with η_c, 1/η_d; SoC and
power bounds; ``pe − ve ≤ export cap``; ``sh ≥ target − soc_end``;
``ab ≥ ±(RE − Σ (pe − pi)·dt)``.

The stored-energy value is dercosim's addition to Couraud et al. 2022: the horizon ends
with the market interval (≤ 30 min), and without a value on what is left in
the battery the plan would never store anything beyond it. The controller
sets the tiers from the price ahead and the expected deficit
(:meth:`HouseholdMPC.auto_soc_value`); a fixed value can be given instead.
It is finite (a capped amount) when there is no outlook yet, and 0 for a
battery with no load behind it (a central plant's), whose energy serves the
market's commitments and SoC target only.

RE < 0 in an interval with a commitment (the fleet is ahead of it): "absorb"
(default; the paper's text and the authors' code: the home imports its w_i
share) or "ignore" (the literal ε = −1: no RE term, the export penalty
doubled); ``MPCInputs.absorb_negative_re``.

Formulations: ``"qp"`` (default) and ``"milp"`` (binaries for
charge/discharge and import/export exclusivity; HiGHS). The qp's default
solver is dercosim's own (:mod:`dercosim.controllers.ipm`, ``qp_solver =
"ipm"``): a batched interior point on the QP's chain structure, compiled
with numba, ~0.05 ms of CPU per QP where PIQP through casadi ``map`` takes
~0.25 ms, within 1e-6 of PIQP's objective at p99 (benchmarks/solverfloor.py).
A QP it does not solve goes to PIQP, then qpOASES (``Plan.retried`` tells,
counted in the summary). The casadi solvers are ``qpsol`` problems with
fixed structure, built once per battery, each call only passing numbers:
PIQP (``qp_solver = "piqp"``, a proximal interior-point method, the previous
default), OSQP (ADMM, 10-20 ms at the tolerance that pins the first setpoint
and sometimes stops at its iteration limit; benchmarks/mpc.py) and qpOASES
(active set, slower, robust). A plan that still fails is left to the
caller's fallback.
:func:`solve_with_opti` builds the same problem with ``casadi.Opti`` on every
call — the slow path, kept for the benchmark and as an independent check.

References
----------
- Couraud et al. 2022: B. Couraud, V. Robu, D. Flynn, M. Andoni, S. Norbu and H. Quinard, "Real-Time Control of
    Distributed Batteries with Blockchain-Enabled Market Export Commitments," IEEE Transactions
    on Sustainable Energy, 2022. (eq. (5) (missing from the text; objective as resolved here), (8)–(9))
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import casadi as ca
import numpy as np
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from dercosim.controllers.base import whole_number
from dercosim.timeseries.forecast import LinearRegression, _centred, make_forecaster

INF = np.inf  # casadi bounds: "no bound" (a large finite number ruins OSQP's scaling)
BIG_M_KW = 1e3  #: milp: bound on import/export used for their exclusivity binaries
#: tight, because the optimum is flat in time (equal prices): the first setpoint is only pinned to
#: about eps / (reg·dt); at 1e-8 two codings of the problem agree to ~1e-3 kW (benchmarks/mpc.py)
OSQP_OPTIONS = {"verbose": False, "eps_abs": 1e-8, "eps_rel": 1e-8, "polish": True, "max_iter": 20000}


@dataclass(frozen=True)
class BatteryModel:
    capacity_kwh: float
    p_charge_max_kw: float
    p_discharge_max_kw: float
    eta_charge: float
    eta_discharge: float
    soc_min_frac: float = 0.0
    soc_max_frac: float = 1.0


@dataclass(frozen=True)
class Weights:
    export_penalty_per_kwh: float = 0.01  #: c_exp_pen, scaled by (1 − ε)
    w_soc: float = 10.0  #: a unit weight would make a kWh of shortfall cheaper than importing it
    w_re: float = 1.0
    both_ways_per_kwh: float = 1e-3  #: c_both
    cap_violation_per_kwh: float = 1000.0  #: c_cap; must outweigh every other term (a kWh of missed RE costs w_re/E_step ≈ 11)
    #: qp only: the marginal cost of a kWh charged or discharged at full power (2·reg·P_max); reg per kW² h is this
    #: over 2·P_max, so it scales with the battery (1e-3 per kW² h at 5.3 kW; ~5 % of the energy price)
    regularisation_per_kwh: float = 0.0106

    def reg_per_kw2h(self, battery: "BatteryModel") -> float:
        """reg of the qp objective for ``battery``, per kW² h."""
        return self.regularisation_per_kwh / (2.0 * max(battery.p_charge_max_kw, battery.p_discharge_max_kw))


@dataclass
class MPCInputs:
    """One MPC call. ``residual_kw[0]`` is the current minute (measured), the rest forecast."""

    soc_kwh: float
    residual_kw: np.ndarray
    import_price: np.ndarray
    re_kwh: float = 0.0  #: remaining export commitment over the interval (+ export, − import)
    s_mode: float = 0.0  #: S: 1 = steer SoC to the target, 0 = the battery follows residual demand
    soc_target_frac: float = 0.0
    export_cap_kw: float = math.inf
    import_cap_kw: float = math.inf
    soc_value_per_kwh: float = 0.0  #: v1: value of stored energy left at the end, currency/kWh stored
    soc_value_cap_kwh: float = math.inf  #: how much of it is worth v1 (kWh stored)
    soc_value2_per_kwh: float = 0.0  #: v2 (≤ v1): value of the next tier
    soc_value2_cap_kwh: float = 0.0  #: its size (kWh stored); energy beyond both tiers is worth nothing
    absorb_negative_re: bool = True  #: RE < 0: import the share (True) or no RE term (False; see the module doc)


@dataclass
class Plan:
    success: bool
    status: str
    solve_s: float
    p_battery_kw: np.ndarray = field(default_factory=lambda: np.zeros(0))  #: + = charging
    p_import_kw: np.ndarray = field(default_factory=lambda: np.zeros(0))
    p_export_kw: np.ndarray = field(default_factory=lambda: np.zeros(0))
    soc_kwh: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cost: float = math.nan  #: objective without the qp regularisation
    follow_residual: bool = False  #: the first step merely follows the forecast residual
    retried: bool = False  #: the primary solver failed and the second one answered
    dt_h: float = 1 / 60  #: the plan's step, h (the problem's)

    @property
    def setpoint_kw(self) -> float:
        return float(self.p_battery_kw[0]) if len(self.p_battery_kw) else 0.0

    @property
    def net_export_kwh(self) -> float:
        """Planned export − import over the horizon, kWh."""
        return float(np.sum(self.p_export_kw - self.p_import_kw)) * self.dt_h


class _Layout:
    """Index ranges of the decision vector."""

    def __init__(self, h: int, milp: bool) -> None:
        names = ["pc", "pd", "pe", "soc", "ve"] + (["xb", "yb"] if milp else [])
        self.slices: dict[str, slice] = {}
        pos = 0
        for name in names:
            self.slices[name] = slice(pos, pos + h)
            pos += h
        self.sh, self.ab, self.e1, self.e2 = pos, pos + 1, pos + 2, pos + 3
        self.n = pos + 4


class MPCProblem:
    """The household MPC for one battery, built once; :meth:`solve` re-solves with new numbers.

    Problems with the same battery, horizon, step, formulation and weights
    share one casadi formulation and, for the solvers that keep no state
    between calls (PIQP, HiGHS), one compiled solver per thread (building
    them costs ~3 ms; a fleet of equal batteries builds them once). OSQP (warm
    start) and qpOASES (hot start) keep one per problem, as before.
    :meth:`solve_many` solves many problems' calls at once (casadi ``map``
    over threads) with the very same numbers as one :meth:`solve` after
    another.
    """

    def __init__(self, battery: BatteryModel, horizon_max: int = 30, dt_h: float = 1 / 60,
                 formulation: str = "qp", weights: Weights = Weights(), solver: str | None = None) -> None:
        if formulation not in ("qp", "milp"):
            raise ValueError(f"formulation must be 'qp' or 'milp', got {formulation!r}")
        self.battery, self.h, self.dt_h = battery, int(horizon_max), float(dt_h)
        self.formulation, self.weights = formulation, weights
        self.solver_name = solver or ("ipm" if formulation == "qp" else "highs")
        self.key = (battery, self.h, self.dt_h, formulation, weights)
        self.layout, self._problem = _shared_formulation(self.key)
        if self.solver_name == "ipm" and formulation != "qp":
            raise ValueError("solver 'ipm' solves the qp formulation only")
        self._own: dict[str, Any] = {}  # solvers that keep state between calls (OSQP, qpOASES): one per problem
        if self.solver_name != "ipm":  # (ipm: its PIQP fallback built on need)
            self._solver_for(self.solver_name)  # built now: a bad option fails here, not at the first solve
        else:  # compiled on first use and cached on disk; loaded now, in the run's set-up
            from dercosim.controllers import ipm

            ipm.load_kernels()
        self._warm: dict[str, Any] | None = None

    def _solver_for(self, name: str) -> Any:
        """The compiled solver ``name``: shared if it answers from the numbers alone, else this problem's own."""
        if name in _SUCCESS_STATUS:
            return _shared_solver(self.key, name)
        if name not in self._own:
            self._own[name] = _build_solver(self.key, name)
        return self._own[name]

    @property
    def batchable(self) -> bool:
        """Whether :meth:`solve_many` can solve this problem's calls in one batch: PIQP and HiGHS answer from the
        numbers alone; OSQP's warm start and qpOASES's hot start carry state from the previous call."""
        return self.solver_name in _SUCCESS_STATUS or self.solver_name == "ipm"

    def arguments(self, inp: MPCInputs) -> dict[str, np.ndarray]:
        """Numeric parameters and bounds for one call (shared with :func:`solve_with_opti`)."""
        return _arguments(inp, self.battery, self.layout, self.h, self.dt_h, self.weights, self.formulation)

    def solve(self, inp: MPCInputs) -> Plan:
        if self.solver_name == "ipm":
            return MPCProblem._solve_ipm([self], [inp], 1)[0]
        return self._solve_casadi(inp, self.solver_name)

    def _solve_casadi(self, inp: MPCInputs, name: str) -> Plan:
        """One call with the casadi solver ``name``; a qp that fails is retried once with qpOASES."""
        args = self.arguments(inp)
        call = {k: args[k] for k in ("p", "lbx", "ubx", "lbg", "ubg")}
        t0 = time.perf_counter()
        warm = self._warm if self.formulation == "qp" and name == "osqp" else None
        ok, status, sol = _call(self._solver_for(name), {**call, **(warm or {})}, args)
        retried = False
        if not ok and self.formulation == "qp" and name != "qpoases":
            retried = True
            with _quiet_stdout():  # its licence banner comes with the first solve
                ok, status2, sol = _call(self._solver_for("qpoases"), call, args)  # built on first need
            status = f"{name}: {status}; qpoases: {status2}"
        solve_s = time.perf_counter() - t0
        if not ok:
            self._warm = None
            return Plan(False, status, solve_s, retried=retried)
        if self.formulation == "qp":
            self._warm = {"x0": sol["x"], "lam_x0": sol["lam_x"], "lam_g0": sol["lam_g"]}
        plan = self._plan(np.asarray(sol["x"]).ravel(), float(sol["f"]), inp, status, solve_s)
        plan.retried = retried
        return plan

    @staticmethod
    def solve_many(problems: list["MPCProblem"], inputs: list[MPCInputs], threads: int = 1) -> list[Plan]:
        """One plan per (problem, inputs), the same as ``[p.solve(i) for p, i in zip(problems, inputs)]``.

        Calls whose problems share a formulation and solver (PIQP or HiGHS:
        no state between calls) are solved in one casadi ``map`` over
        ``threads`` threads, with the same solver on the same numbers, so the
        plans are identical. If any call of a batch fails, or an answer
        breaks a bound, those calls are solved again one by one, which gives
        the solver's own status and the qpOASES retry. ``solve_s`` of a
        batched plan is the batch's wall time divided by its size.
        """
        plans: list[Plan | None] = [None] * len(problems)
        groups: dict[tuple, list[int]] = {}
        for i, problem in enumerate(problems):
            if problem.batchable:
                groups.setdefault((problem.key, problem.solver_name), []).append(i)
            else:
                plans[i] = problem.solve(inputs[i])
        for (key, name), idx in groups.items():
            if name == "ipm":
                for i, plan in zip(idx, MPCProblem._solve_ipm([problems[i] for i in idx], [inputs[i] for i in idx],
                                                              threads)):
                    plans[i] = plan
                continue
            if len(idx) == 1:
                plans[idx[0]] = problems[idx[0]].solve(inputs[idx[0]])
                continue
            first = problems[idx[0]]
            batch_inputs = [inputs[i] for i in idx]
            compact = first.compact_columns(batch_inputs)
            t0 = time.perf_counter()
            solved = _solve_batch(key, name, max(1, int(threads)), compact)
            solve_s = (time.perf_counter() - t0) / len(idx)
            if solved is None:  # a call failed ('error_on_fail'): solve them one by one
                for i in idx:
                    plans[i] = problems[i].solve(inputs[i])
                continue
            xs, fs, inside = solved
            status = _SUCCESS_STATUS[name]
            for col, i in enumerate(idx):
                if inside[col] > 0:  # every bound kept within 1e-4, as :func:`_call` checks
                    plans[i] = problems[i]._plan(xs[col], float(fs[col]), inputs[i], status, solve_s)
                else:  # today's path names the violation and retries
                    plans[i] = problems[i].solve(inputs[i])
        return plans  # type: ignore[return-value]

    @staticmethod
    def _solve_ipm(problems: list["MPCProblem"], inputs: list[MPCInputs], threads: int) -> list[Plan]:
        """Calls of one problem key by :func:`dercosim.controllers.ipm.solve_compact` (its kernels split over
        ``threads`` threads: they release the GIL); a call it does not solve goes to PIQP (then qpOASES),
        and its plan says ``retried``."""
        from dercosim.controllers import ipm

        first = problems[0]
        compact = first.compact_columns(inputs)
        t0 = time.perf_counter()
        res = ipm.solve_compact(compact, first.battery, first.h, first.dt_h, first.weights, threads=threads)
        n = len(inputs)
        solve_s = (time.perf_counter() - t0) / n
        solved = res.status == ipm.SOLVED
        made = iter(first._plans(res.x[solved], res.objective[solved], [inputs[i] for i in np.flatnonzero(solved)],
                                 "solved", solve_s))
        plans: list[Plan] = []
        for i in range(n):
            if solved[i]:
                plans.append(next(made))
                continue
            plan = problems[i]._solve_casadi(inputs[i], "piqp")
            plan.status = f"ipm: {ipm.STATUS_NAMES[int(res.status[i])]}; piqp: {plan.status}"
            plan.retried = True
            plans.append(plan)
        return plans

    def compact_columns(self, inputs: list[MPCInputs]) -> np.ndarray:
        """The batch's input, one column per call of this problem: its parameters ``p`` and the numbers its bounds
        are made of (:func:`_compact_arguments`); what :func:`_solve_batch` and the interior point take."""
        stacked = _arguments_many(inputs, self.battery, self.layout, self.h, self.dt_h, self.weights,
                                  self.formulation)
        return _compact_arguments(stacked, inputs, self.layout, self.h)

    def _plan(self, xv: np.ndarray, objective: float, inp: MPCInputs, status: str, solve_s: float) -> Plan:
        sl = self.layout.slices
        ha = len(inp.residual_kw)
        pc, pd, pe = xv[sl["pc"]][:ha], xv[sl["pd"]][:ha], xv[sl["pe"]][:ha]
        p_bat = pc - pd
        pi = np.maximum(np.asarray(inp.residual_kw, float) + p_bat + pe, 0.0)  # what np.clip(·, 0, None) calls
        b = self.battery
        tol = 1e-3
        follows = (abs(p_bat[0] + inp.residual_kw[0]) < tol and pd[0] < b.p_discharge_max_kw - tol
                   and pc[0] < b.p_charge_max_kw - tol)
        cost = float(self._costs(xv[None, :], np.array([objective]))[0])
        return Plan(True, status, solve_s, p_bat, pi, pe, xv[sl["soc"]][:ha], cost, bool(follows), dt_h=self.dt_h)

    def _plans(self, xs: np.ndarray, objectives: np.ndarray, inputs: list[MPCInputs], status: str,
               solve_s: float) -> list[Plan]:
        """:meth:`_plan` of many solutions of this problem (rows of ``xs``) at once: the same numbers."""
        lengths = {len(inp.residual_kw) for inp in inputs}
        if len(lengths) != 1:  # calls of different horizons (none, or qp_horizon = "remaining")
            return [self._plan(x, float(f), inp, status, solve_s) for x, f, inp in zip(xs, objectives, inputs)]
        ha = lengths.pop()
        sl = self.layout.slices
        pc, pd, pe = xs[:, sl["pc"]][:, :ha], xs[:, sl["pd"]][:, :ha], xs[:, sl["pe"]][:, :ha]
        p_bat = pc - pd
        residual = np.stack([np.asarray(inp.residual_kw, float) for inp in inputs])
        pi = np.maximum(residual + p_bat + pe, 0.0)
        b = self.battery
        tol = 1e-3
        follows = ((np.abs(p_bat[:, 0] + residual[:, 0]) < tol) & (pd[:, 0] < b.p_discharge_max_kw - tol)
                   & (pc[:, 0] < b.p_charge_max_kw - tol))
        soc = xs[:, sl["soc"]][:, :ha]
        costs = self._costs(xs, objectives).tolist()
        follows_list = follows.tolist()
        return [Plan(True, status, solve_s, p_bat[i], pi[i], pe[i], soc[i], costs[i], follows_list[i],
                     dt_h=self.dt_h) for i in range(len(inputs))]

    def _costs(self, xs: np.ndarray, objectives: np.ndarray) -> np.ndarray:
        """The solver's objectives minus the qp regularisation, one per row of ``xs`` (numpy, over the rows)."""
        objectives = np.asarray(objectives, dtype=float)
        if self.formulation != "qp":
            return objectives
        sl = self.layout.slices
        pc, pd = xs[:, sl["pc"]], xs[:, sl["pd"]]
        reg = self.weights.reg_per_kw2h(self.battery)
        return objectives - reg * self.dt_h * (np.einsum("ij,ij->i", pc, pc) + np.einsum("ij,ij->i", pd, pd))


#: the status a solver reports on success (a batch that did not raise succeeded in every call)
_SUCCESS_STATUS = {"piqp": "solved", "highs": "Optimal"}
_BUILD_LOCK = threading.RLock()
_FORMULATIONS: dict[tuple, tuple[_Layout, dict[str, Any]]] = {}
_SOLVERS: dict[tuple, Any] = {}


def _shared_formulation(key: tuple) -> tuple[_Layout, dict[str, Any]]:
    """The layout and casadi expressions of the problem ``key`` = (battery, horizon, dt_h, formulation, weights),
    built once per process."""
    with _BUILD_LOCK:
        if key not in _FORMULATIONS:
            battery, h, dt_h, formulation, weights = key
            layout = _Layout(h, formulation == "milp")
            x = ca.SX.sym("x", layout.n)
            p = ca.SX.sym("p", 2 * h + 5)  # residual (h), c_imp (h), k_exp, k_sh, k_ab, v1, v2
            f, g = _formulation(x, p, layout, battery, h, dt_h, weights, formulation)
            _FORMULATIONS[key] = (layout, {"x": x, "p": p, "f": f, "g": g})
        return _FORMULATIONS[key]


def _build_solver(key: tuple, name: str, error_on_fail: bool = False) -> Any:
    layout, problem = _shared_formulation(key)
    opts: dict[str, Any] = {"error_on_fail": error_on_fail, "print_time": False}
    if name == "osqp":
        opts["osqp"] = OSQP_OPTIONS
        opts["warm_start_primal"] = True
        opts["warm_start_dual"] = True
    elif name == "highs":
        opts["highs"] = {"output_flag": False}
    elif name == "qpoases":
        opts["printLevel"] = "none"
        opts["enableRegularisation"] = True  # the Hessian is only semi-definite (LP directions)
    if key[3] == "milp":
        discrete = [False] * layout.n
        for part in ("xb", "yb"):
            for i in range(*layout.slices[part].indices(layout.n)):
                discrete[i] = True
        opts["discrete"] = discrete
    with _quiet_stdout():  # qpOASES prints a licence banner when made
        return ca.qpsol(f"household_mpc_{name}", name, problem, opts)


def _shared_solver(key: tuple, name: str) -> Any:
    """The compiled solver ``name`` of problem ``key`` for the calling thread (a casadi Function's stats are
    those of its last call, so threads do not share one)."""
    ident = (key, name, threading.get_ident())
    solver = _SOLVERS.get(ident)
    if solver is None:
        with _BUILD_LOCK:
            solver = _SOLVERS[ident] = _build_solver(key, name)
    return solver


def _solve_batch(key: tuple, name: str, threads: int,
                 compact: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """:func:`_batch_function` over the columns of ``compact`` (casadi ``map`` over ``threads`` threads), or None
    if any call failed: (solutions, one row per call; objectives; bound check, > 0 where every bound holds).

    The numbers go in and out through a casadi ``FunctionBuffer``, which reads and writes numpy's memory
    directly: calling the Function instead converts every number to and from a casadi DM, 0.4-0.6 ms of a
    batch of 70 calls' ~8 ms. casadi reads column-major, so call j's column is row j of a C-ordered array.
    The map and its buffer are made once per batch size and thread."""
    n = compact.shape[1]
    ident = (key, name, threading.get_ident(), n, threads)
    found = _SOLVERS.get(ident)
    if found is None:
        with _BUILD_LOCK:
            one = _batch_function(key, name)
            mapped = one.map(n, "thread", threads) if threads > 1 else one.map(n)
            found = _SOLVERS[ident] = (mapped.size1_out(0), *mapped.buffer())
    n_x, buffer, evaluate = found
    arg = np.ascontiguousarray(compact.T)
    xs, fs, inside = np.empty((n, n_x)), np.empty(n), np.empty(n)
    buffer.set_arg(0, memoryview(arg))  # type: ignore[arg-type]  # numpy arrays are buffers; its stubs say otherwise
    for i, res in enumerate((xs, fs, inside)):
        buffer.set_res(i, memoryview(res))  # type: ignore[arg-type]
    with _quiet_stdout(stderr=True):  # a failing call dumps its QP; the caller solves it again
        evaluate()
    return (xs, fs, inside) if buffer.ret() == 0 else None


def bound_violation(key: tuple, compact: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Per call (a column of ``compact``, its answer a row of ``xs``): the largest amount by which the answer
    breaks a bound or a row of the casadi formulation of problem ``key`` (≤ 0 where all hold)."""
    _, problem = _shared_formulation(key)
    h = key[1]
    g = ca.Function("g", [problem["x"], problem["p"]], [problem["g"]])
    q, x = ca.MX.sym("q", compact.shape[0]), ca.MX.sym("x", xs.shape[1])
    lbx, ubx, lbg, ubg = _bound_expressions(q, key)
    gx = g(x, q[:2 * h + 5])
    worst = ca.mmax(ca.vertcat(lbx - x, x - ubx, lbg - gx, gx - ubg))
    f = ca.Function("violation", [q, x], [worst]).map(compact.shape[1])
    return np.asarray(f(compact, xs.T)).ravel()


def piqp_reference(key: tuple, compact: np.ndarray, eps_abs: float = 1e-11, eps_rel: float = 1e-12) -> np.ndarray:
    """The answers (one row per column of ``compact``) of PIQP run to tight tolerances (its defaults are 1e-8
    absolute and 1e-9 relative): the reference the MPC's solvers are measured against."""
    _, problem = _shared_formulation(key)
    h = key[1]
    tight = ca.qpsol("piqp_reference", "piqp", problem, {"error_on_fail": False, "print_time": False,
                                                         "piqp": {"eps_abs": eps_abs, "eps_rel": eps_rel}})
    q = ca.MX.sym("q", compact.shape[0])
    lbx, ubx, lbg, ubg = _bound_expressions(q, key)
    f = ca.Function("f", [q], [tight(p=q[:2 * h + 5], lbx=lbx, ubx=ubx, lbg=lbg, ubg=ubg)["x"]])
    return np.asarray(f.map(compact.shape[1])(compact)).T


#: per call, after the 2h + 5 parameters: the numbers the bounds are made of (:func:`_compact_arguments`)
_COMPACT = ("steps", "soc_lb", "soc_ub", "soc0", "value_cap", "value2_cap", "target", "re", "minus_re",
            "export_cap", "import_cap")


def _compact_arguments(stacked: dict[str, np.ndarray], inputs: list[MPCInputs], layout: _Layout,
                       h: int) -> np.ndarray:
    """One column per call: its parameters ``p`` and the 11 numbers its bounds are made of, read from the
    full bounds of :func:`_arguments_many`.

    A call's full arguments are 561 numbers at h = 30, its column here 76, and
    casadi converts numpy arrays at ~0.1 µs per number, both ways: at 2,000
    households that was a third of the batch. :func:`_bound_expressions` lays the bounds out again
    inside casadi by selection alone, so they are the same numbers to the bit
    (tests/test_mpc.py)."""
    soc = layout.slices["soc"].start
    steps = np.array([len(inp.residual_kw) for inp in inputs], dtype=float)
    rows = [steps, stacked["lbx"][soc], stacked["ubx"][soc], stacked["lbg"][h], stacked["ubx"][layout.e1],
            stacked["ubx"][layout.e2], stacked["lbg"][2 * h], stacked["lbg"][2 * h + 1], stacked["lbg"][2 * h + 2],
            stacked["ubg"][2 * h + 3], stacked["ubg"][0]]
    return np.vstack([stacked["p"], *rows])


def _bound_expressions(q: Any, key: tuple) -> tuple[Any, Any, Any, Any]:
    """lbx, ubx, lbg, ubg of one call (casadi MX) from its compact column ``q`` (:func:`_compact_arguments`), laid
    out as :func:`_arguments_many` does, by selection only (no arithmetic on the numbers)."""
    battery, h, _, formulation, _ = key
    layout, _ = _shared_formulation(key)
    c = dict(zip(_COMPACT, (q[2 * h + 5 + i] for i in range(len(_COMPACT)))))
    active = ca.DM(np.arange(h)) < c["steps"]
    zeros, ones = ca.DM.zeros(h), ca.DM.ones(h)
    given = lambda value: ca.if_else(active, value * ones, zeros)  # noqa: E731 - the value where active, else 0
    repeat = lambda value: ca.repmat(value, h, 1)  # noqa: E731
    milp = formulation == "milp"
    lbx = ca.vertcat(zeros, zeros, zeros, repeat(c["soc_lb"]), zeros, *([zeros, zeros] if milp else []),
                     ca.DM.zeros(4))
    ubx = ca.vertcat(given(battery.p_charge_max_kw), given(battery.p_discharge_max_kw), given(INF),
                     repeat(c["soc_ub"]), given(INF), *([ones, ones] if milp else []), INF, INF, c["value_cap"],
                     c["value2_cap"])
    lbg = ca.vertcat(zeros, c["soc0"], ca.DM.zeros(h - 1), c["target"], c["re"], c["minus_re"], zeros, 0)
    ubg = ca.vertcat(given(c["import_cap"]), c["soc0"], ca.DM.zeros(h - 1), INF, INF, INF, repeat(c["export_cap"]),
                     INF)
    if milp:
        lbg = ca.vertcat(lbg, -INF * ca.DM.ones(4 * h))
        ubg = ca.vertcat(ubg, zeros, battery.p_discharge_max_kw * ones, zeros, BIG_M_KW * ones)
    assert lbx.numel() == ubx.numel() == layout.n
    return lbx, ubx, lbg, ubg


def _batch_function(key: tuple, name: str) -> Any:
    """One call as the batch runs it: compact column in; the solution, the objective and whether every bound
    holds within 1e-4 (as :func:`_call` checks) out. Raises if the solver fails ('error_on_fail')."""
    h = key[1]
    q = ca.MX.sym("q", 2 * h + 5 + len(_COMPACT))
    lbx, ubx, lbg, ubg = _bound_expressions(q, key)
    sol = _build_solver(key, name, error_on_fail=True)(p=q[:2 * h + 5], lbx=lbx, ubx=ubx, lbg=lbg, ubg=ubg)
    x, g, tol = sol["x"], sol["g"], 1e-4
    inside = ca.mmin(ca.vertcat(lbx - tol <= x, x <= ubx + tol, lbg - tol <= g, g <= ubg + tol))
    return ca.Function(f"household_mpc_{name}_batch", [q], [x, sol["f"], inside])


def _regularisation(x: Any, layout: _Layout, dt_h: float, w: Weights, formulation: str, b: BatteryModel) -> Any:
    if formulation != "qp":
        return 0
    sl = layout.slices
    return w.reg_per_kw2h(b) * dt_h * (ca.sumsqr(x[sl["pc"]]) + ca.sumsqr(x[sl["pd"]]))


def _formulation(x: Any, p: Any, layout: _Layout, b: BatteryModel, h: int, dt_h: float, w: Weights,
                 formulation: str) -> tuple[Any, Any]:
    """Objective and constraint expressions (casadi SX or MX) of the MPC; see the module doc."""
    sl = layout.slices
    pc, pd, pe, soc, ve = (x[sl[n]] for n in ("pc", "pd", "pe", "soc", "ve"))
    sh, ab, e1, e2 = x[layout.sh], x[layout.ab], x[layout.e1], x[layout.e2]
    residual, c_imp = p[:h], p[h:2 * h]
    k_exp, k_sh, k_ab, v1, v2 = (p[2 * h + i] for i in range(5))
    pi = residual + pc - pd + pe  # import, from the meter balance
    f = (dt_h * (ca.dot(c_imp, pi) + k_exp * ca.sum1(pe) + w.both_ways_per_kwh * ca.sum1(pc + pd)
                 + w.cap_violation_per_kwh * ca.sum1(ve))
         + k_sh * sh + k_ab * ab - v1 * e1 - v2 * e2
         + _regularisation(x, layout, dt_h, w, formulation, b))
    # soc before step k; step 0 adds soc0 through the bounds (casadi's soc[:0] is not empty: h = 1 apart)
    soc_prev = ca.vertcat(0, soc[:h - 1]) if h > 1 else ca.SX.zeros(1)
    net_export = dt_h * ca.sum1(pe - pi)
    g = [pi,
         soc - soc_prev - dt_h * (b.eta_charge * pc - pd / b.eta_discharge),
         sh + soc[h - 1],
         ab + net_export,
         ab - net_export,
         pe - ve,
         soc[h - 1] - e1 - e2]
    if formulation == "milp":
        xb, yb = x[sl["xb"]], x[sl["yb"]]
        g += [pc - b.p_charge_max_kw * xb, pd + b.p_discharge_max_kw * xb, pi - BIG_M_KW * yb, pe + BIG_M_KW * yb]
    return f, ca.vertcat(*g)


def _arguments(inp: MPCInputs, b: BatteryModel, layout: _Layout, h: int, dt_h: float, w: Weights,
               formulation: str) -> dict[str, np.ndarray]:
    """Numeric parameters and bounds of one call: the one column of :func:`_arguments_many`."""
    return {k: np.ascontiguousarray(v[:, 0])
            for k, v in _arguments_many([inp], b, layout, h, dt_h, w, formulation).items()}


def _arguments_many(inputs: list[MPCInputs], b: BatteryModel, layout: _Layout, h: int, dt_h: float, w: Weights,
                    formulation: str) -> dict[str, np.ndarray]:
    """Numeric parameters and bounds of many calls of one problem, one column per call (a column is the same
    whether its call comes alone or in a batch: every operation is element by element)."""
    n = len(inputs)
    ha = np.array([len(inp.residual_kw) for inp in inputs])
    bad = sorted({int(x) for x in ha if not 1 <= x <= h})
    if bad:
        raise ValueError(f"residual_kw must have 1..{h} steps, got {', '.join(map(str, bad))}")
    active = np.arange(h)[:, None] < ha[None, :]  # (h, n)
    residual, c_imp = np.zeros((h, n)), np.zeros((h, n))
    for j, inp in enumerate(inputs):
        residual[:ha[j], j] = inp.residual_kw
        c_imp[:ha[j], j] = np.asarray(inp.import_price, float)[:ha[j]]
    field = lambda name: np.array([getattr(inp, name) for inp in inputs], dtype=float)  # noqa: E731
    re_kwh, s_mode, soc0 = field("re_kwh"), field("s_mode"), field("soc_kwh")
    v1, v2 = field("soc_value_per_kwh"), field("soc_value2_per_kwh")
    eps = np.sign(re_kwh)
    e_step = max(b.p_charge_max_kw, b.p_discharge_max_kw) * dt_h
    absorb = np.array([inp.absorb_negative_re for inp in inputs], dtype=bool)
    re_term = np.where((eps < 0) & ~absorb, 0.0, np.abs(eps))  # "ignore": no RE term when RE < 0
    p = np.vstack([residual, c_imp, (1 - eps) * w.export_penalty_per_kwh,
                   s_mode * (1 - eps * eps) * w.w_soc / b.capacity_kwh,
                   re_term * w.w_re / e_step, v1, np.minimum(v2, v1)])
    soc_lo, soc_hi = b.soc_min_frac * b.capacity_kwh, b.soc_max_frac * b.capacity_kwh
    sl = layout.slices
    lbx, ubx = np.zeros((layout.n, n)), np.full((layout.n, n), INF)
    ubx[sl["pc"]] = np.where(active, b.p_charge_max_kw, 0.0)
    ubx[sl["pd"]] = np.where(active, b.p_discharge_max_kw, 0.0)
    for name in ("pe", "ve"):
        ubx[sl[name]] = np.where(active, INF, 0.0)
    # a SoC already outside its bounds (self-discharge) may stay where it is
    lbx[sl["soc"]] = np.minimum(soc_lo, soc0)
    ubx[sl["soc"]] = np.maximum(soc_hi, soc0)
    ubx[layout.e1] = field("soc_value_cap_kwh")
    ubx[layout.e2] = field("soc_value2_cap_kwh")
    if formulation == "milp":
        ubx[sl["xb"]] = 1.0
        ubx[sl["yb"]] = 1.0
    export_cap = np.minimum(field("export_cap_kw"), INF)
    import_cap = np.minimum(field("import_cap_kw"), INF)
    target = field("soc_target_frac") * b.capacity_kwh
    zeros = lambda rows: np.zeros((rows, n))  # noqa: E731
    # the last zeros(h) row: pe − ve ≥ 0 holds at every optimum
    lbg = np.vstack([zeros(h), soc0, zeros(h - 1), target, re_kwh, -re_kwh, zeros(h), zeros(1)])
    ubg = np.vstack([np.where(active, import_cap, 0.0), soc0, zeros(h - 1), np.full((1, n), INF),
                     np.full((2, n), INF), np.broadcast_to(export_cap, (h, n)), np.full((1, n), INF)])
    if formulation == "milp":
        lbg = np.vstack([lbg, np.full((4 * h, n), -INF)])
        ubg = np.vstack([ubg, zeros(h), np.full((h, n), b.p_discharge_max_kw), zeros(h), np.full((h, n), BIG_M_KW)])
    return {"p": p, "lbx": lbx, "ubx": ubx, "lbg": lbg, "ubg": ubg}


def _call(solver: Any, call: dict[str, Any], args: dict[str, np.ndarray]) -> tuple[bool, str, Any]:
    """Run a casadi qpsol; success only if the solver says so and the answer respects the bounds."""
    try:
        sol = solver(**call)
    except RuntimeError as exc:  # malformed input or a solver crash
        return False, f"error: {exc}", None
    stats = solver.stats()
    status = str(stats.get("return_status", ""))
    # OSQP's "solved inaccurate" is kept if the answer passes the bound check below
    if not stats.get("success", False) and status != "solved inaccurate":
        return False, status, sol
    xv = np.asarray(sol["x"]).ravel()
    g = np.asarray(sol["g"]).ravel()
    tol = 1e-4
    inside = (np.all(xv >= args["lbx"] - tol) and np.all(xv <= args["ubx"] + tol)
              and np.all(g >= args["lbg"] - tol) and np.all(g <= args["ubg"] + tol))
    return (True, status, sol) if inside else (False, f"{status} (bounds violated)", sol)


@contextlib.contextmanager
def _quiet_stdout(stderr: bool = False) -> Any:
    """Silence C-level stdout (file descriptor 1), and stderr too if asked, for the duration (one thread at a
    time: the descriptors are the process's, and two overlapping redirections would leave them at /dev/null)."""
    with _STDOUT_LOCK:
        fds = []
        for stream in (sys.stdout, sys.stderr) if stderr else (sys.stdout,):
            try:
                fds.append(stream.fileno())
            except (AttributeError, OSError, ValueError):  # no real stream (e.g. captured): nothing to silence
                continue
            stream.flush()
        saved = [os.dup(fd) for fd in fds]
        with open(os.devnull, "w") as devnull:
            for fd in fds:
                os.dup2(devnull.fileno(), fd)
            try:
                yield
            finally:
                for fd, keep in zip(fds, saved):
                    os.dup2(keep, fd)
                    os.close(keep)


_STDOUT_LOCK = threading.RLock()


def solve_with_opti(problem: MPCProblem, inp: MPCInputs) -> Plan:
    """The same QP written the way one usually writes an MPC in ``casadi.Opti``: step by step, rebuilt every call.

    The naive path of ``benchmarks/mpc.py`` and an independent coding of the
    formulation (qp only): its plans must match :meth:`MPCProblem.solve`.
    """
    if problem.formulation != "qp":
        raise ValueError("solve_with_opti codes the qp formulation only")
    t0 = time.perf_counter()
    b, w, dt = problem.battery, problem.weights, problem.dt_h
    ha = len(inp.residual_kw)
    eps = float(np.sign(inp.re_kwh))
    e_step = max(b.p_charge_max_kw, b.p_discharge_max_kw) * dt
    soc0 = float(inp.soc_kwh)
    soc_lo = min(b.soc_min_frac * b.capacity_kwh, soc0)
    soc_hi = max(b.soc_max_frac * b.capacity_kwh, soc0)
    opti = ca.Opti("conic")
    pc, pd, pe = opti.variable(ha), opti.variable(ha), opti.variable(ha)
    soc, ve = opti.variable(ha), opti.variable(ha)
    sh, ab, e1, e2 = opti.variable(), opti.variable(), opti.variable(), opti.variable()
    cost: Any = 0  # a casadi expression once terms are added
    net_export: Any = 0
    for k in range(ha):
        pi_k = float(inp.residual_kw[k]) + pc[k] - pd[k] + pe[k]
        prev = soc0 if k == 0 else soc[k - 1]
        opti.subject_to(soc[k] == prev + dt * (b.eta_charge * pc[k] - pd[k] / b.eta_discharge))
        opti.subject_to(opti.bounded(soc_lo, soc[k], soc_hi))
        opti.subject_to(opti.bounded(0, pc[k], b.p_charge_max_kw))
        opti.subject_to(opti.bounded(0, pd[k], b.p_discharge_max_kw))
        opti.subject_to(pe[k] >= 0)
        opti.subject_to(ve[k] >= 0)
        opti.subject_to(pi_k >= 0)
        if math.isfinite(inp.import_cap_kw):
            opti.subject_to(pi_k <= inp.import_cap_kw)
        if math.isfinite(inp.export_cap_kw):
            opti.subject_to(pe[k] - ve[k] <= inp.export_cap_kw)
        cost += dt * (float(inp.import_price[k]) * pi_k + (1 - eps) * w.export_penalty_per_kwh * pe[k]
                      + w.both_ways_per_kwh * (pc[k] + pd[k]) + w.cap_violation_per_kwh * ve[k])
        cost += w.reg_per_kw2h(b) * dt * (pc[k] ** 2 + pd[k] ** 2)
        net_export += dt * (pe[k] - pi_k)
    opti.subject_to(sh >= 0)
    opti.subject_to(sh >= inp.soc_target_frac * b.capacity_kwh - soc[ha - 1])
    opti.subject_to(ab >= inp.re_kwh - net_export)
    opti.subject_to(ab >= net_export - inp.re_kwh)
    re_term = 0.0 if eps < 0 and not inp.absorb_negative_re else abs(eps)
    cost += inp.s_mode * (1 - eps * eps) * w.w_soc / b.capacity_kwh * sh + re_term * w.w_re / e_step * ab
    opti.subject_to(opti.bounded(0, e1, inp.soc_value_cap_kwh))
    opti.subject_to(opti.bounded(0, e2, inp.soc_value2_cap_kwh))
    opti.subject_to(e1 + e2 <= soc[ha - 1])
    cost -= inp.soc_value_per_kwh * e1 + min(inp.soc_value2_per_kwh, inp.soc_value_per_kwh) * e2
    opti.minimize(cost)
    opti.solver("osqp", {"error_on_fail": False, "print_time": False, "osqp": OSQP_OPTIONS})
    try:
        sol = opti.solve_limited()
    except RuntimeError as exc:  # Opti raises when the solver gives up
        return Plan(False, f"error: {str(exc).splitlines()[-1]}", time.perf_counter() - t0)
    solve_s = time.perf_counter() - t0
    stats = sol.stats()
    if not stats.get("success", False):
        return Plan(False, str(stats.get("return_status", "")), solve_s)
    p_bat = np.atleast_1d(sol.value(pc) - sol.value(pd))
    p_exp = np.atleast_1d(sol.value(pe))
    p_imp = np.clip(np.asarray(inp.residual_kw, float) + p_bat + p_exp, 0.0, None)
    tol = 1e-3
    follows = bool(abs(p_bat[0] + inp.residual_kw[0]) < tol and -p_bat[0] < b.p_discharge_max_kw - tol
                   and p_bat[0] < b.p_charge_max_kw - tol)
    reg = w.reg_per_kw2h(b) * dt * float(np.sum(np.atleast_1d(sol.value(pc)) ** 2 + np.atleast_1d(sol.value(pd)) ** 2))
    return Plan(True, str(stats.get("return_status", "")), solve_s, p_bat, p_imp, p_exp,
                np.atleast_1d(sol.value(soc)), float(sol.value(cost)) - reg, follows, dt_h=dt)


def _minutes(value: int) -> int:
    if value % 60:
        raise ValueError(f"expected a whole number of minutes in seconds (a multiple of 60), got {value}")
    return value


def _two_highest(values: np.ndarray) -> np.ndarray:
    """The two highest distinct values, highest first (fewer if there are fewer): ``np.unique(values)[::-1][:2]``
    without sorting up to a day of prices on every call."""
    if not len(values):
        return values[:0]
    top = values.max()
    if np.isnan(top):  # NaN sorts last in np.unique, so it leads; keep its answer
        return np.unique(values)[::-1][:2]
    below = values[values < top]
    return np.array([top, below.max()]) if len(below) else np.array([top])


def _two_highest_before(values: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every ``stop``: the two highest distinct values of ``values[:stop]`` (−inf where there are fewer), as
    :func:`_two_highest` gives them, from the first index at which each distinct value appears."""
    top = np.full(len(stop), -np.inf)
    second = np.full(len(stop), -np.inf)
    if not len(values):
        return top, second
    levels, first = np.unique(values, return_index=True)
    for level, at in zip(levels[::-1], first[::-1]):  # highest first: the first two present before stop
        present = at < stop
        second = np.where(present & (top > -np.inf) & (second == -np.inf), level, second)
        top = np.where(present & (top == -np.inf), level, top)
    return top, second


def _divides_day(value: int) -> int:
    if 86400 % value:
        raise ValueError(f"expected an interval that divides a day (e.g. 900, 1800, 3600), got {value}")
    return value


class HouseholdMPCParams(BaseModel):
    """The parameters of :class:`HouseholdMPC` with their bounds (checked when a scenario loads)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    #: the MPC plans every this many seconds (whole minutes) and sends the first step's setpoint
    period_s: Annotated[int, BeforeValidator(whole_number), Field(ge=60, le=3600), AfterValidator(_minutes)] = 120
    #: "qp": the quadratic program (casadi, qp_solver); "milp": the mixed-integer form on HiGHS
    formulation: Literal["qp", "milp"] = "qp"
    #: for the qp formulation (the milp uses HiGHS); "opti_rebuilt" writes the problem in casadi.Opti and rebuilds it
    #: every call (OSQP, no retry) - the naive path, for benchmarks/fullstack.py and as an independent check
    qp_solver: Literal["ipm", "piqp", "osqp", "qpoases", "opti_rebuilt"] = "ipm"
    #: "interval": one QP the size of the market interval, the steps past its end fixed at 0; "remaining": one QP
    #: per number of minutes left (smaller, faster; the same optimum, setpoints within the solver's tolerance)
    qp_horizon: Literal["interval", "remaining"] = "interval"
    #: the household's residual forecast over the horizon: from its own minute history, or an oracle
    forecaster: Literal["perfect", "persistence", "linear_regression", "noisy"] = "linear_regression"
    forecast_window: Annotated[int, Field(ge=2, le=1440)] = 30  #: minutes of history (linear regression)
    forecast_accuracy: Annotated[float, Field(ge=0, le=1)] = 0.25  #: relative error of "noisy"
    forecast_grid_min: Annotated[int, Field(ge=1, le=1440)] = 120  #: minutes between the error's points
    #: the plan runs to the end of the current market interval, s (the scenario's [market] interval)
    market_interval_s: Annotated[int, Field(ge=300, le=86400), AfterValidator(_minutes),
                                 AfterValidator(_divides_day)] = 1800
    #: the export cap drops to 0 while the bus voltage of the previous step is above this, pu
    v_export_limit_pu: Annotated[float, Field(gt=0.5, le=1.5)] = 1.10
    export_cap_kw: Annotated[float, Field(ge=0, allow_inf_nan=True)] = math.inf  #: inf = no cap
    import_cap_kw: Annotated[float, Field(ge=0, allow_inf_nan=True)] = math.inf
    soc_value: Literal["auto"] | Annotated[float, Field(ge=0, le=100)] = "auto"  #: currency per kWh stored
    #: "auto" soc_value = this × η_d × the highest import price the stored energy could displace
    soc_value_factor: Annotated[float, Field(ge=0, le=2)] = 0.95
    #: small cost of exporting, currency/kWh (scaled by 1 − ε with a commitment)
    export_penalty_per_kwh: Annotated[float, Field(ge=0, le=1000)] = 0.01
    #: weight of the SoC-target shortfall in S = 1 mode (per kWh of capacity)
    w_soc: Annotated[float, Field(ge=0, le=1e4)] = 10.0
    #: weight of |RE − planned net export| (per kWh of one step's energy)
    w_re: Annotated[float, Field(ge=0, le=1e4)] = 1.0
    #: a residual below −surplus_kw counts as surplus PV that refills the battery (the soc_value outlook), kW
    surplus_kw: Annotated[float, Field(ge=0, le=1000)] = 0.5
    #: RE without a contract: the energy the household should export in the interval, kWh (0 = none)
    re_kwh: Annotated[float, Field(ge=-1e6, le=1e6)] = 0.0
    s_mode: Annotated[int, Field(ge=0, le=1)] = 0  #: 0 or 1 (a whole number: true is not taken as 1)
    #: the SoC target without a contract, fraction of capacity
    soc_target_frac: Annotated[float, Field(ge=0, le=1)] = 0.0
    use_contract: bool = False  #: read RE, S and the SoC target from the smart contract (a [contract] scenario)
    #: RE < 0 in a committed interval: "absorb" (import the w_i share; the paper's text and the authors' code) or
    #: "ignore" (the literal ε = −1: no RE term, the export penalty doubled)
    negative_re: Literal["absorb", "ignore"] = "absorb"


class HouseholdMPC:
    """The household MPC of Couraud et al. 2022 as a controller plug-in (``controllers.mpc:HouseholdMPC``, registered as "mpc").

    Every ``period_s`` it plans the battery over the rest of the current market
    interval in 1-minute steps and sends the first step: "follow the residual"
    when the plan merely follows the forecast residual, else the planned power.
    The residual forecast comes from ``forecaster`` on the household's own
    minute history (``observe`` is called every minute); "perfect" and "noisy"
    are oracles fed with the household's true profile. The export cap drops to
    0 while the bus voltage of the previous step is above ``v_export_limit_pu``.
    The value of energy left in the battery at the end of the horizon
    (``soc_value = "auto"``) is ``soc_value_factor · η_d`` times the highest
    import price it could displace before surplus PV is expected to refill the
    battery anyway (residual below −``surplus_kw``), looking up to 24 h ahead
    in an outlook: the oracle's series for "perfect"/"noisy", else the same
    minutes of the previous day; with no outlook, the next 24 h.
    RE, S and the SoC target are the parameters ``re_kwh``, ``s_mode``,
    ``soc_target_frac`` (no commitment by default); with ``use_contract`` they
    are the smart contract's latest reply (observations of the same names).
    If the solvers fail the step falls back to following the residual (the
    rule-based action) and ``fallback`` = 1 is reported.
    """

    inputs: tuple[str, ...] = ("net_kw", "soc_kwh", "vm_pu")
    outputs = ("p_set_kw", "follow_residual")
    #: forecast of the residual 1, 5 and 15 minutes ahead (kW), recorded so `dercosim validate` can hold it
    #: against what happened (NaN beyond the horizon)
    FORECAST_STEPS = (1, 5, 15)
    _FORECAST_NAMES = tuple((step, f"forecast_h{step}_kw") for step in FORECAST_STEPS)
    diagnostics = ("solve_ms", "fallback", "retried", "forecast_h1_kw", "forecast_h5_kw", "forecast_h15_kw")
    Params = HouseholdMPCParams
    #: every instance has its own problem, solvers, forecaster and history: the host may call many at once
    thread_safe = True

    def __init__(self, period_s: int = 120, formulation: str = "qp", qp_solver: str = "ipm",
                 qp_horizon: str = "interval", forecaster: str = "linear_regression",
                 forecast_window: int = 30, forecast_accuracy: float = 0.25, forecast_grid_min: int = 120,
                 market_interval_s: int = 1800, v_export_limit_pu: float = 1.10, export_cap_kw: float = math.inf,
                 import_cap_kw: float = math.inf, soc_value: float | str = "auto", soc_value_factor: float = 0.95,
                 export_penalty_per_kwh: float = 0.01, w_soc: float = 10.0, w_re: float = 1.0,
                 surplus_kw: float = 0.5,
                 re_kwh: float = 0.0, s_mode: float = 0.0, soc_target_frac: float = 0.0,
                 use_contract: bool = False, negative_re: str = "absorb") -> None:
        self.period_s = int(period_s)
        self.use_contract = bool(use_contract)
        if self.use_contract:
            self.inputs = (*type(self).inputs, "re_kwh", "s_mode", "soc_target_frac")
        if qp_solver == "opti_rebuilt" and formulation != "qp":
            raise ValueError("qp_solver = 'opti_rebuilt' writes the qp formulation; it cannot solve the milp")
        self.formulation, self.qp_solver = formulation, qp_solver
        if qp_horizon not in ("interval", "remaining"):
            raise ValueError(f"qp_horizon must be 'interval' or 'remaining', got {qp_horizon!r}")
        self.qp_horizon = qp_horizon
        self._problems: dict[int, MPCProblem] = {}  # qp_horizon = "remaining": one per number of steps
        self.forecaster_kind = forecaster
        self.forecast_window, self.forecast_accuracy = int(forecast_window), float(forecast_accuracy)
        self.forecast_grid_min = int(forecast_grid_min)
        self.market_interval_s = int(market_interval_s)
        if self.market_interval_s % 60 or self.market_interval_s <= 0:
            raise ValueError("market_interval_s must be a positive multiple of 60")
        self.v_export_limit_pu = float(v_export_limit_pu)
        self.export_cap_kw, self.import_cap_kw = float(export_cap_kw), float(import_cap_kw)
        if soc_value != "auto" and not isinstance(soc_value, (int, float)):
            raise ValueError(f"soc_value must be 'auto' or a number, got {soc_value!r}")
        self.soc_value, self.soc_value_factor = soc_value, float(soc_value_factor)
        self.surplus_kw = float(surplus_kw)
        self.weights = Weights(export_penalty_per_kwh=export_penalty_per_kwh, w_soc=w_soc, w_re=w_re)
        self.re_kwh, self.s_mode, self.soc_target_frac = float(re_kwh), float(s_mode), float(soc_target_frac)
        if negative_re not in ("absorb", "ignore"):
            raise ValueError(f"negative_re must be 'absorb' or 'ignore', got {negative_re!r}")
        self.negative_re = negative_re
        self.no_load = False  #: a battery with no load behind it (a central plant's): its stored energy is worth 0
        self.step_s, self._per_h, self._per_day = 60, 60.0, 1440  # the clock's step (bind() sets it)
        self._history = np.empty(1440)  # the observed residual, one value per step (grown by doubling)
        self._n_history = 0  # steps observed
        self._history_start = 0  # the step of _history[0]: older steps are dropped (see observe)
        self.problem: MPCProblem | None = None

    def bind(self, context: dict[str, Any]) -> None:
        """Called once with the household's context (battery, prices, true profile, clock, seed)."""
        from dercosim.timeseries.rng import rng_for

        bat = context["battery"]
        if bat is None:
            raise ValueError("the MPC needs a battery on its household")
        self.battery = BatteryModel(**{k: float(bat[k]) for k in BatteryModel.__dataclass_fields__})
        # the clock's step: every series here has one value per step (minutes by default)
        self.step_s = int(context.get("step_s", 60))
        if self.market_interval_s % self.step_s or self.period_s % self.step_s:
            raise ValueError(f"market_interval_s ({self.market_interval_s}) and period_s ({self.period_s}) must be "
                             f"whole numbers of the clock's step ({self.step_s} s)")
        self._per_h = 3600.0 / self.step_s  # 60.0 at the default step: the same divisions as before
        self._per_day = 86400 // self.step_s
        self.problem = self._problem_for(self.market_interval_s // self.step_s)
        self.import_price = np.asarray(context["import_price"], float)
        self.start_s_of_day = int(context["start_s_of_day"])
        load = np.asarray(context["load_kw"], float)
        self.no_load = bool(len(load)) and not np.any(load > 0)
        truth = load - np.asarray(context["pv_kw"], float)
        window = max(2, round(self.forecast_window * 60 / self.step_s))  # minutes of history, in steps
        self.forecaster = make_forecaster(self.forecaster_kind, truth=truth, window=window,
                                          accuracy=self.forecast_accuracy, grid_min=self.forecast_grid_min,
                                          rng=rng_for(int(context["seed"]), f"forecast:{context['household']}"),
                                          step_s=self.step_s)

    def _problem_for(self, steps: int) -> MPCProblem:
        """The problem with a horizon of ``steps`` steps of the clock (built once per household and length; the
        formulation and solver are shared between households with equal batteries)."""
        problem = self._problems.get(steps)
        if problem is None:
            solver = self.qp_solver if self.formulation == "qp" and self.qp_solver != "opti_rebuilt" else None
            problem = self._problems[steps] = MPCProblem(self.battery, horizon_max=steps, dt_h=self.step_s / 3600,
                                                         formulation=self.formulation, weights=self.weights,
                                                         solver=solver)
        return problem

    @property
    def history(self) -> np.ndarray:
        """The residual observed every step from step :attr:`history_start` on, kW: at least the last two days
        (what the forecast and the outlook read; a view, no copy per call)."""
        return self._history[:self._n_history - self._history_start]

    @property
    def history_start(self) -> int:
        """The step of ``history[0]`` (0 until the run is more than four days old)."""
        return self._history_start

    def observe(self, t: int, obs: dict[str, float]) -> None:
        held = self._n_history - self._history_start
        if held == len(self._history):
            keep = 2 * self._per_day  # the outlook reads yesterday's steps, the forecast at most a day back
            if held >= 2 * keep:  # four days held: the last two moved to the front (a month of 2,000 homes
                # held every step: 0.7 GB)
                self._history[:keep] = self._history[held - keep:held]
                self._history_start += held - keep
                held = keep
            else:
                self._history = np.concatenate([self._history, np.empty(len(self._history))])
        self._history[held] = float(obs["net_kw"])
        self._n_history += 1

    def outlook(self, k: int, n: int) -> np.ndarray | None:
        """Expected residual for steps k .. k+n−1, or None when there is nothing to go on."""
        series = getattr(self.forecaster, "truth", getattr(self.forecaster, "series", None))
        if series is not None:  # an oracle
            return np.asarray(series[k:k + n], float)
        day = self._per_day
        at = k - day - self._history_start
        if k >= day and len(self.history) > at:  # the same steps yesterday
            return np.asarray(self.history[at:at + n], float)
        return None

    def auto_soc_value(self, k_end: int) -> tuple[tuple[float, float], tuple[float, float]]:
        """Two tiers (value per kWh stored, kWh stored) for energy left in the battery at step ``k_end``.

        Tier 1: the expected deficit in the highest-price minutes before surplus
        PV refills the battery, valued at that price; tier 2: the deficit at the
        next price level. Without an outlook (the first day, before the same
        minutes of yesterday exist): the highest price of the next 24 h, for
        the deficit expected until the outlook begins at the mean rate observed
        so far (finite: an unlimited amount made a large battery hoard its
        energy). A battery with no load behind it stores no value: 0.
        """
        if self.no_load:
            return (0.0, 0.0), (0.0, 0.0)
        scale = self.soc_value_factor * self.battery.eta_discharge
        ahead = self.outlook(k_end, self._per_day)
        prices = self.import_price[k_end:k_end + self._per_day]
        if ahead is None:
            seen = self.history
            rate_kw = float(np.clip(seen, 0, None).mean()) if len(seen) else 0.0
            until_outlook_h = max(self._per_day - k_end, 0) / self._per_h
            cap_kwh = rate_kw * until_outlook_h / self.battery.eta_discharge
            return (scale * float(np.max(prices)) if len(prices) else 0.0, cap_kwh), (0.0, 0.0)
        surplus = np.flatnonzero(ahead < -self.surplus_kw)
        stop = min(int(surplus[0]) if len(surplus) else len(ahead), len(prices))
        deficit = np.clip(ahead[:stop], 0, None) / self._per_h / self.battery.eta_discharge  # kWh stored per step
        prices = prices[:stop]
        tiers = []
        for level in _two_highest(prices):
            tiers.append((scale * float(level), float(deficit[prices == level].sum())))
        while len(tiers) < 2:
            tiers.append((0.0, 0.0))
        return tiers[0], tiers[1]

    def steps_left(self, t: int) -> int:
        """Steps from t to the end of its market interval (intervals aligned to the wall clock)."""
        into = (self.start_s_of_day + t) % self.market_interval_s
        return (self.market_interval_s - into) // self.step_s

    def step(self, t: int, obs: dict[str, float]) -> dict[str, float]:
        inp, residual = self._inputs(t, obs)
        if self.qp_solver == "opti_rebuilt":
            return self._answer(solve_with_opti(self._solving(inp), inp), obs, residual)
        return self._answer(self._solving(inp).solve(inp), obs, residual)

    def _solving(self, inp: MPCInputs) -> MPCProblem:
        """The problem that solves ``inp``: the interval's, or with ``qp_horizon = "remaining"`` one its size."""
        if self.qp_horizon == "remaining":
            return self._problem_for(len(inp.residual_kw))
        assert self.problem is not None, "bind() builds the problem"
        return self.problem

    @classmethod
    def step_many(cls, calls: list[tuple["HouseholdMPC", dict[str, float]]], t: int,
                  threads: int = 1) -> list[dict[str, float] | Exception]:
        """``step`` of many households at once (the controller host's batch form): their QPs are solved in one
        :meth:`MPCProblem.solve_many` over ``threads`` threads, with the same numbers as one ``step`` after
        another. One answer per call, in order: the setpoints, or the exception that household's ``step``
        would have raised."""
        answers: list[dict[str, float] | Exception | None] = [None] * len(calls)
        batch = []
        alike: dict[tuple, list[int]] = {}
        for i, (ctrl, obs) in enumerate(calls):
            key = ctrl._alike(t) if ctrl.qp_solver != "opti_rebuilt" else None
            if key is not None:
                alike.setdefault(key, []).append(i)
                continue
            try:
                if ctrl.qp_solver == "opti_rebuilt":
                    answers[i] = ctrl.step(t, obs)
                else:
                    batch.append((i, *ctrl._inputs(t, obs)))
            except Exception as exc:  # noqa: BLE001 - that household's fault, reported by the host
                answers[i] = exc
        for idx in alike.values():
            try:  # the group's forecasts and SoC values as arrays
                made = cls._inputs_alike([calls[i][0] for i in idx], [calls[i][1] for i in idx], t)
                batch.extend((i, inp, residual) for i, (inp, residual) in zip(idx, made))
            except Exception:  # noqa: BLE001 - one household's bad observation: each on its own, as step() would
                for i in idx:
                    try:
                        batch.append((i, *calls[i][0]._inputs(t, calls[i][1])))
                    except Exception as exc:  # noqa: BLE001 - that household's fault, reported by the host
                        answers[i] = exc
        batch.sort(key=lambda item: item[0])
        plans = MPCProblem.solve_many([calls[i][0]._solving(inp) for i, inp, _ in batch],
                                      [inp for _, inp, _ in batch], threads)
        for (i, _, residual), plan in zip(batch, plans):
            ctrl, obs = calls[i]
            answers[i] = ctrl._answer(plan, obs, residual)
        return answers  # type: ignore[return-value]

    def _inputs(self, t: int, obs: dict[str, float]) -> tuple[MPCInputs, np.ndarray]:
        """This call's QP numbers and the residual it plans for (now, then the forecast), kW."""
        if self.problem is None:
            raise RuntimeError("HouseholdMPC.bind() was not called")
        k = t // self.step_s
        h = self.steps_left(t)
        residual = np.concatenate([[obs["net_kw"]],
                                   self.forecaster.forecast(k, self.history, h - 1)])
        if self.soc_value == "auto":
            tiers = self.auto_soc_value(k + h)
        else:
            tiers = ((float(self.soc_value), math.inf), (0.0, 0.0))
        return self._call_inputs(obs, residual, self._prices(k, h), tiers), residual

    def _prices(self, k: int, h: int) -> np.ndarray:
        """Import prices of steps k .. k+h−1 (past the end of the prices: the last one held)."""
        prices = self.import_price[k:k + h]
        if len(prices) < h:
            prices = np.concatenate([prices, np.full(h - len(prices), self.import_price[-1])])
        return prices

    def _call_inputs(self, obs: dict[str, float], residual: np.ndarray, prices: np.ndarray,
                     tiers: tuple[tuple[float, float], tuple[float, float]]) -> MPCInputs:
        """The QP's numbers from this call's observations, residual, prices and SoC-value tiers."""
        export_cap = 0.0 if obs.get("vm_pu", 1.0) > self.v_export_limit_pu else self.export_cap_kw
        re_kwh, s_mode, soc_target = self.re_kwh, self.s_mode, self.soc_target_frac
        if self.use_contract:  # the contract's latest word (time-shifted); a NaN target means none was sent
            re_kwh = float(obs.get("re_kwh", re_kwh))
            s_mode = float(obs.get("s_mode", s_mode))
            target = float(obs.get("soc_target_frac", math.nan))
            soc_target = target if math.isfinite(target) else 0.0
            s_mode = s_mode if math.isfinite(target) else 0.0
        return MPCInputs(
            soc_kwh=float(obs["soc_kwh"]), residual_kw=residual, import_price=prices, re_kwh=re_kwh,
            s_mode=s_mode, soc_target_frac=soc_target, export_cap_kw=export_cap,
            import_cap_kw=self.import_cap_kw, soc_value_per_kwh=tiers[0][0], soc_value_cap_kwh=tiers[0][1],
            soc_value2_per_kwh=tiers[1][0], soc_value2_cap_kwh=tiers[1][1],
            absorb_negative_re=self.negative_re == "absorb")

    def _alike(self, t: int) -> tuple | None:
        """What households must share for :meth:`_inputs_alike` to compute their inputs as arrays (None: this one
        is computed alone: another forecaster, a fixed SoC value, not bound)."""
        fc: Any = self.forecaster if self.problem is not None else None
        if type(fc) is not LinearRegression or self.soc_value != "auto":
            return None
        return (id(self.import_price), self.step_s, self.steps_left(t), fc.window, fc.lower, fc.upper,
                self._n_history, self._history_start, self.surplus_kw)

    @staticmethod
    def _inputs_alike(ctrls: list["HouseholdMPC"], observed: list[dict[str, float]],
                      t: int) -> list[tuple[MPCInputs, np.ndarray]]:
        """``_inputs`` of households alike (:meth:`_alike`: the same prices, clock, interval, forecast window and
        history length), the regression forecast and the SoC-value tiers computed as arrays over them. The same
        formulas as one household at a time; sums over a household's steps may round differently in the last
        bit (a matrix product instead of a dot product)."""
        first = ctrls[0]
        k = t // first.step_s
        h = first.steps_left(t)
        net = np.array([float(obs["net_kw"]) for obs in observed])
        held = [c.history for c in ctrls]
        fc: Any = first.forecaster  # a LinearRegression (:meth:`_alike`)
        n = min(fc.window, len(held[0]))
        if n < 2:
            last = np.array([x[-1] if len(x) else 0.0 for x in held], float)
            line = np.repeat(last[:, None], h - 1, axis=1)
        else:
            recent = np.stack([x[len(x) - n:] for x in held])
            x, denominator = _centred(n)
            slope = (recent @ x) / denominator
            intercept = np.add.reduce(recent, axis=1) / n - slope * (n - 1) / 2.0
            line = intercept[:, None] + slope[:, None] * np.arange(n, n + h - 1, dtype=float)
            if fc.lower != -np.inf or fc.upper != np.inf:
                line = np.clip(line, fc.lower, fc.upper)
        residual = np.concatenate([net[:, None], line], axis=1)
        tiers = HouseholdMPC._soc_tiers_alike(ctrls, held, k + h)
        prices = first._prices(k, h)
        return [(c._call_inputs(obs, r, prices, tier), r)
                for c, obs, r, tier in zip(ctrls, observed, residual, tiers)]

    @staticmethod
    def _soc_tiers_alike(ctrls: list["HouseholdMPC"], held: list[np.ndarray],
                         k_end: int) -> list[tuple[tuple[float, float], tuple[float, float]]]:
        """:meth:`auto_soc_value` of households alike at step ``k_end``, as arrays over them."""
        first = ctrls[0]
        day, per_h = first._per_day, first._per_h
        eta = np.array([c.battery.eta_discharge for c in ctrls])
        scale = np.array([c.soc_value_factor for c in ctrls]) * eta
        prices = first.import_price[k_end:k_end + day]
        at = k_end - day - first._history_start
        if k_end >= day and len(held[0]) > at:  # the outlook: the same steps yesterday
            ahead = np.stack([x[at:at + day] for x in held])
            surplus = ahead < -first.surplus_kw
            stop = np.minimum(np.where(surplus.any(axis=1), surplus.argmax(axis=1), ahead.shape[1]), len(prices))
            width = int(stop.max()) if len(stop) else 0  # no household looks further
            level = prices[:width]
            within = np.arange(width)[None, :] < stop[:, None]
            deficit = np.clip(ahead[:, :width], 0, None) / per_h / eta[:, None]  # kWh stored per step
            deficit[~within] = 0.0
            top, second = _two_highest_before(level, stop)
            values, amounts = [], []
            for v in (top, second):  # a tier's value and the deficit in its steps; none: (0, 0)
                found = v > -np.inf
                values.append(np.where(found, scale * np.where(found, v, 0.0), 0.0))
                amounts.append(np.where(found, np.where(level[None, :] == v[:, None], deficit, 0.0).sum(axis=1), 0.0))
            tiers = [((float(v1), float(a1)), (float(v2), float(a2)))
                     for v1, a1, v2, a2 in zip(values[0], amounts[0], values[1], amounts[1])]
        else:  # no outlook yet: the deficit until it begins at the mean rate seen so far
            seen = np.stack(held) if len(held[0]) else np.zeros((len(held), 0))
            rate_kw = np.clip(seen, 0, None).mean(axis=1) if seen.shape[1] else np.zeros(len(held))
            until_outlook_h = max(day - k_end, 0) / per_h
            cap_kwh = rate_kw * until_outlook_h / eta
            highest = float(np.max(prices)) if len(prices) else None
            tiers = [((float(sc) * highest if highest is not None else 0.0, float(cap)), (0.0, 0.0))
                     for sc, cap in zip(scale, cap_kwh)]
        return [((0.0, 0.0), (0.0, 0.0)) if c.no_load else tier for c, tier in zip(ctrls, tiers)]

    def _answer(self, plan: Plan, obs: dict[str, float], residual: np.ndarray) -> dict[str, float]:
        """The setpoints and diagnostics of a plan (the rule-based action if it failed)."""
        self.last_plan = plan
        diag = {"solve_ms": plan.solve_s * 1000.0, "retried": float(plan.retried)}
        for step, name in self._FORECAST_NAMES:
            diag[name] = float(residual[step]) if step < len(residual) else math.nan
        if not plan.success:  # the rule-based action
            return {"p_set_kw": -float(obs["net_kw"]), "follow_residual": 1.0, "fallback": 1.0, **diag}
        return {"p_set_kw": plan.setpoint_kw, "follow_residual": float(plan.follow_residual), "fallback": 0.0,
                **diag}
