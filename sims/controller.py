"""mosaik simulator hosting controller plug-ins: any number of instances of any controller class.

Time-based and self-scheduling: each entity is stepped every ``period_s`` of
its controller; between steps its setpoints hold. Optional parts of the
protocol: ``bind(context)`` is called once after construction with the
household's context; ``observe(t, obs)`` is called every minute (the
simulator then steps every minute); values named in ``diagnostics`` may be
returned by ``step`` and are recorded (NaN in minutes without a step).

A *fault* is a controller that raises, calls ``sys.exit``, returns something
that is not a mapping, or a setpoint that is not a finite number
(``follow_residual`` must be 0 or 1). With ``on_fault = "stop"`` (default) it
ends the run with a :class:`ControllerError` naming the controller, the
household and the time; with ``"fallback"`` it is counted (``fault`` = 1 in
that minute's row) and the fallback applies for that step: the rule-based
action where the controller drives ``follow_residual`` (follow the residual),
0 kW where it drives only ``p_set_kw``, the thermostat for ``hvac_set_kw``.
A controller class with ``thread_safe = True`` (no state shared between its
instances; the MPC is one) is called on a pool of ``threads`` threads, all
due households of a minute at once (casadi releases the GIL while it
solves); results are applied in the households' order, so the numbers do not
depend on the thread count. A controller class with a ``step_many(calls, t,
threads)`` class method (the MPC has one) is stepped once per minute for all
its due households: ``calls`` is a list of (controller, obs), the answer one
setpoint mapping or exception per call, in order; each answer is checked and
faults as a single ``step`` would, and ``step_ms`` is the household's equal
share of the call. Every call's wall time is recorded (``step_ms``); a call longer than
``step_timeout_s`` is an *overrun*: counted (``overrun`` = 1) and reported on
stderr once per household by name (a call cannot be cut short safely).
"""

from __future__ import annotations

from collections.abc import Sequence

import copy
import math
import sys
import time as _time
from typing import Any

import mosaik_api_v3
from mosaik_api_v3.types import Meta
import numpy as np

from dercosim.controllers.base import OBSERVATIONS, SETPOINTS
from dercosim.controllers.registry import ControllerError, load_controller_class, make_controller
from dercosim.sims.pacing import paced
from dercosim.sims.tables import gathered, tabled

META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {"Controller": {"public": True, "params": ["spec", "params", "labels", "available", "writable", "contexts",
                                                         "base_dir"],
                              "attrs": list(OBSERVATIONS) + list(SETPOINTS)}},
}


#: what the host itself records for every controller entity, every minute
HOST_DIAGNOSTICS = ["step_ms", "fault", "overrun"]
#: a power setpoint beyond this is a fault (no device of a distribution feeder comes near it), kW
MAX_SETPOINT_KW = 1e6
#: setpoints whose NaN means "none this step" (the thermostat, the inverter's own mode)
NAN_MEANS_NONE = ("hvac_set_kw", "p_curtail_kw", "q_set_kvar")
#: setpoints held to ±MAX_SETPOINT_KW
_POWER_SETPOINTS = frozenset(("p_set_kw", "hvac_set_kw", "p_curtail_kw", "q_set_kvar"))
#: the fallback setpoints of a faulted step (see the module doc)
FALLBACK = {"p_set_kw": 0.0, "follow_residual": 1.0, "hvac_set_kw": math.nan, "p_curtail_kw": math.nan,
            "q_set_kvar": math.nan}


class ControllerFault(Exception):
    """A controller call that faulted (see the module doc); the message says how."""


@tabled
@paced
class ControllerSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(copy.deepcopy(META))  # init() adds this run's diagnostics to the attributes
        self.entities: dict[str, dict[str, Any]] = {}
        self.index: dict[str, int] = {}  #: entity -> position (the arrays of sims/tables.py's ``gathered``)
        self.column_inputs: tuple[str, ...] = ()  #: every controller's inputs: they arrive as arrays
        self.pool: Any = None

    def init(self, sid: str, time_resolution: float = 1.0, step_s: int = 60, diagnostics: Sequence[str] = (),
             on_fault: str = "stop", step_timeout_s: float | None = None, threads: int = 1,
             batch: bool = True) -> Meta:
        """``diagnostics``: names the hosted controllers may report (added to the model's attributes);
        ``on_fault``: "stop" or "fallback"; ``step_timeout_s``: wall-clock budget of one call (None: none);
        ``threads``: calls of thread-safe controllers run on this many threads (1: one after the other);
        ``batch``: step the due households of a class with ``step_many`` in one call (False: one by one)."""
        self.pool = None
        self.threads = max(1, int(threads))
        self.batch = bool(batch)
        if int(threads) > 1:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(max_workers=int(threads), thread_name_prefix="controller")
        if on_fault not in ("stop", "fallback"):
            raise ValueError(f"on_fault must be 'stop' or 'fallback', got {on_fault!r}")
        self.step_s = int(step_s)
        self.diagnostics = list(diagnostics)
        self.on_fault = on_fault
        self.step_timeout_s = step_timeout_s
        self.meta["models"]["Controller"]["attrs"] = (list(OBSERVATIONS) + list(SETPOINTS) + self.diagnostics
                                                      + HOST_DIAGNOSTICS)
        return self.meta

    def create(self, num: int, model: str, spec: str, params: dict[str, Any], labels: list[str],
               available: list[list[str]], writable: list[list[str]], base_dir: str | None = None,
               contexts: list[dict[str, Any]] | None = None) -> list[dict]:
        """``num`` instances of the controller ``spec``, one per label (household or battery name).

        ``available``/``writable``: per label, the observations it can read and
        the setpoints it can drive; a controller asking for more is refused.
        """
        if not (len(labels) == len(available) == len(writable) == num):
            raise ValueError("one label, one 'available' and one 'writable' list per entity")
        served = getattr(self, "served_controller", None)
        if served is not None:  # a host of its own (``dercosim serve controllers --controller``): its file, its cwd
            if served.rpartition(":")[2] != spec.rpartition(":")[2]:
                raise ControllerError(f"this host serves {served!r}; the run asks for {spec!r}")
            spec, base_dir = served, None
        cls: Any = load_controller_class(spec, base_dir)
        out = []
        # a context that came through mosaik's JSON protocol carries its series as lists: numpy again
        contexts = [{k: (np.asarray(v, float) if isinstance(v, list) and v and isinstance(v[0], (int, float))
                         and not isinstance(v[0], bool)
                         else v) for k, v in c.items()} for c in (contexts or [{} for _ in labels])]
        for label, avail, write, context in zip(labels, available, writable, contexts):
            ctrl = make_controller(cls, spec, dict(params), label, set(avail), set(write), self.step_s)
            diagnostics = tuple(getattr(ctrl, "diagnostics", ()))
            unknown = [d for d in diagnostics if d not in self.diagnostics]
            if unknown:
                raise ControllerError(f"controller {spec!r} for {label}: diagnostics {unknown} were not announced")
            if hasattr(ctrl, "bind"):
                try:
                    ctrl.bind(context)
                except (Exception, SystemExit) as exc:  # noqa: BLE001
                    raise ControllerError(f"controller {spec!r} for {label}: bind() failed: "
                                          f"{type(exc).__name__}: {exc}") from exc
            eid = f"ctrl_{label}"
            self.index[eid] = len(self.index)
            self.column_inputs = tuple(dict.fromkeys([*self.column_inputs, *ctrl.inputs]))
            self.entities[eid] = {"ctrl": ctrl, "label": label, "spec": spec, "next_s": 0,
                                  "thread_safe": bool(getattr(ctrl, "thread_safe", False)),
                                  "batch": callable(getattr(type(ctrl), "step_many", None)),
                                  "observes": hasattr(ctrl, "observe"), "diagnostics": diagnostics,
                                  "faults": 0, "overruns": 0,
                                  "allowed": frozenset(ctrl.outputs) | frozenset(diagnostics),
                                  "declared": tuple(n for n in ctrl.outputs if n in SETPOINTS),
                                  "out": {name: math.nan for name in (*ctrl.outputs, *diagnostics,
                                                                      *HOST_DIAGNOSTICS)}}
            out.append({"eid": eid, "type": model, "extra_info": {
                "inputs": list(ctrl.inputs), "outputs": list(ctrl.outputs), "period_s": int(ctrl.period_s),
                "diagnostics": list(diagnostics) + HOST_DIAGNOSTICS}})
        return out

    def step(self, time: int, inputs: dict[str, dict[str, dict[str, Any]]], max_advance: int) -> int:
        jobs = []
        columns = {name: tuple(a.tolist() for a in gathered(self, name)) for name in self.column_inputs}
        for eid, ent in self.entities.items():
            ctrl = ent["ctrl"]
            out = ent["out"]
            for name in ent["diagnostics"]:
                out[name] = math.nan
            out["step_ms"], out["fault"], out["overrun"] = math.nan, 0.0, 0.0
            due = ent["next_s"] <= time
            if not (due or ent["observes"]):
                continue
            j = self.index[eid]
            obs = {name: columns[name][0][j] for name in ctrl.inputs if columns[name][1][j]}
            where = f"controller {ent['spec']!r} for {ent['label']} at t = {time} s"
            jobs.append((ent, obs, due, where))
        # due controllers of a class with ``step_many`` are stepped together, one call per class
        batches: dict[type, list[tuple[dict[str, Any], dict[str, float], bool, str]]] = {}
        for job in jobs:
            if job[2] and job[0]["batch"] and self.batch:
                batches.setdefault(type(job[0]["ctrl"]), []).append(job)
        done: dict[int, tuple[dict[str, float], ControllerFault | None, float]] = {}
        for cls, group in batches.items():
            done.update(self._batch_call(cls, group, time))
        # thread-safe controllers (``thread_safe = True``: no state shared between instances) are stepped on the
        # pool; their results are handled below in the entities' order, so the run does not depend on it. A
        # minute that only observes stays on this thread: handing 2,000 tiny observe() calls to the pool cost
        # more than the calls
        pooled = ([job for job in jobs if job[2] and job[0]["thread_safe"] and id(job) not in done]
                  if self.pool is not None else [])
        futures = {id(job): self.pool.submit(self._timed_call, job, time) for job in pooled}
        for job in jobs:
            ent, obs, due, where = job
            future = futures.get(id(job))
            if id(job) in done:
                setpoints, fault, elapsed_s = done[id(job)]
            else:
                setpoints, fault, elapsed_s = future.result() if future is not None else self._timed_call(job, time)
            out, ctrl = ent["out"], ent["ctrl"]
            if fault is not None:
                if self.on_fault == "stop":
                    for other in futures.values():
                        other.cancel()
                    raise ControllerError(f"{where} {fault} (hems.on_fault = 'fallback' counts such faults "
                                          f"and carries on)") from fault.__cause__
                setpoints = {name: FALLBACK[name] for name in ctrl.outputs}
                out["fault"] = 1.0
                ent["faults"] += 1
            out["step_ms"] = 1000.0 * elapsed_s
            if self.step_timeout_s is not None and elapsed_s > self.step_timeout_s:
                out["overrun"] = 1.0
                ent["overruns"] += 1
                if ent["overruns"] == 1:
                    print(f"warning: {where} took {elapsed_s:.2f} s, over hems.step_timeout_s = "
                          f"{self.step_timeout_s:g} s; further overruns are counted in summary.json",
                          file=sys.stderr, flush=True)
            if not due:
                continue
            out.update(setpoints)
            ent["next_s"] = time + int(ctrl.period_s)
        return time + self.step_s  # every minute: the host's own diagnostics are recorded every minute

    def _timed_call(self, job: tuple[dict[str, Any], dict[str, float], bool, str],
                    time: int) -> tuple[dict[str, float], ControllerFault | None, float]:
        """One controller's observe/step: (setpoints, the fault or None, wall time in s)."""
        ent, obs, due, where = job
        started = _time.perf_counter()
        fault: ControllerFault | None = None
        try:
            setpoints = self._call(ent["ctrl"], ent, time, obs, due, where)
        except ControllerFault as exc:
            setpoints, fault = {}, exc
        return setpoints, fault, _time.perf_counter() - started

    def _batch_call(self, cls: Any, group: list[tuple[dict[str, Any], dict[str, float], bool, str]],
                    time: int) -> dict[int, tuple[dict[str, float], ControllerFault | None, float]]:
        """observe() of each, then one ``cls.step_many`` for all that did not fault: per job (setpoints, the
        fault or None, wall time in s: its observe plus an equal share of the batch)."""
        out: dict[int, tuple[dict[str, float], ControllerFault | None, float]] = {}
        ready = []
        for job in group:
            ent, obs = job[0], job[1]
            started = _time.perf_counter()
            try:
                if ent["observes"]:
                    ent["ctrl"].observe(time, obs)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - a plug-in may raise or exit anything
                failed = ControllerFault(f"raised {type(exc).__name__}: {exc}")
                failed.__cause__ = exc
                out[id(job)] = ({}, failed, _time.perf_counter() - started)
                continue
            ready.append((job, _time.perf_counter() - started))
        if not ready:
            return out
        started = _time.perf_counter()
        try:
            answers = list(cls.step_many([(job[0]["ctrl"], job[1]) for job, _ in ready], time, self.threads))
            if len(answers) != len(ready):
                raise ValueError(f"step_many returned {len(answers)} answers for {len(ready)} controllers")
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the whole call failed: a fault of each
            answers = [exc] * len(ready)
        share_s = (_time.perf_counter() - started) / len(ready)
        for (job, observe_s), answer in zip(ready, answers):
            ent, where = job[0], job[3]
            fault: ControllerFault | None = None
            try:
                if isinstance(answer, BaseException):
                    raise ControllerFault(f"raised {type(answer).__name__}: {answer}") from answer
                setpoints = self._checked(ent, answer, where)
            except ControllerFault as exc:
                setpoints, fault = {}, exc
            out[id(job)] = (setpoints, fault, observe_s + share_s)
        return out

    def finalize(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)

    @staticmethod
    def _call(ctrl: Any, ent: dict[str, Any], time: int, obs: dict[str, float], due: bool,
              where: str) -> dict[str, float]:
        """observe() and, when due, step(); the checked setpoints, or :class:`ControllerFault`."""
        try:
            if ent["observes"]:
                ctrl.observe(time, obs)
            if not due:
                return {}
            setpoints = ctrl.step(time, obs)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a plug-in may raise or exit anything
            raise ControllerFault(f"raised {type(exc).__name__}: {exc}") from exc
        return ControllerSim._checked(ent, setpoints, where)

    @staticmethod
    def _checked(ent: dict[str, Any], setpoints: Any, where: str) -> dict[str, float]:
        """The setpoints as floats, or :class:`ControllerFault`; undeclared names are a :class:`ControllerError`."""
        if not isinstance(setpoints, dict) and not hasattr(setpoints, "items"):
            raise ControllerFault(f"returned {type(setpoints).__name__}, expected a mapping")
        extra = set(setpoints) - ent["allowed"]
        if extra:
            raise ControllerError(f"{where} returned undeclared output(s) {sorted(extra)}")
        declared = ent["declared"]
        if declared and not any(n in setpoints for n in declared):
            raise ControllerFault(f"returned no setpoint (it declares {', '.join(declared)})")
        checked = {}
        for name, value in setpoints.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ControllerFault(f"returned {name} = {value!r}, expected a number") from None
            if name in SETPOINTS and not math.isfinite(number) and not (name in NAN_MEANS_NONE and math.isnan(number)):
                raise ControllerFault(f"returned {name} = {number!r}, expected a finite number")
            if name in _POWER_SETPOINTS and abs(number) > MAX_SETPOINT_KW:
                raise ControllerFault(f"returned {name} = {number!r}, beyond ±{MAX_SETPOINT_KW:g} kW")
            if name == "follow_residual" and number != 0.0 and number != 1.0:
                raise ControllerFault(f"returned follow_residual = {number!r}, expected 0 or 1")
            checked[name] = number
        return checked

    def column(self, attr: str, eids: list[str]) -> list[float]:
        """``attr`` of the controllers ``eids`` (the recorder's table; the same numbers as :meth:`get_data`)."""
        return [self.entities[eid]["out"].get(attr, math.nan) for eid in eids]

    def get_data(self, outputs: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
        return {eid: {a: self.entities[eid]["out"].get(a, math.nan) for a in attrs} for eid, attrs in outputs.items()}
