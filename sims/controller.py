"""mosaik simulator hosting controller plug-ins: any number of instances of any controller class.

Time-based and self-scheduling: each entity is stepped every ``period_s`` of
its controller; between steps its setpoints hold. Optional parts of the
protocol: ``bind(context)`` is called once after construction with the
household's context; ``observe(t, obs)`` is called every minute (the
simulator then steps every minute); values named in ``diagnostics`` may be
returned by ``step`` and are recorded (NaN in minutes without a step). An
exception inside a controller stops the run with a :class:`ControllerError`
naming the controller, the household and the time.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import mosaik_api_v3

from dercosim.controllers.base import OBSERVATIONS, SETPOINTS
from dercosim.controllers.registry import ControllerError, load_controller_class, make_controller

META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {"Controller": {"public": True, "params": ["spec", "params", "labels", "available", "writable", "contexts",
                                                         "base_dir"],
                              "attrs": list(OBSERVATIONS) + list(SETPOINTS)}},
}


class ControllerSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(copy.deepcopy(META))  # init() adds this run's diagnostics to the attributes
        self.entities: dict[str, dict[str, Any]] = {}

    def init(self, sid: str, time_resolution: float = 1.0, step_s: int = 60, diagnostics: list[str] = ()) -> dict:
        """``diagnostics``: names the hosted controllers may report (added to the model's attributes)."""
        self.step_s = int(step_s)
        self.diagnostics = list(diagnostics)
        self.meta["models"]["Controller"]["attrs"] = list(OBSERVATIONS) + list(SETPOINTS) + self.diagnostics
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
        cls = load_controller_class(spec, base_dir)
        out = []
        contexts = contexts or [{} for _ in labels]
        for label, avail, write, context in zip(labels, available, writable, contexts):
            ctrl = make_controller(cls, spec, dict(params), label, set(avail), set(write))
            diagnostics = tuple(getattr(ctrl, "diagnostics", ()))
            unknown = [d for d in diagnostics if d not in self.diagnostics]
            if unknown:
                raise ControllerError(f"controller {spec!r} for {label}: diagnostics {unknown} were not announced")
            if hasattr(ctrl, "bind"):
                try:
                    ctrl.bind(context)
                except Exception as exc:  # noqa: BLE001
                    raise ControllerError(f"controller {spec!r} for {label}: bind() failed: "
                                          f"{type(exc).__name__}: {exc}") from exc
            eid = f"ctrl_{label}"
            self.entities[eid] = {"ctrl": ctrl, "label": label, "spec": spec, "next_s": 0,
                                  "observes": hasattr(ctrl, "observe"), "diagnostics": diagnostics,
                                  "out": {name: math.nan for name in (*ctrl.outputs, *diagnostics)}}
            out.append({"eid": eid, "type": model, "extra_info": {
                "inputs": list(ctrl.inputs), "outputs": list(ctrl.outputs), "period_s": int(ctrl.period_s),
                "diagnostics": list(diagnostics)}})
        return out

    def step(self, time: int, inputs: dict[str, dict[str, dict[str, Any]]], max_advance: int) -> int:
        for eid, ent in self.entities.items():
            ctrl = ent["ctrl"]
            for name in ent["diagnostics"]:
                ent["out"][name] = math.nan
            due = ent["next_s"] <= time
            if not (due or ent["observes"]):
                continue
            given = inputs.get(eid, {})
            obs = {name: float(sum(given[name].values())) for name in ctrl.inputs if name in given}
            where = f"controller {ent['spec']!r} for {ent['label']} at t = {time} s"
            try:
                if ent["observes"]:
                    ctrl.observe(time, obs)
                if not due:
                    continue
                setpoints = ctrl.step(time, obs)
            except Exception as exc:  # noqa: BLE001 - a plug-in may raise anything
                raise ControllerError(f"{where} raised {type(exc).__name__}: {exc}") from exc
            if not isinstance(setpoints, dict) and not hasattr(setpoints, "items"):
                raise ControllerError(f"{where} returned {type(setpoints).__name__}, expected a mapping")
            extra = set(setpoints) - set(ctrl.outputs) - set(ent["diagnostics"])
            if extra:
                raise ControllerError(f"{where} returned undeclared output(s) {sorted(extra)}")
            for name, value in setpoints.items():
                try:
                    ent["out"][name] = float(value)
                except (TypeError, ValueError):
                    raise ControllerError(f"{where} returned {name} = {value!r}, expected a number") from None
            ent["next_s"] = time + int(ctrl.period_s)
        next_s = min(ent["next_s"] for ent in self.entities.values())
        if any(ent["observes"] or ent["diagnostics"] for ent in self.entities.values()):
            next_s = min(next_s, time + self.step_s)  # observe every minute; diagnostics go back to NaN
        return next_s

    def get_data(self, outputs: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
        return {eid: {a: self.entities[eid]["out"].get(a, math.nan) for a in attrs} for eid, attrs in outputs.items()}
