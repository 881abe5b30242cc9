"""The Python entry point: load a scenario by name or path, run it, get its folder and summary back.

::

    import dercosim as dc
    sc = dc.load("households_mpc")
    res = dc.run(sc, until="2h", out="runs/mpc-2h")
    res.summary["voltage"]
"""

from __future__ import annotations

from pathlib import Path

from dercosim.scenarios.bundled import resolve_path
from dercosim.scenarios.config import Scenario, parse_duration_s
from dercosim.scenarios.load import load_scenario
from dercosim.scenarios.world import RunResult, run_scenario, with_duration

__all__ = ["RunResult", "Scenario", "load", "run"]


def load(name_or_path: str | Path) -> Scenario:
    """The validated scenario of a TOML file, or of a bundled scenario by its name (``dercosim list``)."""
    return load_scenario(resolve_path(str(name_or_path)))


def run(scenario: Scenario | str | Path, out: str | Path, until: str | int | None = None,
        progress: bool = False) -> RunResult:
    """Run ``scenario`` (an object, a bundled name or a path) into the new folder ``out``.

    ``until``: the run length from the scenario's start (``"90min"``, ``"6h"``, ``"1d"`` or seconds); by default
    the scenario's own ``clock.duration``.
    """
    if not isinstance(scenario, Scenario):
        scenario = load(scenario)
    if until is not None:
        scenario = with_duration(scenario, parse_duration_s(until))
    return run_scenario(scenario, out, progress=progress)
