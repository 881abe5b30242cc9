"""The run resolved once from a validated scenario: site and its weather, time index, fleet, profiles, tariff,
the aggregator's portfolio and the smart contract's members, and what the market knows the day before.

The world builder, the simulators' init arguments, the summaries, the planner case and the studies read these
from one :class:`RunInputs`; nothing downstream derives them from the raw scenario again.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from dercosim.scenarios.config import Scenario
from dercosim.scenarios.fleet import Fleet
from dercosim.timeseries import files, weather
from dercosim.timeseries.rng import DayStreams
from dercosim.timeseries.tariffs import Tariff, tariff_of


@dataclass(frozen=True)
class RunInputs:
    """A scenario resolved into everything a run needs, once: site, clock, tariff, fleet, profiles at the clock's step.

    The profiles are held on the whole calendar days the run touches and the day after (``days``): the
    aggregator plans the run's whole days, a controller may look up to a day past the run's last step, so
    neither depends on where the run stops. ``load_kw``, ``pv_kw`` and ``wind_kw`` are the run's own steps.
    """

    scenario: Scenario
    site: weather.Site
    times: pd.DatetimeIndex  #: the start of every step, local standard time of the site
    tariff: Tariff
    fleet: Fleet
    days: pd.DatetimeIndex  #: every step of the whole days that ``times`` touches, and of the day after
    day_load_kw: np.ndarray  #: (len(days), households)
    day_pv_kw: np.ndarray  #: (len(days), households)
    day_wind_kw: np.ndarray | None  #: (len(days), households); None: no turbine in the fleet
    base_shape: np.ndarray  #: (steps,) multiplier of the case's base load; (steps, buses) with SimBench profiles
    #: what the aggregator knows the day before (:func:`market_inputs`); None without ``[market]``
    market_inputs: dict[str, Any] | None

    @classmethod
    def resolve(cls, scenario: Scenario, fleet: Fleet | None = None) -> RunInputs:
        """Resolve ``scenario`` (``fleet``: its already drawn :class:`Fleet`, else drawn here)."""
        site = weather.site_of(scenario.site)
        times = weather.time_index(scenario.clock.start, scenario.n_steps, scenario.clock.step_s, site.tz)
        fleet = fleet if fleet is not None else Fleet.draw(scenario)
        step_s = scenario.clock.step_s
        days = profile_days(times, step_s)
        run_days = days[:-(86400 // step_s)]
        load_kw, pv_kw = day_profiles(scenario, fleet.households, days, site)
        wind_kw = None
        if len(fleet.households) and (fleet.households["wind_kw"] > 0).any():
            from dercosim.timeseries.wind import wind_ac_kw

            model = _model_grid(days, site)
            wind_kw = files.regrid(wind_ac_kw(site, model, fleet.households["wind_kw"].to_numpy(float),
                                                fleet.households["wind_hub_height_m"].to_numpy(float)),
                                     _step_of(model), step_s)
        tariff = tariff_of(scenario)
        n = len(run_days)
        market = None
        if scenario.market is not None:  # (PV and wind together: as large as the profiles, made only if needed)
            gen_kw = pv_kw[:n] + (wind_kw[:n] if wind_kw is not None else 0.0)
            market = market_inputs(scenario, fleet, times, run_days, load_kw[:n], gen_kw, tariff)
            del gen_kw
        inputs = cls(scenario, site, times, tariff, fleet, days, load_kw, pv_kw, wind_kw,
                     base_load_shape(scenario, times), market)
        files.cache_clear()  # what the check read is in the profiles now: not held twice through a long run
        return inputs

    @property
    def per_day(self) -> int:
        """Steps in a day."""
        return 86400 // self.scenario.clock.step_s

    @property
    def _steps(self) -> slice:
        first = int(self.days.get_loc(self.times[0]))
        return slice(first, first + len(self.times))

    @property
    def load_kw(self) -> np.ndarray:
        """(steps, households) household demand without HVAC, kW."""
        return self.day_load_kw[self._steps]

    @property
    def pv_kw(self) -> np.ndarray:
        """(steps, households) PV output, kW."""
        return self.day_pv_kw[self._steps]

    @property
    def wind_kw(self) -> np.ndarray | None:
        """(steps, households) wind turbine output, kW; None without turbines."""
        return None if self.day_wind_kw is None else self.day_wind_kw[self._steps]

    @property
    def ahead(self) -> slice:
        """The steps from the run's start to the end of its last whole day, on ``days``: what a planner plans,
        the same whatever the run's length (a plan never stops at ``--until``)."""
        return slice(int(self.days.get_loc(self.times[0])), len(self.days) - self.per_day)

    @property
    def outlook(self) -> slice:
        """The steps from the run's start to the end of the day after its last whole day, on ``days``: what a
        controller may look ahead at (up to 24 h past any step of the run)."""
        return slice(int(self.days.get_loc(self.times[0])), None)

    def outlook_prices(self) -> tuple[np.ndarray, np.ndarray]:
        """Import and export price (currency/kWh) on the :attr:`outlook` steps. Where the price data end within
        the day after the run, that day repeats the run's last day (no run can be longer, so no run differs)."""
        times = self.days[self.outlook]
        try:
            return self.tariff.import_price(times), self.tariff.export_price(times)
        except ValueError:  # the data end with the run
            within = self.days[self.ahead]
            imp, exp = self.tariff.import_price(within), self.tariff.export_price(within)
            last = self.per_day
            return np.concatenate([imp, imp[-last:]]), np.concatenate([exp, exp[-last:]])

    @cached_property
    def day_outdoor_temperature_c(self) -> np.ndarray:
        """(len(days),) outdoor temperature at the site, °C."""
        return weather.outdoor_temperature_c(self.site, self.days)

    @property
    def outdoor_temperature_c(self) -> np.ndarray:
        """(steps,) outdoor temperature at the site, °C."""
        return self.day_outdoor_temperature_c[self._steps]


def profile_days(times: pd.DatetimeIndex, step_s: int) -> pd.DatetimeIndex:
    """Every step of the whole calendar days ``times`` touches and of the day after (what a controller may look
    ahead at): where a run's profiles are held."""
    run_days = weather.whole_days(times, step_s)
    return run_days.append(run_days[-(86400 // step_s):] + pd.Timedelta(days=1))


def market_inputs(scenario: Scenario, fleet: Fleet, times: pd.DatetimeIndex, days: pd.DatetimeIndex,
                  load_kw: np.ndarray, gen_kw: np.ndarray, tariff: Tariff) -> dict[str, Any]:
    """What the aggregator knows the day before, per market interval of the whole days the run touches:
    forecasts (kWh) and prices (currency/kWh), and ``first_interval``, the run's start among them.
    ``load_kw`` and ``gen_kw`` (PV and wind): every household's, on ``days``.

    Demand is the portfolio households' load; production their PV and wind plus the aggregator's plants
    (``market.central_groups``). Forecasts are the truth times a seeded error at every
    ``forecast.step_min`` (:class:`~dercosim.timeseries.forecast.Noisy`), or the truth (``kind =
    "perfect"``). Prices are the bundled day-ahead and imbalance series. Whole days, so a day's plan does
    not depend on where the run ends (a shorter run is the first part of a longer one).
    """
    from dercosim.timeseries.forecast import Noisy
    from dercosim.timeseries.prices import price_per_kwh

    m = scenario.market
    assert m is not None, "market_inputs needs a [market] scenario"
    hh = fleet.households
    central = hh["name"].isin(fleet.plants).to_numpy()
    member = hh["name"].isin(fleet.portfolio).to_numpy()
    steps = m.interval_s // scenario.clock.step_s
    n_int = len(days) // steps
    step_h = scenario.clock.step_s / 3600.0
    forecasts = {}
    for name, truth in (("demand", load_kw[:, member].sum(axis=1)),
                        ("production", gen_kw[:, member | central].sum(axis=1))):
        series = truth
        if m.forecast.kind == "noisy":  # each day's error from that day's stream (the plan is made per day)
            streams = DayStreams(scenario.seed, f"market_forecast:{name}")
            per_day = 86400 // scenario.clock.step_s
            series = np.concatenate([
                np.clip(Noisy(truth[d:d + per_day], m.forecast.accuracy, m.forecast.step_min,
                              streams.day(days[d]), scenario.clock.step_s).series, 0.0, None)
                for d in range(0, len(truth), per_day)])
        forecasts[name] = series.reshape(n_int, steps).sum(axis=1) * step_h
    starts = days[::steps]
    import_price = tariff.import_price(days).reshape(n_int, steps).mean(axis=1)
    return {"demand_forecast_kwh": forecasts["demand"], "production_forecast_kwh": forecasts["production"],
            "import_price": import_price, "wholesale_price": price_per_kwh(m.wholesale, starts),
            "imbalance_price": price_per_kwh(m.imbalance, starts),
            "first_interval": int(days.get_loc(times[0]) // steps)}


def day_profiles(scenario: Scenario, table: pd.DataFrame, days: pd.DatetimeIndex,
                 site: weather.Site | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load and PV (kW) at every step of ``days`` (whole calendar days at the clock's step,
    :func:`weather.whole_days`).

    The modelled profiles (BDEW load, PV from the weather) are made per minute and brought to the clock's step
    by the mean (:func:`~dercosim.timeseries.files.regrid`: held within the minute at shorter steps), so a run at another step has
    the same energy in every minute; PV is modelled at the clock's own step only below a minute with measured
    weather. Series from files are read at the clock's step.
    """
    from dercosim.timeseries import loads, pv  # demandlib and pvlib: only when profiles are made

    site = site if site is not None else weather.site_of(scenario.site)
    step_s = _step_of(days)
    minutes = days if step_s == 60 else weather.whole_days(days, 60)
    homes = table["homes"].to_numpy(int) if "homes" in table else np.ones(len(table), int)
    per_home = np.repeat(table["annual_kwh"].to_numpy(float) / homes, homes)
    # only homes with a demand draw a profile: a plant (annual_kwh = 0) added to a scenario leaves every
    # household's profile as it was (fleet_market_s2/s3 against s0)
    has_load = per_home > 0
    if has_load.all():  # (not a second array of the run's size to copy it into)
        load = np.asarray(loads.household_load_kw(minutes, per_home, DayStreams(scenario.seed, "household_load")),
                          float)
    else:
        load = np.zeros((len(minutes), len(per_home)))
        if has_load.any():
            load[:, has_load] = loads.household_load_kw(minutes, per_home[has_load],
                                                         DayStreams(scenario.seed, "household_load"))
    if np.any(homes > 1):  # a community's load is the sum of its homes' own profiles
        load = np.add.reduceat(load, np.concatenate([[0], np.cumsum(homes)[:-1]]), axis=1)
    load = files.regrid(load, 60, step_s)
    model = _model_grid(days, site)
    pv_kw = files.regrid(pv.pv_ac_kw(site, model, table["pv_kwp"].to_numpy(float),
                                       table["pv_tilt_deg"].to_numpy(float), table["pv_azimuth_deg"].to_numpy(float),
                                       DayStreams(scenario.seed, "pv_clouds")), _step_of(model), step_s)
    # groups with their own files: the drawn profiles above are replaced (and still drawn, so a file given to one
    # group leaves every other household's numbers as they were)
    names = table["name"].to_numpy(str)
    for group in scenario.households.groups:
        if group.load is None and group.pv is None:
            continue
        rows = np.flatnonzero(table["group"].to_numpy() == group.name)
        if group.load == "simbench":
            load[:, rows] = _simbench_load_kw(scenario, group.name, table.iloc[rows], days)
        elif group.load is not None:
            load[:, rows] = household_file_kw(group.load, list(names[rows]), days, site.tz)
        if group.pv is not None:
            kwp = table["pv_kwp"].to_numpy(float)[rows]
            if group.pv == "simbench":
                given = _simbench_pv_per_kwp(scenario, table.iloc[rows], days) * kwp[None, :]
            else:
                given = household_file_kw(group.pv, list(names[rows]), days, site.tz)
                if group.pv.unit.endswith("per kWp"):
                    given = given * kwp[None, :]
            pv_kw[:, rows] = np.where(kwp[None, :] > 0, given, 0.0)
    return load, pv_kw


def _calendar_days(days: pd.DatetimeIndex) -> pd.DatetimeIndex:
    return pd.date_range(days[0].normalize(), days[-1].normalize(), freq="D")


def _simbench_load_kw(scenario: Scenario, group: str, rows: pd.DataFrame, days: pd.DatetimeIndex) -> np.ndarray:
    """(len(days), households) SimBench's load of each household's bus, shared by the group's households there."""
    from dercosim.grids.feeders import load_feeder
    from dercosim.timeseries import simbench_profiles

    feeder = load_feeder(scenario.grid.feeder)
    calendar = _calendar_days(days)
    per_bus = simbench_profiles.bus_load_kw(scenario.grid.feeder, feeder.aliases, feeder.n_bus, calendar)
    buses = rows["bus"].to_numpy(int)
    sharing = pd.Series(buses).map(pd.Series(buses).value_counts()).to_numpy(float)
    quarter = per_bus[:, buses - 1] / sharing[None, :]
    minute = simbench_profiles.household_load_kw(quarter, calendar, DayStreams(scenario.seed, f"simbench_load:{group}"))
    return files.regrid(minute, 60, _step_of(days))


def _simbench_pv_per_kwp(scenario: Scenario, rows: pd.DataFrame, days: pd.DatetimeIndex) -> np.ndarray:
    """(len(days), households) SimBench's PV output per kW of rating at each household's bus."""
    from dercosim.grids.feeders import load_feeder
    from dercosim.timeseries import simbench_profiles

    feeder = load_feeder(scenario.grid.feeder)
    calendar = _calendar_days(days)
    per_kw = simbench_profiles.bus_pv_per_kw(scenario.grid.feeder, feeder.aliases, feeder.n_bus, calendar)
    quarter = per_kw[:, rows["bus"].to_numpy(int) - 1]
    return files.regrid(quarter, 900, _step_of(days))


def _step_of(days: pd.DatetimeIndex) -> int:
    """The step of a regular index, s (60 for a single instant)."""
    return int((days[1] - days[0]).total_seconds()) if len(days) > 1 else 60


def _model_grid(days: pd.DatetimeIndex, site: weather.Site) -> pd.DatetimeIndex:
    """Where the weather-driven profiles are modelled: every minute, or the clock's own steps below a minute when
    the site has measured weather (its detail would be lost on minutes)."""
    step_s = _step_of(days)
    if step_s == 60 or (step_s < 60 and site.file is not None):
        return days
    return weather.whole_days(days, 60)


def household_file_kw(spec: Any, households: list[str], days: pd.DatetimeIndex, clock_tz: str) -> np.ndarray:
    """(len(days), households) power (kW, or kW per kWp) from a group's load or PV file (``LoadFile``,
    ``PvFile``), the mean over each step of ``days``. The day after the run (a controller's outlook) repeats the
    run's last day where the file ends with the run; :class:`~dercosim.timeseries.files.DataFileError` else."""
    wanted = spec.column_names(households)
    unique = list(dict.fromkeys(wanted))
    step_s = int((days[1] - days[0]).total_seconds())
    kw: dict[str, Any] = dict(step_s=step_s, rule="mean", unit_factor=files.PV_UNITS[spec.unit],
                              per_step=spec.unit.endswith("per step"), time_column=spec.time_column,
                              timezone=spec.zone(clock_tz), label=spec.label)
    values = files.read_series(spec.file, unique, start=days[0], end=days[-1] + pd.Timedelta(seconds=step_s),
                               outlook_day=True, **kw)
    return values[:, [unique.index(c) for c in wanted]]


def base_load_shape(scenario: Scenario, times: pd.DatetimeIndex) -> np.ndarray:
    """Multiplier of the case's base load at each of ``times``: scale × daily shape."""
    from dercosim.timeseries import loads

    shape = scenario.grid.base_load
    step_s = scenario.clock.step_s
    if not isinstance(shape.shape, str):
        spec = shape.shape
        daily = files.read_series(spec.file, [spec.column], start=times[0],
                                  end=times[-1] + pd.Timedelta(seconds=step_s), step_s=step_s, rule="mean",
                                  unit_factor=files.SHAPE_UNITS[spec.unit], time_column=spec.time_column,
                                  timezone=spec.zone(str(times.tz)), label=spec.label)[:, 0]
        return shape.scale * daily
    if shape.shape == "simbench":  # (steps, buses): every bus its own case loads' profile
        from dercosim.grids.feeders import load_feeder
        from dercosim.timeseries import simbench_profiles

        feeder = load_feeder(scenario.grid.feeder)
        grid = weather.whole_days(times, step_s)
        quarter = simbench_profiles.bus_load_multiplier(scenario.grid.feeder, feeder.aliases, feeder.n_bus,
                                                        _calendar_days(grid))
        per_bus = files.regrid(quarter, 900, step_s)  # held over each quarter hour
        return shape.scale * per_bus[grid.get_indexer(times)]
    if shape.shape == "flat":
        daily = np.ones(len(times))
    elif step_s == 60:
        daily = loads.daily_shape(times)
    else:  # the minute shape of the whole days, brought to the clock's step
        grid = weather.whole_days(times, step_s)
        on_grid = files.regrid(loads.daily_shape(weather.whole_days(times, 60)), 60, step_s)
        daily = on_grid[grid.get_indexer(times)]
    return shape.scale * daily


def data_files(scenario: Scenario) -> list[dict[str, Any]]:
    """Every data file the scenario reads, by scenario key, with what identifies it
    (:func:`~dercosim.timeseries.files.fingerprint`): for ``summary.json``, so a run says which data it saw."""
    found: list[tuple[str, Any]] = [("site.file", scenario.site.file),
                                    ("grid.base_load.shape", scenario.grid.base_load.shape)]
    for k, group in enumerate(scenario.households.groups):
        found += [(f"households.groups[{k}].load", group.load), (f"households.groups[{k}].pv", group.pv)]
    if scenario.market is not None:
        found += [("market.wholesale", scenario.market.wholesale), ("market.imbalance", scenario.market.imbalance)]
    if scenario.tariff.kind == "agile_octopus":
        found.append(("tariff.agile.market", scenario.tariff.agile.market))
    if scenario.planner is not None:
        found.append(("planner.b2g_market", scenario.planner.b2g_market))
    fingerprints: dict[str, dict[str, Any]] = {}
    out = []
    for key, spec in found:
        path = getattr(spec, "file", None)
        if path is None:
            continue
        if path not in fingerprints:
            fingerprints[path] = files.fingerprint(path)
        out.append({"key": key, **fingerprints[path]})
    return out
