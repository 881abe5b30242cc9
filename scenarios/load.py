"""Loading a scenario: the schema (:mod:`~dercosim.scenarios.config`) and the checks that need more than it.

A bad file stops here, before anything is written, with the file, the key path and what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from dercosim.scenarios import fleet
from dercosim.scenarios.config import Scenario, ScenarioError, parse_scenario


def load_scenario(path: str | Path) -> Scenario:
    """Read, validate and check a scenario TOML file; :class:`ScenarioError` on any problem.

    Values are validated strictly (:func:`~dercosim.scenarios.config.parse_scenario`), and everything a run
    would otherwise find out later is checked here, before anything is written: the controller plug-in is
    resolved and its parameters validated, the fleet is drawn (not its profiles) and price data cover the dates
    (:func:`check_scenario`).
    """
    return checked(parse_scenario(path), path)


def checked(scenario: Scenario, where: str | Path | None = None) -> Scenario:
    """``scenario``, passed by :func:`check_scenario` and marked so (a run then need not check it again): for a
    scenario changed after loading (``--until``, ``--set``), so every check runs before a run folder exists."""
    check_scenario(scenario, where)
    scenario._checked_as = scenario.model_dump_json()
    return scenario


def check_scenario(scenario: Scenario, where: str | Path | None = None) -> fleet.Fleet:
    """Checks that need more than the schema, cheap enough to run before anything is written.

    The controller plug-in resolves and takes its parameters; the drawn fleet
    gives the controller and the planner something to act on; the bundled
    prices cover the run's dates. :class:`ScenarioError` names ``where`` (the
    file; the scenario's name if None) and the key. Returns the fleet it drew.
    """
    where = where if where is not None else scenario.name
    if scenario.contract is not None and scenario.contract.engine == "evm":
        from dercosim.environment import MissingExtra, require_extra

        try:
            require_extra("evm")
        except MissingExtra as exc:
            raise ScenarioError(f"{where}: contract.engine: {exc}") from None
    hems = scenario.hems
    if hems.controller is not None:
        from dercosim.controllers.registry import ControllerError, load_controller_class, param_errors

        try:
            cls = load_controller_class(hems.controller, scenario.source_dir)
        except ControllerError as exc:
            raise ScenarioError(f"{where}: hems.controller: {exc}") from None
        errors = param_errors(cls, dict(hems.params))
        if errors:
            raise ScenarioError("\n".join(f"{where}: hems.params{key}: {msg}" for key, msg in errors))
        _same_market_interval(scenario, cls, where)
    try:
        drawn = fleet.Fleet.draw(scenario)
    except ScenarioError as exc:
        raise ScenarioError(f"{where}: {exc}") from None
    table, batteries, hvac = drawn.households, drawn.batteries, drawn.hvac
    if hems.controller is not None:
        from dercosim.controllers.base import household_io
        from dercosim.controllers.registry import ControllerError, load_controller_class, make_controller

        names = drawn.controlled
        if not names:
            raise ScenarioError(f"{where}: hems.applies_to: {hems.applies_to!r}: no household qualifies, "
                                f"so controller {hems.controller!r} would control nothing")
        # one instance per kind of household it applies to: inputs, outputs, period and constructor
        owners = set(batteries["household"])
        has_hvac = dict(zip(table["name"], hvac["p_max_kw"] > 0))
        contract_members = set(drawn.contract_members) if scenario.contract else set()
        member = {n: n in contract_members for n in names}
        has_pv = dict(zip(table["name"], table["pv_kwp"] > 0))
        kinds = {(n in owners, bool(has_hvac[n]), member[n], bool(has_pv[n])): n for n in reversed(names)}
        cls = load_controller_class(hems.controller, scenario.source_dir)
        for (has_battery, with_hvac, in_contract, with_pv), label in kinds.items():
            available, writable = household_io(has_battery, with_hvac, in_contract, with_pv)
            try:
                make_controller(cls, hems.controller, dict(hems.params), label, set(available), set(writable),
                                scenario.clock.step_s)
            except ControllerError as exc:
                raise ScenarioError(f"{where}: hems.controller: {exc}") from None
        if scenario.planner is not None:
            communities = table.loc[table["group"] == scenario.planner.communities, "name"]
            clash = sorted(set(names) & set(communities))
            if clash:
                raise ScenarioError(f"{where}: hems.applies_to: households {clash[:5]}{'…' if len(clash) > 5 else ''} "
                                    f"are communities of the planner and also have a HEMS controller; restrict "
                                    f"hems.applies_to or use another household group")
    market, planner = scenario.market, scenario.planner
    if market is not None and batteries.empty:
        raise ScenarioError(f"{where}: batteries.groups: the fleet draws no battery (e.g. households = "
                            f"'with_pv' and no PV); an aggregator needs batteries")
    from dercosim.timeseries import weather

    site = weather.site_of(scenario.site)
    times = weather.time_index(scenario.clock.start, scenario.n_steps, scenario.clock.step_s, site.tz)
    _check_data_files(scenario, drawn, site, times, where)
    # every price series the run reads must cover its dates
    series = ([("market.wholesale", market.wholesale), ("market.imbalance", market.imbalance)] if market else [])
    if scenario.tariff.kind == "agile_octopus":
        series.append(("tariff.agile.market", scenario.tariff.agile.market))
    if planner is not None:
        series.append(("planner.b2g_market", planner.b2g_market))
    if series:
        from dercosim.timeseries.prices import price_per_kwh

        for key, name in series:
            try:
                # a file must cover the whole days (the market plans them); the bundled windows are checked at the
                # run's own steps, as before
                price_per_kwh(name, times if isinstance(name, str) else weather.whole_days(times, scenario.clock.step_s))
            except ValueError as exc:
                hint = "fix the file" if not isinstance(name, str) else "move clock.start or choose another market"
                raise ScenarioError(f"{where}: {key}: {exc}; {hint}") from None
    return drawn


def _check_data_files(scenario: Scenario, drawn: fleet.Fleet, site: Any, times: pd.DatetimeIndex,
                      where: str | Path) -> None:
    """Every data file of the scenario read for the run's window (the reads are cached: the run does not read them
    again) and checked; :class:`ScenarioError` naming the key path and the file's first bad row."""
    from dercosim.scenarios.resolve import base_load_shape, household_file_kw, profile_days
    from dercosim.timeseries import weather
    from dercosim.timeseries.files import DataFileError

    groups = [(k, g) for k, g in enumerate(scenario.households.groups) if g.load is not None or g.pv is not None]
    shape_file = not isinstance(scenario.grid.base_load.shape, str)
    if not groups and not shape_file and scenario.site.file is None:
        return
    days = profile_days(times, scenario.clock.step_s)
    key = "site.file"
    try:
        if scenario.site.file is not None:
            weather.measured(site, days)
        table = drawn.households
        for k, group in groups:
            names = list(table.loc[table["group"] == group.name, "name"])
            for part in ("load", "pv"):
                spec = getattr(group, part)
                if spec is not None and spec != "simbench":
                    key = f"households.groups[{k}].{part}"
                    household_file_kw(spec, names, days, site.tz)
        if shape_file:
            key = "grid.base_load.shape"
            base_load_shape(scenario, times)
    except DataFileError as exc:
        raise ScenarioError(f"{where}: {key}: {exc}") from None


def _same_market_interval(scenario: Scenario, cls: type, where: str | Path) -> None:
    """A controller that plans to the end of the market interval (``market_interval_s``, the MPC's) must use the
    market's interval (planned to another grid, its commitments and the settlement would disagree), and the
    interval must be whole steps of the clock."""
    market = scenario.market
    model = getattr(cls, "Params", None)
    fields = getattr(model, "model_fields", None) or {}
    if "market_interval_s" not in fields:
        return
    given = scenario.hems.params.get("market_interval_s")
    value = given if given is not None else fields["market_interval_s"].default
    step = scenario.clock.step_s
    if value % step:  # it plans on the clock's steps to the interval's end
        said = "" if given is not None else " (its default)"
        raise ScenarioError(f"{where}: hems.params.market_interval_s: {value} s{said} is not a whole number of the "
                            f"clock's steps ({step} s)")
    if market is None:
        return
    if value != market.interval_s:
        said = "" if given is not None else " (its default)"
        raise ScenarioError(f"{where}: hems.params.market_interval_s: {value} s{said} must equal market.interval_s "
                            f"({market.interval_s} s): the controller would plan to another interval than the "
                            f"market settles")
