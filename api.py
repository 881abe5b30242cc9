"""The Python entry point: load a scenario by name or path, change it, run it (or a window of it), read the result.

::

    import dercosim as dc
    sc = dc.load("fleet_market_s4")                  # a bundled scenario's name, or a path
    sc.set("contract.interval_s", 60)                # validated again as a whole, like a file
    res = dc.run(sc, start="10:00", until="2h", plots=False)
    res.summary["voltage"]["min_pu"]
    res.households                                   # tidy frame: one row per step and household
    res.wide("bus", "vm_pu")                         # time × bus
    res.plot.voltage_envelope()                      # a matplotlib figure
    dc.Result.open("runs/fleet_market_s4-20261203-101500")
"""

from __future__ import annotations

from datetime import datetime, time
from pathlib import Path

from dercosim.analysis.results import Result
from dercosim.scenarios.bundled import resolve_path
from dercosim.scenarios.config import Scenario, ScenarioError, parse_duration_s
from dercosim.scenarios.load import checked, load_scenario

__all__ = ["Result", "Scenario", "ScenarioError", "load", "run", "window"]


def load(name_or_path: str | Path) -> Scenario:
    """The validated scenario of a TOML file, or of a bundled scenario by its name (``dercosim list``)."""
    return load_scenario(resolve_path(str(name_or_path)))


def start_offset_s(scenario: Scenario, start: str | int) -> int:
    """Seconds from the scenario's start to ``start``: a time of day on the start's date (``"10:00"``), a date and
    time (``"2016-06-21 10:00"``), or an offset (``"10h"``, seconds)."""
    begin = scenario.clock.start
    text = str(start).strip()
    try:
        if isinstance(start, str) and ":" in text and "-" not in text:
            at = datetime.combine(begin.date(), time.fromisoformat(text))
        elif isinstance(start, str) and "-" in text:
            at = datetime.fromisoformat(text)
        else:
            return parse_duration_s(start)
    except ValueError as exc:
        raise ScenarioError(f"start {start!r}: expected a time of day (10:00), a date and time (2016-06-21 10:00) "
                            f"or an offset from the scenario's start (10h): {exc}") from None
    if at.tzinfo is not None:
        raise ScenarioError(f"start {start!r}: give the site's local standard time, without a time zone")
    return int((at - begin).total_seconds())


def window(scenario: Scenario, start: str | int | None = None, until: str | int | None = None,
           where: str | None = None) -> tuple[Scenario, int]:
    """The scenario to simulate for the window [``start``, ``start`` + ``until``) and the window's offset.

    The steps before ``start`` are simulated (same states, day-ahead plans and commitments as in the whole run),
    not recorded; ``until`` defaults to the rest of the scenario. A start outside the run, not on a step, or
    (with a market) not on a market interval is a :class:`ScenarioError`.
    """
    from dercosim.scenarios.world import with_duration

    where = where or scenario.name
    step_s = scenario.clock.step_s
    offset = start_offset_s(scenario, start) if start is not None else 0
    if not 0 <= offset < scenario.clock.duration:
        raise ScenarioError(f"{where}: start {start!r} is {offset} s after the scenario's start "
                            f"({scenario.clock.start:%Y-%m-%d %H:%M}); it must fall within its "
                            f"{scenario.clock.duration} s")
    if offset % step_s:
        raise ScenarioError(f"{where}: start {start!r} is not on a {step_s}-s step")
    if offset and scenario.market is not None and offset % scenario.market.interval_s:
        raise ScenarioError(f"{where}: start {start!r} is not on a market interval ({scenario.market.interval_s} s):"
                            f" the settlement is per interval")
    if until is not None:
        try:
            length = parse_duration_s(until)
        except ValueError as exc:
            raise ScenarioError(f"{where}: until: {exc}") from None
        if length <= 0 or length % step_s:
            raise ScenarioError(f"{where}: until {until!r}: {length} s is not a positive whole number of "
                                f"{step_s}-s steps")
    else:
        length = scenario.clock.duration - offset
    if offset + length != scenario.clock.duration:
        scenario = with_duration(scenario, offset + length)
        scenario = checked(scenario, where)
    return scenario, offset


def run(scenario: Scenario | str | Path, until: str | int | None = None, start: str | int | None = None,
        out: str | Path | None = None, plots: bool = True, progress: bool = False) -> Result:
    """Run ``scenario`` (an object, a bundled name or a path) and return its :class:`Result`.

    ``until``: the run length (``"90min"``, ``"6h"``, ``"1d"`` or seconds); by default the scenario's own
    ``clock.duration`` (from ``start``: the rest of it). ``start``: record only from this time on (``"10:00"``,
    ``"2016-06-21 10:00"`` or an offset such as ``"10h"``); what comes before is simulated, not recorded, so the
    window's numbers are the whole run's. ``out``: the run folder, new or empty (default
    ``runs/<name>-<timestamp>/``). ``plots``: False writes no figures (``res.plot`` still draws them).
    """
    from dercosim.cli import make_run_dir
    from dercosim.scenarios.world import run_scenario

    if not isinstance(scenario, Scenario):
        scenario = load(scenario)
    scenario, record_from_s = window(scenario, start, until)
    out_dir = Path(out) if out is not None else make_run_dir(Path("runs"), scenario.name)
    return run_scenario(scenario, out_dir, progress=progress, record_from_s=record_from_s, plots=plots)
