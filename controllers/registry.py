"""Find a controller class by name and check it honours the protocol.

A scenario names a controller as

- ``"package.module:ClassName"``: imported (the scenario file's folder is on the path),
- ``"file.py:ClassName"``: loaded from that file, relative to the scenario file's folder,
- ``"name"``: registered in the entry-point group ``dercosim.controllers``
  (dercosim registers ``rule_based``).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from dercosim.controllers.base import OBSERVATIONS, SETPOINTS

ENTRY_POINT_GROUP = "dercosim.controllers"


class ControllerError(Exception):
    """A controller cannot be found, does not fit, or failed; the message names it."""


def registered_controllers() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_controller_class(spec: str, base_dir: str | Path | None = None) -> type:
    """The class named by ``spec`` (see module doc); :class:`ControllerError` if it cannot be found."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    if ":" not in spec:
        eps = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == spec]
        if not eps:
            known = ", ".join(sorted(registered_controllers())) or "none"
            raise ControllerError(f"controller {spec!r}: no controller registered under that name "
                                  f"(registered: {known}); or give 'module:Class' or 'file.py:Class'")
        try:
            return eps[0].load()
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - report any import failure with the name
            raise ControllerError(f"controller {spec!r}: loading {eps[0].value} failed: {exc}") from None
    module_name, _, class_name = spec.rpartition(":")
    try:
        if module_name.endswith(".py"):
            path = (base / module_name).resolve()
            if not path.is_file():
                raise ControllerError(f"controller {spec!r}: file {path} not found")
            mod_id = f"dercosim_user_{path.stem}_{abs(hash(str(path)))}"
            module_spec = importlib.util.spec_from_file_location(mod_id, path)
            if module_spec is None or module_spec.loader is None:
                raise ControllerError(f"controller {spec!r}: {path} cannot be imported as a Python module")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[mod_id] = module
            module_spec.loader.exec_module(module)
        else:
            if str(base) not in sys.path:
                sys.path.insert(0, str(base))
            module = importlib.import_module(module_name)
    except ControllerError:
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a plug-in may raise or exit
        raise ControllerError(f"controller {spec!r}: importing {module_name!r} failed: "
                              f"{type(exc).__name__}: {exc}") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ControllerError(f"controller {spec!r}: {module_name!r} has no {class_name!r}")
    return cls


def param_errors(cls: type, params: dict[str, Any]) -> list[tuple[str, str]]:
    """What is wrong with ``params`` for controller ``cls``, as (key path below ``params``, message) pairs.

    A controller declares its parameters, most usefully as a pydantic model
    ``Params`` (types, bounds, defaults; validated strictly, as a TOML file
    gives them); else :meth:`BaseController.parameters`; else the constructor's
    signature is checked for unknown or missing names.
    """
    model = getattr(cls, "Params", None)
    if isinstance(model, type) and issubclass(model, BaseModel):
        try:
            model.model_validate(params, strict=True)
        except ValidationError as exc:
            out = []
            for err in exc.errors():
                key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
                msg = err["msg"].removeprefix("Value error, ")
                if err["type"] == "extra_forbidden":
                    msg = f"unknown parameter; expected one of: {', '.join(model.model_fields)}"
                elif "got " not in msg and not isinstance(err["input"], (dict, list)):
                    text = repr(err["input"])
                    msg += f" (got {text if len(text) <= 80 else text[:80] + '…'})"
                out.append((key, msg))
            return out
        return []
    declared = getattr(cls, "parameters", None)
    if callable(declared):
        try:
            names = set(declared())
        except TypeError:
            names = None
        if names is not None:
            return [(f".{k}", f"unknown parameter; expected one of: {', '.join(sorted(names)) or 'none'}")
                    for k in params if k not in names]
    try:
        inspect.signature(cls).bind(**params)
    except TypeError as exc:
        try:
            accepted = ", ".join(n for n in inspect.signature(cls).parameters if n not in ("args", "kwargs"))
        except (TypeError, ValueError):
            accepted = "?"
        return [("", f"{exc} (the constructor takes: {accepted or 'nothing'})")]
    except ValueError:  # no signature to inspect (a builtin): the constructor will tell
        return []
    return []


def make_controller(cls: type, spec: str, params: dict[str, Any], label: str,
                    available: set[str], writable: set[str], step_s: int = 60) -> Any:
    """Instantiate and check a controller for ``label`` (a household or battery name).

    ``available``: the observations this household can provide;
    ``writable``: the setpoints it can take.
    """
    where = f"controller {spec!r} for {label}"
    try:
        ctrl = cls(**params)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a plug-in may raise or exit
        raise ControllerError(f"{where}: constructor failed with params {params}: "
                              f"{type(exc).__name__}: {exc}") from None
    for attr in ("period_s", "inputs", "outputs", "step"):
        if not hasattr(ctrl, attr):
            raise ControllerError(f"{where}: missing '{attr}' (a controller needs period_s, inputs, outputs, step)")
    if not isinstance(ctrl.period_s, int) or ctrl.period_s <= 0 or ctrl.period_s % step_s:
        raise ControllerError(f"{where}: period_s must be a positive multiple of the clock's step ({step_s} s), "
                              f"got {ctrl.period_s!r}")
    unknown_in = [n for n in ctrl.inputs if n not in OBSERVATIONS]
    if unknown_in:
        raise ControllerError(f"{where}: unknown input(s) {unknown_in}; known: {', '.join(OBSERVATIONS)}")
    missing = [n for n in ctrl.inputs if n not in available]
    if missing:
        raise ControllerError(f"{where}: input(s) {missing} not available here "
                              f"(this household provides: {', '.join(sorted(available))})")
    unknown_out = [n for n in ctrl.outputs if n not in SETPOINTS]
    if unknown_out:
        raise ControllerError(f"{where}: unknown output(s) {unknown_out}; known: {', '.join(SETPOINTS)}")
    not_writable = [n for n in ctrl.outputs if n not in writable]
    if not_writable:
        raise ControllerError(f"{where}: output(s) {not_writable} have nothing to drive here "
                              f"(this household takes: {', '.join(sorted(writable)) or 'nothing'})")
    if not ctrl.outputs:
        raise ControllerError(f"{where}: declares no outputs")
    clash = [d for d in getattr(ctrl, "diagnostics", ()) if d in OBSERVATIONS or d in SETPOINTS]
    if clash:
        raise ControllerError(f"{where}: diagnostics {clash} reuse observation/setpoint names")
    return ctrl

