"""AC power-flow engines behind one interface.

``engine.solve(p_kw, q_kvar)`` takes the net load per bus (load convention:
positive = drawn from the grid; arrays indexed by pandapower's 0-based bus
index, length ``n_bus``) and returns a :class:`PowerFlowResult`.

- :class:`PandapowerEngine` ("pandapower") is the reference: ``pandapower.runpp``.
- :class:`LightsimEngine` ("fast", the default) solves lightsim2grid's model of
  the same pandapower net directly with Newton-Raphson (KLU), warm-started from
  the last converged solution. Its voltages equal pandapower's within 1e-8 pu.

A diverged solve returns ``converged=False`` with NaN voltages, currents and
losses, and the next solve starts from a flat start again, never from the
failed state. A non-finite injection (NaN or ±inf in ``p_kw`` or ``q_kvar``)
is not a question a power flow can answer: both engines return it as a
failed solve without solving (lightsim2grid's load setter would otherwise keep
the previous value and answer the previous step's question).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import pandapower as pp

EngineName = Literal["fast", "pandapower"]


@dataclass(frozen=True)
class PowerFlowResult:
    """One AC power-flow solution. Arrays are in pandapower index order."""

    vm_pu: np.ndarray  #: voltage magnitude per bus, pu
    va_degree: np.ndarray  #: voltage angle per bus, degrees
    line_i_ka: np.ndarray  #: current per in-service line (from side), kA
    line_loading_pct: np.ndarray  #: current / rating per in-service line, %
    losses_kw: float  #: active power lost in lines, kW
    p_head_kw: float  #: active power drawn at the feeder head (slack), kW
    q_head_kvar: float  #: reactive power drawn at the feeder head, kVAr
    converged: bool


class PowerFlowEngine(Protocol):
    n_bus: int

    def solve(self, p_kw: np.ndarray, q_kvar: np.ndarray) -> PowerFlowResult: ...


def _failed(n_bus: int, n_line: int) -> PowerFlowResult:
    nan_bus = np.full(n_bus, np.nan)
    nan_line = np.full(n_line, np.nan)
    return PowerFlowResult(nan_bus, nan_bus.copy(), nan_line, nan_line.copy(),
                           float("nan"), float("nan"), float("nan"), False)


def _check_shape(p_kw: np.ndarray, q_kvar: np.ndarray, n_bus: int) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(p_kw, dtype=float)
    q = np.asarray(q_kvar, dtype=float)
    if p.shape != (n_bus,) or q.shape != (n_bus,):
        raise ValueError(f"p_kw and q_kvar must have shape ({n_bus},), got {p.shape} and {q.shape}")
    return p, q


def _finite(p: np.ndarray, q: np.ndarray) -> bool:
    """Whether every injection is a finite number (else the solve is a counted failure)."""
    return bool(np.isfinite(p).all() and np.isfinite(q).all())


class PandapowerEngine:
    """Reference engine: ``pandapower.runpp`` on a private copy of the net.

    The net must have exactly one load per bus with load index == bus index
    (see :func:`grids.ieee33.make_net`).
    """

    def __init__(self, net: pp.pandapowerNet, **runpp_kwargs: object) -> None:
        self.net = copy.deepcopy(net)
        self.n_bus = len(self.net.bus)
        if not np.array_equal(self.net.load.index.values, np.arange(self.n_bus)) or not np.array_equal(
            self.net.load.bus.values, np.arange(self.n_bus)
        ):
            raise ValueError("the net needs exactly one load per bus, load index == bus index")
        self._lines = np.flatnonzero(self.net.line.in_service.values)
        self._trafos = np.flatnonzero(self.net.trafo.in_service.values) if len(self.net.trafo) else np.zeros(0, int)
        # numba is not a dependency; say so instead of letting runpp warn every call.
        self._runpp_kwargs = {"numba": False, **runpp_kwargs}

    def solve(self, p_kw: np.ndarray, q_kvar: np.ndarray) -> PowerFlowResult:
        p, q = _check_shape(p_kw, q_kvar, self.n_bus)
        if not _finite(p, q):
            return _failed(self.n_bus, len(self._lines))
        self.net.load["p_mw"] = p / 1000.0
        self.net.load["q_mvar"] = q / 1000.0
        try:
            pp.runpp(self.net, **self._runpp_kwargs)
        except pp.LoadflowNotConverged:
            return _failed(self.n_bus, len(self._lines))
        res_line = self.net.res_line.iloc[self._lines]
        losses_kw = float(res_line.pl_mw.sum() * 1000.0)
        if len(self._trafos):  # transformer losses too (a feeder with a substation transformer)
            losses_kw += float(self.net.res_trafo.pl_mw.iloc[self._trafos].sum() * 1000.0)
        return PowerFlowResult(
            vm_pu=self.net.res_bus.vm_pu.to_numpy(copy=True),
            va_degree=self.net.res_bus.va_degree.to_numpy(copy=True),
            line_i_ka=res_line.i_from_ka.to_numpy(copy=True),
            line_loading_pct=res_line.loading_percent.to_numpy(copy=True),
            losses_kw=losses_kw,
            p_head_kw=float(self.net.res_ext_grid.p_mw.sum() * 1000.0),
            q_head_kvar=float(self.net.res_ext_grid.q_mvar.sum() * 1000.0),
            converged=True,
        )


class LightsimEngine:
    """Fast engine: lightsim2grid's C++ model of the net, Newton-Raphson, warm start.

    ``tol_pu`` is the power-mismatch tolerance in per unit of the net's
    ``sn_mva``; the default 1e-10 keeps voltages within 1e-8 pu of pandapower.
    """

    def __init__(self, net: pp.pandapowerNet, tol_pu: float = 1e-10, max_iter: int = 30) -> None:
        from lightsim2grid.network import init_from_pandapower

        if not np.array_equal(net.load.index.values, np.arange(len(net.bus))) or not np.array_equal(
            net.load.bus.values, np.arange(len(net.bus))
        ):
            raise ValueError("the net needs exactly one load per bus, load index == bus index")
        with warnings.catch_warnings():
            # "no generator tagged as slack bus: using the ext_grid" is expected here.
            warnings.simplefilter("ignore")
            self._grid = init_from_pandapower(net)
        self.n_bus = len(net.bus)
        self.tol_pu = tol_pu
        self.max_iter = max_iter
        self._lines = np.flatnonzero(net.line.in_service.values)
        self._max_i_ka = (net.line.max_i_ka * net.line.df * net.line.parallel).to_numpy()[self._lines]
        self._trafos = int(net.trafo.in_service.sum()) if len(net.trafo) else 0
        if self._trafos:
            # transformers shift angles (Dyn5: 150°) and steps: a flat start at the slack's voltage diverges. Start
            # from pandapower's solution of the unloaded net instead (the same start after every failure)
            unloaded = copy.deepcopy(net)
            unloaded.load["p_mw"] = 0.0
            unloaded.load["q_mvar"] = 0.0
            pp.runpp(unloaded, numba=False, calculate_voltage_angles=True)
            self._v_flat = (unloaded.res_bus.vm_pu.to_numpy(float)
                            * np.exp(1j * np.radians(unloaded.res_bus.va_degree.to_numpy(float))))
        else:
            vm_slack = float(net.ext_grid.vm_pu.iloc[0])
            self._v_flat = np.full(self.n_bus, vm_slack, dtype=complex)
        self._v_start = self._v_flat.copy()

    def solve(self, p_kw: np.ndarray, q_kvar: np.ndarray) -> PowerFlowResult:
        p, q = _check_shape(p_kw, q_kvar, self.n_bus)
        grid = self._grid
        if not _finite(p, q):  # change_p_load(NaN) would keep the previous value: never solve that
            self._v_start = self._v_flat.copy()
            grid.tell_solver_need_reset()
            return _failed(self.n_bus, len(self._lines))
        p_mw = (p / 1000.0).tolist()
        q_mvar = (q / 1000.0).tolist()
        for i in range(self.n_bus):
            # change_*_load keeps float64; the vectorised update_loads_* is float32 only.
            grid.change_p_load(i, p_mw[i])
            grid.change_q_load(i, q_mvar[i])
        v = grid.ac_pf(self._v_start, self.max_iter, self.tol_pu)
        if v.size == 0 or not np.all(np.isfinite(v)):
            self._v_start = self._v_flat.copy()
            grid.tell_solver_need_reset()
            return _failed(self.n_bus, len(self._lines))
        self._v_start = v
        p_or, q_or, _, i_or_ka = grid.get_line_res1()
        p_ex = grid.get_line_res2()[0]
        lines = self._lines
        i_ka = np.asarray(i_or_ka)[lines]
        losses_kw = float(np.sum(np.asarray(p_or)[lines] + np.asarray(p_ex)[lines]) * 1000.0)
        if self._trafos:  # transformer losses too: power in at the high side + at the low side
            losses_kw += float((np.sum(grid.get_trafo_res1()[0]) + np.sum(grid.get_trafo_res2()[0])) * 1000.0)
        p_gen, q_gen, _ = grid.get_gen_res()
        return PowerFlowResult(
            vm_pu=np.abs(v),
            va_degree=np.degrees(np.angle(v)),
            line_i_ka=i_ka,
            line_loading_pct=100.0 * i_ka / self._max_i_ka,
            losses_kw=losses_kw,
            p_head_kw=float(np.sum(p_gen) * 1000.0),
            q_head_kvar=float(np.sum(q_gen) * 1000.0),
            converged=True,
        )


def branch_ends(net: pp.pandapowerNet) -> list[tuple[int, int]]:
    """(bus, bus) of every in-service line, two-winding transformer and impedance, by bus index."""
    ends: list[tuple[int, int]] = []
    for table, a, b in (("line", "from_bus", "to_bus"), ("trafo", "hv_bus", "lv_bus"),
                        ("impedance", "from_bus", "to_bus")):
        if table in net and len(net[table]):
            t = net[table][net[table].in_service.astype(bool)]
            ends += zip(t[a].astype(int).tolist(), t[b].astype(int).tolist())
    return ends


def islands(net: pp.pandapowerNet) -> list[np.ndarray]:
    """The buses (0-based positions) of each part of the net an external grid supplies, one array per external
    grid's part, from in-service lines, transformers and impedances."""
    n = len(net.bus)
    adjacent: list[list[int]] = [[] for _ in range(n)]
    for u, v in branch_ends(net):
        adjacent[u].append(v)
        adjacent[v].append(u)
    part = np.full(n, -1)
    out: list[np.ndarray] = []
    for root in net.ext_grid.bus[net.ext_grid.in_service.astype(bool)].astype(int):
        if part[root] >= 0:
            continue
        k = len(out)
        part[root] = k
        stack, members = [root], [root]
        while stack:
            u = stack.pop()
            for v in adjacent[u]:
                if part[v] < 0:
                    part[v] = k
                    stack.append(v)
                    members.append(v)
        out.append(np.array(sorted(members)))
    return out


class IslandsEngine:
    """A net of several parts, each supplied by its own external grid (``mv_oberrhein``, ``lv_schutterwald``):
    one engine per part (lightsim2grid solves one connected network), the results stitched back in bus and
    line order. Converged only if every part converged."""

    def __init__(self, net: pp.pandapowerNet, parts: list[np.ndarray], make: type) -> None:
        import pandapower.toolbox as tb

        self.n_bus = len(net.bus)
        self.parts = parts
        in_service = net.line.index[net.line.in_service.astype(bool)]
        where = {int(label): k for k, label in enumerate(in_service)}  # line label -> slot in the results
        self.engines, self.line_slots = [], []
        for buses in parts:
            sub = tb.select_subnet(net, buses, include_switch_buses=False, include_results=False)
            sub.load.drop(sub.load.index, inplace=True)
            lines = [where[int(i)] for i in sub.line.index[sub.line.in_service.astype(bool)]]
            tb.create_continuous_bus_index(sub, start=0)
            tb.create_continuous_elements_index(sub)
            for k in range(len(sub.bus)):
                pp.create_load(sub, bus=k, p_mw=0.0, q_mvar=0.0, index=k)
            self.engines.append(make(sub))
            self.line_slots.append(np.array(lines, int))
        self.n_line = len(in_service)

    def solve(self, p_kw: np.ndarray, q_kvar: np.ndarray) -> PowerFlowResult:
        p, q = _check_shape(p_kw, q_kvar, self.n_bus)
        vm, va = np.full(self.n_bus, np.nan), np.full(self.n_bus, np.nan)
        i_ka, loading = np.full(self.n_line, np.nan), np.full(self.n_line, np.nan)
        losses = p_head = q_head = 0.0
        converged = True
        for buses, lines, engine in zip(self.parts, self.line_slots, self.engines):
            r = engine.solve(p[buses], q[buses])
            converged = converged and r.converged
            vm[buses], va[buses] = r.vm_pu, r.va_degree
            i_ka[lines], loading[lines] = r.line_i_ka, r.line_loading_pct
            losses += r.losses_kw
            p_head += r.p_head_kw
            q_head += r.q_head_kvar
        if not converged:
            return _failed(self.n_bus, self.n_line)
        return PowerFlowResult(vm, va, i_ka, loading, losses, p_head, q_head, True)


def make_engine(name: EngineName, net: pp.pandapowerNet) -> PowerFlowEngine:
    """Engine by scenario name: "fast" (lightsim2grid, default) or "pandapower"."""
    if name == "fast":
        parts = islands(net) if int(net.ext_grid.in_service.sum()) > 1 else []
        if len(parts) > 1:
            return IslandsEngine(net, parts, LightsimEngine)
        return LightsimEngine(net)
    if name == "pandapower":
        return PandapowerEngine(net)
    raise ValueError(f"unknown power-flow engine {name!r}; expected 'fast' or 'pandapower'")
