"""Scenario schema (pydantic) and loading with clear errors.

A scenario is a TOML file. :func:`load_scenario` returns a validated
:class:`Scenario` or raises :class:`ScenarioError` whose message names the
file, the key path (e.g. ``households.groups[0].buses[2]``) and what was
expected. Bus numbers are the papers' 1-based numbers.
"""

from __future__ import annotations

import re
import tomllib
import types
import typing
from datetime import date, datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, PrivateAttr, Tag,
                      ValidationError, ValidationInfo, model_validator)

from dercosim.timeseries import files as _files
from dercosim.timeseries.prices import MARKETS
from dercosim.timeseries.weather import SITES


class ScenarioError(Exception):
    """A scenario file cannot be used; the message says where and why."""


_UNITS_S = {"s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}

#: The longest run a scenario may ask for: one year (the bundled weather is a typical year).
MAX_DURATION_S = 366 * 86400
#: Households (simulated entities) and homes (load profiles behind them) a scenario may draw. A run
#: holds two float64 minute profiles per household and draws one per home: 20,000 households over a
#: week are about 3.2 GB, which this limit keeps within a workstation's memory.
MAX_HOUSEHOLDS = 20_000
MAX_HOMES = 200_000
MAX_PROFILE_BYTES = 8 * 1024 ** 3
_DURATION_HINT = "a duration such as 3600, '90min', '6h' or '1d'"


def parse_duration_s(value: Any) -> int:
    """Seconds from an int (seconds) or a string like ``"90s"``, ``"30min"``, ``"6h"``, ``"1d"``.

    At most :data:`MAX_DURATION_S` (one year).
    """
    if isinstance(value, bool):
        raise ValueError(f"expected {_DURATION_HINT}")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*(\d{1,12}(?:\.\d{1,9})?)\s*([a-z]*)\s*", value.lower())
        if not m or (m.group(2) or "s") not in _UNITS_S:
            raise ValueError(f"expected {_DURATION_HINT}, got {value[:40]!r}")
        seconds_f = float(m.group(1)) * _UNITS_S[m.group(2) or "s"]
        if seconds_f > MAX_DURATION_S:
            raise ValueError(f"expected at most one year ({MAX_DURATION_S} s), got {value[:40]!r}")
        if seconds_f != int(seconds_f):
            raise ValueError(f"duration {value!r} is not a whole number of seconds")
        seconds = int(seconds_f)
    else:
        raise ValueError(f"expected {_DURATION_HINT}, got {value!r}")
    if seconds <= 0:
        raise ValueError(f"expected a positive duration, got {value!r}")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"expected at most one year ({MAX_DURATION_S} s), got {seconds}")
    return seconds


def _to_datetime(value: Any) -> Any:
    """A TOML date or an ISO string (``"2016-06-21"``, ``"2016-06-21T06:00"``) as a naive datetime."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"expected a local date-time such as 2016-06-21T00:00:00, got {value[:40]!r}") from None
    if isinstance(value, datetime) and value.tzinfo is not None:
        raise ValueError("expected a local date-time without a UTC offset (the site's local standard time), "
                         f"got {value.isoformat()}")
    return value


def _check_year(value: datetime) -> datetime:
    if not 1900 <= value.year <= 2100:
        raise ValueError(f"expected a date between 1900 and 2100, got {value.isoformat()}")
    return value


def _to_time(value: Any) -> Any:
    """A TOML local time or a string ``"HH:MM"``; no UTC offset."""
    if isinstance(value, str):
        try:
            value = time.fromisoformat(value)
        except ValueError:
            raise ValueError(f"expected a local time such as 07:00:00 or '07:00', got {value[:40]!r}") from None
    if isinstance(value, time) and value.tzinfo is not None:
        raise ValueError(f"expected a local time without a UTC offset, got {value.isoformat()}")
    if isinstance(value, time):
        return value
    raise ValueError(f"expected a local time such as 07:00:00 or '07:00', got {value!r}")


#: most buses a list of buses may name (lv_schutterwald has 2,940)
MAX_BUSES = 20_000


class _BadBus:
    """A bus reference the feeder does not have, left in place by :func:`resolve_buses` so that the field's own
    check reports it at its key path, every such reference at once."""

    def __init__(self, message: str) -> None:
        self.message = message


def _bus_ref(value: Any) -> Any:
    if isinstance(value, _BadBus):
        raise ValueError(value.message)
    return value


def resolve_buses(data: Any, source_dir: Path | None = None) -> Any:
    """Scenario data with every bus reference a number on its feeder: ``buses = "all"`` (the buses that carry a
    load in the case), bus names, and numbers checked against the feeder's size; a feeder JSON path made
    absolute (relative to ``source_dir``, the scenario file's folder). Errors name the key path. A copy: ``data``
    is not changed."""
    from dercosim.grids.feeders import FeederError, buses_of

    if not isinstance(data, dict):
        return data
    grid = data.get("grid")
    spec = grid.get("feeder", "ieee33") if isinstance(grid, dict) else "ieee33"
    if not isinstance(spec, str):
        return data  # the field's own check says what is wrong
    if spec.endswith(".json") and not Path(spec).is_absolute():
        base = source_dir if source_dir is not None else Path.cwd()
        spec = str((base / spec).resolve())
        data = {**data, "grid": {**(grid if isinstance(grid, dict) else {}), "feeder": spec}}
    lists = []
    for section, key in (("households", "groups"), ("batteries", "groups")):
        groups = data.get(section, {}).get(key) if isinstance(data.get(section), dict) else None
        if isinstance(groups, list):
            for i, group in enumerate(groups):
                if isinstance(group, dict) and "buses" in group:
                    lists.append((section, key, i, group))
    if not lists:
        return data
    try:
        buses = buses_of(spec)
    except FeederError as exc:
        raise ValueError(str(exc)) from None
    data = {**data}
    for section, key, i, group in lists:
        refs = group["buses"]
        if refs == "all":
            numbers: list[Any] = list(buses.load_numbers)
        elif isinstance(refs, str):  # a voltage level: the load buses at it
            try:
                numbers = buses.load_numbers_at(refs)
            except FeederError as exc:
                numbers = [_BadBus(str(exc))]
        elif isinstance(refs, list):
            numbers = []
            for ref in refs:
                if isinstance(ref, bool) or not isinstance(ref, (int, str)):
                    numbers.append(ref)  # the field's own check says what is wrong
                    continue
                try:
                    numbers.append(buses.number_of(ref))
                except FeederError as exc:
                    numbers.append(_BadBus(f"{exc} (got {ref!r})"))
        else:
            continue
        section_data = {**data[section]}
        groups = list(section_data[key])
        groups[i] = {**group, "buses": numbers}
        section_data[key] = groups
        data[section] = section_data
    return data


def _pair(value: Any) -> Any:
    """A scalar means a fixed value: (x, x); a list of two is a [low, high] range."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (value, value)
    return tuple(value) if isinstance(value, list) else value


def _ordered(pair: tuple[float, float]) -> tuple[float, float]:
    if pair[0] > pair[1]:
        raise ValueError(f"expected [low, high] with low <= high, got {list(pair)}")
    return pair


# Every numeric field of a scenario is a finite float within physical bounds, written out as
# ``Annotated[float, Field(ge=low, le=high)]`` (``gt`` where the low end is open) so that static type checkers read
# it as a float; a range ``[low, high]`` (or one number for a fixed value) is a pair of those, ordered.
Duration = Annotated[int, BeforeValidator(parse_duration_s)]
#: a bus's number on the feeder (names and "all" resolved before, by the scenario's own validator)
BusNumber = Annotated[int, BeforeValidator(_bus_ref), Field(ge=1)]
Fraction = Annotated[float, Field(ge=0, le=1)]
FractionRange = Annotated[tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]],
                          BeforeValidator(_pair), AfterValidator(_ordered)]
AnnualKwhRange = Annotated[tuple[Annotated[float, Field(ge=0, le=100_000)], Annotated[float, Field(ge=0, le=100_000)]],
                           BeforeValidator(_pair), AfterValidator(_ordered)]
KwRange = Annotated[tuple[Annotated[float, Field(ge=0, le=10_000)], Annotated[float, Field(ge=0, le=10_000)]],
                    BeforeValidator(_pair), AfterValidator(_ordered)]
PositiveKwRange = Annotated[tuple[Annotated[float, Field(gt=0, le=10_000)], Annotated[float, Field(gt=0, le=10_000)]],
                            BeforeValidator(_pair), AfterValidator(_ordered)]
CopRange = Annotated[tuple[Annotated[float, Field(gt=0, le=10)], Annotated[float, Field(gt=0, le=10)]],
                     BeforeValidator(_pair), AfterValidator(_ordered)]
KwhPerCRange = Annotated[tuple[Annotated[float, Field(gt=0, le=100_000)], Annotated[float, Field(gt=0, le=100_000)]],
                         BeforeValidator(_pair), AfterValidator(_ordered)]
CPerKwRange = Annotated[tuple[Annotated[float, Field(gt=0, le=100)], Annotated[float, Field(gt=0, le=100)]],
                        BeforeValidator(_pair), AfterValidator(_ordered)]
Efficiency = Annotated[float, Field(gt=0, le=1)]
Tilt = Annotated[float, Field(ge=0, le=90)]
Azimuth = Annotated[float, Field(ge=0, le=360)]
Seconds = Annotated[float, Field(ge=0, le=3600)]  #: a simulated delay or period, s
Price = Annotated[float, Field(ge=0, le=100)]  #: currency per kWh (a retail or market price; 100/kWh is far beyond any tariff)
Name = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=64)]


class _Model(BaseModel):
    # allow_inf_nan=False: NaN and ±inf are never a valid scenario number
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


def _data_file(value: str, info: ValidationInfo) -> str:
    """A data file's path, relative to the scenario file's folder, made absolute; it must exist."""
    context = info.context if isinstance(info.context, dict) else {}
    base = context.get("source_dir")
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = (Path(base) if base is not None else Path.cwd()) / path
    try:
        _files.file_kind(path)
    except _files.DataFileError:
        raise ValueError(f"expected a .csv, .csv.gz or .parquet file, got {value[:200]!r}") from None
    if not path.is_file():
        raise ValueError(f"no such file: {str(path)[:300]}")
    return str(path)


def _zone(value: str) -> str:
    if not _files.known_zone(value):
        raise ValueError(f"expected an IANA time zone such as 'UTC', 'Europe/London' or 'Etc/GMT-1', got {value[:60]!r}")
    return value


class DataFile(_Model):
    """A series from the user's CSV or parquet file (see the data guide): times in ``time_column``, values in
    the columns named. Read for the run's whole days only, checked before the run, resampled to the clock."""

    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False, frozen=True)

    #: a .csv, .csv.gz or .parquet file, relative to the scenario file
    file: Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(_data_file)]
    #: the column with the times
    time_column: Annotated[str, Field(min_length=1, max_length=200)] = "time"
    #: the zone of times written without a UTC offset (IANA, daylight saving included); None: the clock's own
    #: (the site's local standard time). Times with an offset are taken as written
    timezone: Annotated[str, AfterValidator(_zone)] | None = None
    #: a row's time is the start of its interval, or its end (as many smart meters write it)
    label: Literal["start", "end"] = "start"

    def zone(self, clock_tz: str) -> str:
        return self.timezone or clock_tz


ColumnName = Annotated[str, Field(min_length=1, max_length=200)]


class HouseholdFile(DataFile):
    """Household load or PV from a file: ``column`` for every household of the group, ``columns`` one per
    household in the group's order, or ``columns = "by_name"``: the column named as the household (``hh_001``)."""

    column: ColumnName | None = None
    columns: Annotated[list[ColumnName], Field(min_length=1, max_length=MAX_HOUSEHOLDS)] | Literal["by_name"] | None = None

    @model_validator(mode="after")
    def _one_way(self) -> HouseholdFile:
        if (self.column is None) == (self.columns is None):
            raise ValueError("give either column (one series for every household of the group) or columns (a list, "
                             "one per household, or \"by_name\")")
        return self

    def column_names(self, households: list[str]) -> list[str]:
        """The file's column for each of ``households`` (the group's names, in order)."""
        if self.column is not None:
            return [self.column] * len(households)
        if self.columns == "by_name":
            return list(households)
        assert isinstance(self.columns, list)
        return list(self.columns)


class LoadFile(HouseholdFile):
    #: kW, W or MW (mean power over the row's interval), or kWh / Wh per step (the energy of each row)
    unit: Literal[tuple(_files.POWER_UNITS)] = "kW"  # type: ignore[valid-type]


class PvFile(HouseholdFile):
    #: as a load's, or kW / W per kWp: every household's output is the column times its array's kWp
    unit: Literal[tuple(_files.PV_UNITS)] = "kW per kWp"  # type: ignore[valid-type]


class PriceFile(DataFile):
    """A price series from a file: each row's price holds over its row."""

    column: ColumnName
    #: currency per MWh or per kWh (the currency is the tariff's)
    unit: Literal[tuple(_files.PRICE_UNITS)] = "per MWh"  # type: ignore[valid-type]
    #: the price of a market interval or clock step: the one in force at its start ("hold"), or the mean of the
    #: rows within it ("mean": e.g. 5-minute dispatch prices settled per half hour)
    rule: Literal["hold", "mean"] = "hold"


class ShapeFile(DataFile):
    """The base load's multiplier from a file (× scale × the case's own loads)."""

    column: ColumnName
    unit: Literal[tuple(_files.SHAPE_UNITS)] = "1"  # type: ignore[valid-type]


class WeatherFile(DataFile):
    """Measured weather: the file's columns for any of ``ghi_w_m2``, ``dni_w_m2``, ``dhi_w_m2`` (W/m²),
    ``temp_air_c`` (°C) and ``wind_speed_m_s`` (m/s at 10 m); those not given come from the bundled site."""

    #: quantity → the file's column, e.g. {ghi_w_m2 = "GHI", temp_air_c = "T2m"}
    columns: Annotated[dict[Literal[_files.WEATHER_COLUMNS], ColumnName], Field(min_length=1)]  # type: ignore[valid-type]


MarketName = Literal[tuple(MARKETS)]  # type: ignore[valid-type]
#: tags of "a bundled name or a file" unions, left out of error key paths
_SOURCE_TAGS = ("bundled", "from_file")


def _source_tag(value: Any) -> str:
    return "bundled" if isinstance(value, str) else "from_file"


#: a group's load or PV: SimBench's own profiles (on a SimBench feeder), or a file
LoadSource = Annotated[Annotated[Literal["simbench"], Tag("bundled")] | Annotated[LoadFile, Tag("from_file")],
                       Discriminator(_source_tag)]
PvSource = Annotated[Annotated[Literal["simbench"], Tag("bundled")] | Annotated[PvFile, Tag("from_file")],
                     Discriminator(_source_tag)]
#: a bundled price series by name, or a file
PriceSource = Annotated[Annotated[MarketName, Tag("bundled")] | Annotated[PriceFile, Tag("from_file")],  # type: ignore[valid-type]
                        Discriminator(_source_tag)]
#: the base load's shape: a built-in one by name, or a file
ShapeSource = Annotated[Annotated[Literal["bdew_h25", "flat", "simbench"], Tag("bundled")]
                        | Annotated[ShapeFile, Tag("from_file")], Discriminator(_source_tag)]


class Clock(_Model):
    """When the run starts (local standard time of the site), how long it lasts, and the step."""

    #: first step, site's local standard time ("2016-06-21" or "2016-06-21T10:00")
    start: Annotated[datetime, BeforeValidator(_to_datetime), AfterValidator(_check_year)] = datetime(2016, 6, 21)
    duration: Duration = 86400  #: seconds, or "6h", "1d", ... (at most one year)
    #: seconds per step, 1 s to an hour, dividing a day; every simulator steps and the grid solves every step
    step_s: Annotated[int, Field(ge=1, le=3600)] = 60

    @model_validator(mode="after")
    def _whole_steps(self) -> Clock:
        if 86400 % self.step_s:
            raise ValueError(f"step_s ({self.step_s}) must divide a day (86,400 s), e.g. 1, 10, 30, 60, 300, 900, 3600")
        if self.duration % self.step_s:
            raise ValueError(f"duration ({self.duration} s) must be a whole number of steps of {self.step_s} s")
        return self


class SiteConfig(_Model):
    #: bundled weather: Greensboro NC TMY3 (NSRDB), or proxies for Brisbane and Great Britain
    weather: Literal[tuple(SITES)] = "greensboro_tmy3"  # type: ignore[valid-type]
    #: measured weather from a file; the quantities it gives replace the bundled site's (PV then uses the
    #: measured irradiance at the clock's resolution)
    file: WeatherFile | None = None
    latitude: Annotated[float, Field(ge=-90, le=90)] | None = None  #: degrees north; None: the bundled site's
    longitude: Annotated[float, Field(ge=-180, le=180)] | None = None  #: degrees east; None: the bundled site's
    altitude_m: Annotated[float, Field(ge=-500, le=9000)] | None = None  #: m; None: the bundled site's
    #: the clock's zone, without daylight saving (e.g. "Etc/GMT-1" for UTC+1); None: the bundled site's
    tz: Annotated[str, AfterValidator(_zone)] | None = None

    @model_validator(mode="after")
    def _fixed_offset(self) -> SiteConfig:
        if self.tz is not None and not _files.fixed_offset(self.tz):
            raise ValueError(f"tz: {self.tz!r} has daylight saving; the clock runs in standard time (e.g. "
                             f"'Etc/GMT-1' for UTC+1, 'UTC'); data files keep their own timezone")
        return self


class BaseLoad(_Model):
    """The case's own load at every bus: ``scale`` × case load × ``shape`` (daily, max 1)."""

    #: multiplier of the case's own bus loads (IEEE-33: 3.715 MW, 2.3 Mvar in total)
    scale: Annotated[float, Field(ge=0, le=10)] = 1.0
    #: shape of the base load: BDEW H0 household profile (daily, max 1), flat, a multiplier from a file, or
    #: "simbench": every case load's own SimBench 2016 profile (a SimBench feeder)
    shape: ShapeSource = "bdew_h25"


class GridConfig(_Model):
    #: the network solved every step: "ieee33" (Baran & Wu 1989), a pandapower network's function name, a
    #: SimBench code or a pandapower JSON file (relative to the scenario file); see the feeder guide
    feeder: Annotated[str, Field(min_length=1, max_length=500)] = "ieee33"
    #: AC power flow: "fast" = lightsim2grid's Newton-Raphson on the same net; "pandapower" = runpp
    engine: Literal["fast", "pandapower"] = "fast"
    #: lower voltage limit, pu (minutes outside are counted, plotted and validated)
    v_min_pu: Annotated[float, Field(ge=0.5, le=1.0)] = 0.90
    #: upper voltage limit, pu
    v_max_pu: Annotated[float, Field(ge=1.0, le=1.5)] = 1.10
    line_max_i_ka: Annotated[float, Field(gt=0, le=10)] | None = None  #: thermal rating of every line, kA
    base_load: BaseLoad = BaseLoad()

    @model_validator(mode="after")
    def _limits(self) -> GridConfig:
        if self.v_min_pu >= self.v_max_pu:
            raise ValueError(f"v_min_pu ({self.v_min_pu}) must be below v_max_pu ({self.v_max_pu})")
        return self


class HouseholdGroup(_Model):
    """``per_bus`` households at each of ``buses``; parameters drawn uniformly from [low, high]."""

    #: prefix of the households' names (<name>_<bus>_<k>)
    name: Name = "hh"
    #: feeder buses by number (IEEE-33: 1..33) or by the net's bus name, "all" (the buses that carry a load in
    #: the case) or a voltage level ("0.4kV": the load buses at it)
    buses: Annotated[list[BusNumber], Field(min_length=1, max_length=MAX_BUSES)]
    #: households at each bus
    per_bus: Annotated[int, Field(ge=1, le=MAX_HOUSEHOLDS)] = 1
    annual_kwh: AnnualKwhRange = (2500.0, 5000.0)  #: per home, kWh/year
    #: load power factor (lagging)
    power_factor: Annotated[float, Field(ge=0.5, le=1)] = 0.95
    pv_share: Fraction = 0.5  #: fraction of the group with PV
    #: PV peak power drawn per household, kWp [low, high]
    pv_kwp: KwRange = (3.0, 6.0)
    #: fraction of the group with a wind turbine instead (drawn among those without PV; pv_share + wind_share ≤ 1)
    wind_share: Fraction = 0.0
    wind_kw: KwRange = (2.0, 6.0)  #: rated power of a turbine, kW
    wind_hub_height_m: Annotated[float, Field(ge=2, le=200)] = 15.0  #: hub height, m (the weather's wind is measured at 10 m)
    #: PV tilt, degrees from horizontal [low, high]
    pv_tilt_deg: Annotated[tuple[Tilt, Tilt], BeforeValidator(_pair), AfterValidator(_ordered)] = (15.0, 35.0)
    #: PV azimuth, degrees clockwise from north [low, high]
    pv_azimuth_deg: Annotated[tuple[Azimuth, Azimuth], BeforeValidator(_pair),
                              AfterValidator(_ordered)] = (135.0, 225.0)
    #: homes behind each household entity (a community: their summed load)
    aggregate: Annotated[int, Field(ge=1, le=MAX_HOMES)] = 1
    hvac_share: Fraction = 0.0  #: fraction of the group with HVAC (Ratnam et al. 2023 eq. 5 thermal model)
    #: what the HVAC does when on
    #: the group's households replace the case's own loads at their buses (a feeder whose loads are households:
    #: SimBench LV, Kerber, Dickert), so no load is counted twice; the case's load elsewhere stays
    replaces_case_loads: bool = False
    hvac_mode: Literal["cooling", "heating"] = "cooling"
    hvac_p_max_kw: PositiveKwRange = (2.0, 3.5)  #: electric power when on, kW
    hvac_cop: CopRange = (2.5, 3.5)  #: thermal kW per electric kW
    hvac_c_kwh_per_c: KwhPerCRange = (3.0, 6.0)  #: thermal capacitance, kWh/°C
    hvac_r_c_per_kw: CPerKwRange = (2.0, 4.0)  #: thermal resistance, °C/kW
    t_set_c: Annotated[float, Field(ge=5, le=35)] = 24.0  #: thermostat setpoint, °C
    comfort_band_c: Annotated[float, Field(gt=0, le=10)] = 2.0  #: thermostat / comfort band width around t_set_c, °C
    #: the group's load from a file, or "simbench": the SimBench profile of the case's loads at each household's
    #: bus (on a SimBench feeder), instead of BDEW profiles (annual_kwh then unused)
    load: LoadSource | None = None
    #: the group's PV output from a file, or "simbench": SimBench's PV profile at the bus, instead of the weather
    #: model (households without PV stay at 0)
    pv: PvSource | None = None

    @model_validator(mode="after")
    def _shares(self) -> HouseholdGroup:
        if self.pv_share + self.wind_share > 1.0 + 1e-12:
            raise ValueError(f"pv_share ({self.pv_share}) + wind_share ({self.wind_share}) must be at most 1: "
                             f"a household has PV or a wind turbine")
        n = len(self.buses) * self.per_bus
        for key, spec in (("load", self.load), ("pv", self.pv)):
            if isinstance(spec, HouseholdFile) and isinstance(spec.columns, list) and len(spec.columns) != n:
                raise ValueError(f"{key}.columns: {len(spec.columns)} columns for the group's {n} households "
                                 f"(buses × per_bus); give one per household, or column for them all")
        return self


class Households(_Model):
    groups: list[HouseholdGroup] = []  #: names unique (checked with the whole scenario, which names the key)


class BatteryGroup(_Model):
    """Batteries on households (``at = "households"``) or directly on buses (``at = "buses"``)."""

    #: prefix of the batteries' names
    name: Name = "bat"
    #: on households (behind their meter) or directly on buses
    at: Literal["households", "buses"] = "households"
    households: Literal["with_pv", "all"] = "with_pv"  #: which households of ``household_group`` get one
    household_group: Name | None = None  #: restrict to one household group (None = every group)
    buses: Annotated[list[BusNumber], Field(max_length=MAX_BUSES)] = []  #: for at = "buses": one battery per bus (numbers or names)
    #: usable energy, kWh
    capacity_kwh: Annotated[float, Field(gt=0, le=100_000)] = 10.3
    #: charging power limit, kW
    p_charge_max_kw: Annotated[float, Field(gt=0, le=100_000)] = 5.3
    #: discharging power limit, kW
    p_discharge_max_kw: Annotated[float, Field(gt=0, le=100_000)] = 5.3
    #: charging efficiency (stored = η × drawn)
    eta_charge: Efficiency = 0.9
    #: discharging efficiency (delivered = η × taken)
    eta_discharge: Efficiency = 0.9
    #: lowest state of charge the PMS allows, fraction of capacity
    soc_min_frac: Fraction = 0.0
    #: highest state of charge the PMS allows, fraction of capacity
    soc_max_frac: Fraction = 1.0
    self_discharge_per_h: Annotated[float, Field(ge=0, lt=1)] = 0.0  #: fraction of stored energy lost per hour
    soc_init_frac: FractionRange = (0.51, 0.51)  #: fixed, or [low, high] drawn per battery
    soc_init_dist: Literal["uniform", "truncnorm"] = "uniform"  #: truncnorm: mean mid-range, sd range/4, cut to it
    default_mode: Literal["idle", "follow_residual"] = "idle"  #: what the PMS does without a controller

    @model_validator(mode="after")
    def _consistent(self) -> BatteryGroup:
        if self.soc_min_frac >= self.soc_max_frac:
            raise ValueError(f"soc_min_frac ({self.soc_min_frac}) must be below soc_max_frac ({self.soc_max_frac})")
        if self.at == "buses" and not self.buses:
            raise ValueError("at = 'buses' needs a non-empty 'buses' list")
        return self


class Batteries(_Model):
    pms_cycle_s: Annotated[float, Field(ge=0.1, le=60)] = 1.0  #: PMS cycle inside each step (it must divide the step), s
    subminute_sigma_kw: Annotated[float, Field(ge=0, le=100)] = 0.0  #: sub-minute residual fluctuation (0 = off), kW
    subminute_tau_s: Annotated[float, Field(gt=0, le=3600)] = 10.0  #: its correlation time, s
    groups: list[BatteryGroup] = []



class HemsConfig(_Model):
    """The household energy-management controller, one instance per household it applies to."""

    #: registered name, "module:Class" or "file.py:Class" (relative to this file)
    controller: Annotated[str, Field(min_length=1, max_length=500)] | None = None
    params: dict[str, Any] = {}  #: passed to the controller's constructor; checked against its ``Params`` if any
    #: households the controller runs for
    applies_to: Literal["with_battery", "with_hvac", "all"] = "with_battery"
    #: wall-clock budget of one controller call, s; an overrun is reported by controller and household (None: none)
    step_timeout_s: Annotated[float, Field(gt=0, le=3600)] | None = None
    #: a controller that raises, exits or returns a non-finite or out-of-range setpoint: "fallback" counts the fault
    #: per household and applies the rule-based action (follow the residual) for that step; "stop" ends the run
    on_fault: Literal["fallback", "stop"] = "stop"
    #: threads for controllers that declare ``thread_safe = True`` (the MPC); 0 = one per core; the numbers do not
    #: depend on it
    threads: Annotated[int, Field(ge=0, le=256)] = 0
    #: step the due households of a controller class with ``step_many`` (the MPC) in one call per minute, their QPs
    #: solved together; false: one household after another (the same numbers, slower; for checking)
    batch: bool = True


LocalTime = Annotated[time, BeforeValidator(_to_time)]


class TouPeriodConfig(_Model):
    #: local time the period starts ("16:00")
    start: LocalTime
    #: local time it ends (exclusive; may wrap past midnight)
    end: LocalTime
    #: import price within the period, currency/kWh
    import_per_kwh: Price


class AgileConfig(_Model):
    """Agile Octopus (dynamic UK import tariff): min(multiplier × day-ahead + peak adder 16–19 h, cap) × (1 + VAT)."""

    #: the day-ahead series the tariff follows (bundled name or a file)
    market: PriceSource = "gb_n2ex"
    #: × day-ahead price
    multiplier: Annotated[float, Field(ge=0, le=10)] = 2.2
    #: added 16:00–19:00, currency/kWh
    peak_adder_per_kwh: Price = 0.12
    #: price cap before VAT, currency/kWh
    cap_per_kwh: Price = 0.35
    #: VAT rate
    vat: Annotated[float, Field(ge=0, le=1)] = 0.05


class TariffConfig(_Model):
    """Retail tariff for household bills. Defaults: the bundled flat GB 2016 tariff."""

    #: "fixed": import_per_kwh with optional tou periods; "agile_octopus": dynamic, from the day-ahead price
    kind: Literal["fixed", "agile_octopus"] = "fixed"
    agile: AgileConfig = AgileConfig()

    #: ISO 4217 code of every price and bill
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "GBP"
    #: retail import price, currency/kWh (fixed tariff; outside tou periods)
    import_per_kwh: Price = 0.15
    #: export (feed-in) price, currency/kWh
    export_per_kwh: Price = 0.05
    tou: Annotated[list[TouPeriodConfig], Field(max_length=96)] = []
    #: two-part tariff: price per kW of each day's peak demand (0 = none), currency/kW/day
    peak_demand_per_kw: Annotated[float, Field(ge=0, le=1000)] = 0.0
    #: the demand of the peak charge is the mean import over intervals of this length, s (the planner's hour)
    demand_interval_s: Literal[60, 300, 900, 1800, 3600] = 3600


class LatencyConfig(_Model):
    """One-way message latency, s: constant ``a``; uniform ``a``..``b``; lognormal median ``a``, log-sd ``b``."""

    #: the latency's distribution
    kind: Literal["constant", "uniform", "lognormal"] = "constant"
    #: constant value, uniform low, or lognormal median, s
    a: Seconds = 0.0
    #: uniform high, or lognormal log-sd
    b: Seconds = 0.0

    @model_validator(mode="after")
    def _shape(self) -> LatencyConfig:
        if self.kind == "uniform" and self.b < self.a:
            raise ValueError(f"uniform latency needs b >= a, got a = {self.a}, b = {self.b}")
        if self.kind == "lognormal" and self.b > 5:
            raise ValueError(f"lognormal latency: b is the log-sd, expected at most 5, got {self.b}")
        return self


class AdmmConfig(_Model):
    """ADMM between the communities and the grid operator; see ``planning/admm/engine.py``.

    Every key is a field of the engine's ``ADMMSettings`` and reaches it
    unchanged (``scenarios.planner_case.admm_settings``). The defaults here
    are those of the value-stacking plan (ρ and ε in kW of community
    exchange); the engine's own defaults are for unit-scaled problems.
    """

    #: synchronous, synchronous with a naive deadline, or asynchronous (partial barrier, bounded delay)
    mode: Literal["sync", "sync_naive", "async"] = "sync"
    rho: Annotated[float, Field(gt=0, le=1e6)] = 0.01  #: penalty, currency per kW² (per hour of the exchanged vector)
    eps_abs: Annotated[float, Field(gt=0, le=1000)] = 0.01  #: ε of both residuals, per element (kW); the paper's ε1 = ε2
    eps_rel: Annotated[float, Field(ge=0, le=1)] = 0.0  #: relative part (Boyd et al.), 0 = absolute only
    #: ε_abs bounds each element of the residual ("per_element", Boyd et al.) or its whole norm ("whole")
    eps_reading: Literal["per_element", "whole"] = "per_element"
    #: iteration cap (the plan of the last iterate is used, and flagged, if reached)
    max_iter: Annotated[int, Field(ge=1, le=100_000)] = 500
    partial_barrier: Annotated[int, Field(ge=1)] | None = None  #: S of N (async); None = all
    max_delay: Annotated[int, Field(ge=1, le=10_000)] = 1  #: τ, iterations (async)
    deadline_s: Annotated[float, Field(gt=0, le=3600)] = 1.0  #: sync_naive: how long the operator waits per iteration, s
    #: a community resends its last message after this long without a reply, s
    resend_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    compute_s: Seconds = 0.0  #: simulated time a community needs per subproblem, s
    latency: LatencyConfig = LatencyConfig()
    #: probability that a message is lost (seeded)
    loss_prob: Annotated[float, Field(ge=0, le=0.9)] = 0.0
    #: residual balancing of ρ (Boyd et al. 2011, 3.4.1)
    adaptive: bool = False
    #: adaptive ρ: multiply or divide by this
    factor: Annotated[float, Field(gt=1, le=100)] = 2.0
    #: adaptive ρ: when one residual exceeds the other by this ratio
    ratio: Annotated[float, Field(gt=1, le=1e6)] = 10.0
    #: adaptive ρ: iterations the imbalance must last before ρ changes
    hysteresis: Annotated[int, Field(ge=1, le=10_000)] = 1
    #: adaptive ρ: no change after this many iterations
    freeze_after: Annotated[int, Field(ge=1, le=100_000)] = 100
    balance: Literal["relative", "absolute"] = "relative"  #: residual balancing on scaled (default) or raw residuals
    dual_residual: Literal["change", "boyd"] = "change"  #: stop on ‖z − z_prev‖ ≤ ε (kW), or Boyd's ρ‖z − z_prev‖


class StreamsConfig(_Model):
    b2b: bool = True  #: battery to building
    b2g: bool = True  #: battery to grid (spot price)
    trading: bool = True  #: local market between communities


class PlannerConfig(_Model):
    """Community-battery value stacking (Jiang & Wang 2024): an ADMM plan each day handed to batteries and HVAC."""

    #: the planner (only community-battery value stacking so far)
    kind: Literal["value_stacking"] = "value_stacking"
    communities: str  #: household group whose entities are the communities (use ``aggregate``)
    batteries: str  #: battery group (at = "buses") with one battery on each community's bus
    #: wholesale price series the batteries trade with the grid at
    b2g_market: PriceSource = "nem_qld"
    replan: Literal["daily", "hourly"] = "daily"  #: hourly: re-plan every hour to the end of the day
    #: charge/discharge exclusivity: LP relaxation or MILP (HiGHS)
    binaries: Literal["relaxed", "mixed_integer"] = "relaxed"
    central: bool = True  #: also solve the centralised problem and report the ADMM's cost gap
    degradation_per_kw2h: Annotated[float, Field(ge=0, le=10)] = 1e-4  #: α_b, currency per kW² per hour
    trade_penalty_per_kwh: Price = 1e-3  #: the relaxation's small penalty on local buy and sell
    discomfort_per_c2: Annotated[float, Field(ge=0, le=1000)] = 0.0  #: β (off by default: the paper leaves it out of its objective)
    p_et_max_kw: Annotated[float, Field(ge=0, le=100_000)] = 100.0  #: local-market buy/sell limit per community
    #: limit of the feeder-head exchange, kW
    p_grid_max_kw: Annotated[float, Field(gt=0, le=100_000)] = 1000.0
    v_margin_pu: Annotated[float, Field(ge=0, lt=0.1)] = 0.0  #: the operator plans within [v_min + m, v_max − m]
    streams: StreamsConfig = StreamsConfig()
    admm: AdmmConfig = AdmmConfig()


class MarketForecastConfig(_Model):
    """The aggregator's day-ahead forecast of the fleet's demand and production (prices are known day-ahead)."""

    #: noisy (seeded relative error) or perfect
    kind: Literal["noisy", "perfect"] = "noisy"
    accuracy: Fraction = 0.25  #: relative error (standard deviation) at each forecast point
    step_min: Annotated[int, Field(ge=1, le=1440)] = 120  #: minutes between forecast points (interpolated between)


class MarketConfig(_Model):
    """A day-ahead aggregator for the fleet on the wholesale market (Couraud et al. 2022, phases 1–2)."""

    #: day-ahead price series the fleet's export is sold at (bundled, see the data page)
    wholesale: PriceSource = "gb_n2ex"
    #: price series imbalance is settled at (bundled name or a file)
    imbalance: PriceSource = "gb_ssp"
    interval_s: Annotated[int, Field(ge=300, le=86400)] = 1800  #: market interval; must divide a day
    bid_limit_per_kwh: Annotated[float, Field(ge=-100, le=100)] = 0.0  #: bid only where the forecast price is above this
    clearing_limit_per_kwh: Annotated[float, Field(ge=-100, le=100)] | None = None  #: None: every bid accepted
    #: price_taker: paid the market price; price_maker: the fleet's export E moves it to π − k E
    clearing: Literal["price_taker", "price_maker"] = "price_taker"
    #: k of the linear residual-demand curve (currency/kWh per kWh exported in an interval), price_maker only. At
    #: most 1e-3: 1 MWh more export would lower the price by 1 per kWh, ten times the bundled prices' range
    residual_demand_slope: Annotated[float, Field(ge=0, le=1e-3)] = 0.0
    imbalance_rule: Literal["absolute", "gb_single_price"] = "absolute"  #: |X − E_c| × price, or (E_c − X) × price
    #: where imbalance is charged: in the intervals with a commitment (the authors' code) or in every interval
    imbalance_where: Literal["committed", "every_interval"] = "committed"
    vpw_share: Fraction = 0.48  #: virtual private wire: share of the import price for fleet-covered energy
    #: household groups that are the aggregator's own plants (not billed; their export is the portfolio's)
    central_groups: list[Name] = []
    #: household groups in the aggregator's portfolio (their meters count towards delivery; billed with the
    #: virtual private wire); None: every group that is not central. [] : the households are outside it
    portfolio_groups: list[Name] | None = None
    forecast: MarketForecastConfig = MarketForecastConfig()

    @model_validator(mode="after")
    def _clearing(self) -> MarketConfig:
        if self.clearing == "price_maker" and self.residual_demand_slope <= 0:
            raise ValueError("clearing = 'price_maker' needs residual_demand_slope > 0 (currency/kWh per kWh, "
                             "e.g. 5e-5: 5 p/kWh lower for 1,000 kWh exported in an interval)")
        if self.clearing == "price_taker" and self.residual_demand_slope != 0:
            raise ValueError("residual_demand_slope is used only with clearing = 'price_maker'")
        return self

    @model_validator(mode="after")
    def _interval(self) -> MarketConfig:
        if 86400 % self.interval_s or self.interval_s % 60:
            raise ValueError(f"interval_s ({self.interval_s}) must be whole minutes and divide a day "
                             f"(e.g. 900, 1800, 3600)")
        return self


class ContractConfig(_Model):
    """The smart contract that coordinates the fleet inside each market interval (Couraud et al. 2022, III-B)."""

    engine: Literal["python", "evm"] = "python"  #: "evm": the Vyper contract on an in-process py-evm chain
    evm_fork: Literal["istanbul", "prague"] = "prague"  #: gas rules: Istanbul (the paper's era) or Prague (today)
    evm_mode: Literal["per_household", "batched"] = "batched"  #: a transaction per household, or one per round
    interval_s: Annotated[int, Field(ge=60, le=900)] = 300  #: t_sc, a round every this many seconds
    window_s: Annotated[float, Field(gt=0, le=60)] = 10.0  #: a round closes this long after the reports are sent, s
    latency: LatencyConfig = LatencyConfig()  #: one-way, per message
    #: probability that a report or reply is lost (seeded); a lost message is counted
    loss_prob: Annotated[float, Field(ge=0, le=0.9)] = 0.0
    #: eq. (11) of Couraud et al. 2022: a battery shares the export if it exported since its last report "or" (the
    #: authors' code) / "and" (the paper's text) its SoC is at or above the target
    w_export_rule: Literal["or", "and"] = "or"
    #: RE^{t,A} subtracts the expected remaining export of the meters without a battery (plants, homes without
    #: one): their last round's export times the rounds left in the interval
    anticipate_meters: bool = True
    #: send RE in intervals with nothing committed too (before this reading: every home then imported to cancel the
    #: plants' export; a central battery covered the homes' night demand the plan gave it)
    target_without_commitment: bool = False

    @model_validator(mode="after")
    def _whole_minutes(self) -> ContractConfig:
        if self.interval_s % 60:
            raise ValueError(f"interval_s ({self.interval_s}) must be whole minutes")
        return self


class InverterConfig(_Model):
    """The households' PV inverters: curtailment and reactive power from the bus voltage of the previous power
    flow (IEEE Std 1547-2018 Volt-VAr and Volt-Watt), within each inverter's rating. "unity": the PV at unity
    power factor, never curtailed (the default; what every run did before)."""

    #: "unity", "fixed_pf", "volt_var", "volt_watt" or "volt_var_watt"
    mode: Literal["unity", "fixed_pf", "volt_var", "volt_watt", "volt_var_watt"] = "unity"
    #: inverter rating, kVA per kWp of the array (1.0-1.2 leaves room for reactive power at full output)
    s_per_kwp: Annotated[float, Field(ge=0.5, le=3.0)] = 1.1
    #: fixed_pf: the power factor
    pf: Annotated[float, Field(ge=0.5, le=1.0)] = 0.95
    #: fixed_pf: absorb reactive power (lowers the voltage) rather than inject it
    pf_absorbing: bool = True
    #: Volt-VAr curve: voltages, pu (increasing), and reactive power as a fraction of the rating (+ = injected);
    #: IEEE 1547-2018 Category B default
    volt_var_v_pu: Annotated[list[Annotated[float, Field(ge=0.5, le=1.5)]], Field(min_length=2, max_length=8)] = \
        [0.92, 0.98, 1.02, 1.08]
    volt_var_q_frac: Annotated[list[Annotated[float, Field(ge=-1, le=1)]], Field(min_length=2, max_length=8)] = \
        [0.44, 0.0, 0.0, -0.44]
    #: Volt-Watt curve: voltages, pu (increasing), and the active-power cap as a fraction of the rating
    volt_watt_v_pu: Annotated[list[Annotated[float, Field(ge=0.5, le=1.5)]], Field(min_length=2, max_length=8)] = \
        [1.06, 1.10]
    volt_watt_p_frac: Annotated[list[Annotated[float, Field(ge=0, le=1)]], Field(min_length=2, max_length=8)] = \
        [1.0, 0.2]
    #: share of the gap to the Volt-VAr / Volt-Watt curve closed each step (1 = at once; below 1 damps the swing a
    #: once-a-step voltage reading would otherwise cause, as OpenDSS's DeltaQ_factor)
    delta_factor: Annotated[float, Field(gt=0, le=1)] = 0.3

    @model_validator(mode="after")
    def _curves(self) -> InverterConfig:
        for name, v, y in (("volt_var", self.volt_var_v_pu, self.volt_var_q_frac),
                           ("volt_watt", self.volt_watt_v_pu, self.volt_watt_p_frac)):
            if len(v) != len(y):
                raise ValueError(f"{name}_v_pu and {name}_{'q' if name == 'volt_var' else 'p'}_frac need the same "
                                 f"number of points (got {len(v)} and {len(y)})")
            if any(b <= a for a, b in zip(v, v[1:])):
                raise ValueError(f"{name}_v_pu must increase (got {v})")
        return self


class RecorderConfig(_Model):
    flush_every_s: Annotated[int, Field(ge=60, le=86_400)] = 3600  #: write a row group this often (simulated s)


def _port(placement: str) -> str:
    if placement.startswith("connect:"):
        port = int(placement.rpartition(":")[2])
        if not 1 <= port <= 65535:
            raise ValueError(f"expected a port 1..65535 in connect:HOST:PORT, got {port}")
    return placement


#: where a simulator runs: in this process, in a subprocess mosaik starts, or on a host served at HOST:PORT
Placement = Annotated[str, Field(pattern=r"^(inprocess|subprocess|connect:[A-Za-z0-9_.\-]+:[0-9]{1,5})$"),
                      AfterValidator(_port)]
class ProcessesConfig(_Model):
    """Where each simulator runs ("inprocess", "subprocess" or "connect:HOST:PORT" of ``dercosim serve``).

    Their init and create arguments travel as JSON through mosaik's protocol
    (profiles as lists). The recorder (it writes the run folder) and the
    value-stacking planner stay in-process.
    """

    #: where the simulator runs: "inprocess", "subprocess" or "connect:HOST:PORT" (dercosim serve)
    grid: Placement = "inprocess"
    #: as grid
    households: Placement = "inprocess"
    #: as grid
    batteries: Placement = "inprocess"
    #: as grid
    controllers: Placement = "inprocess"
    #: as grid
    market: Placement = "inprocess"
    #: as grid
    contract: Placement = "inprocess"
    #: how long mosaik waits for a simulator in another process to start or stop, s (mosaik's own default,
    #: 10 s, is too short on a busy host)
    start_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 120.0


class Scenario(_Model):
    #: the run's name: run folders are runs/<name>-<timestamp>/
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)]
    #: one line shown by dercosim list
    description: Annotated[str, Field(max_length=2000)] = ""
    #: every random draw (fleet, profiles, forecasts, latencies) derives from it, keyed by purpose and day
    seed: Annotated[int, Field(ge=0, le=2 ** 63 - 1)] = 0
    clock: Clock = Clock()
    site: SiteConfig = SiteConfig()
    grid: GridConfig = GridConfig()
    households: Households = Households()
    batteries: Batteries = Batteries()
    hems: HemsConfig = HemsConfig()
    tariff: TariffConfig = TariffConfig()
    planner: PlannerConfig | None = None
    market: MarketConfig | None = None
    contract: ContractConfig | None = None
    inverters: InverterConfig = InverterConfig()
    recorder: RecorderConfig = RecorderConfig()
    processes: ProcessesConfig = ProcessesConfig()
    _source_dir: Path | None = PrivateAttr(default=None)
    #: the scenario (as JSON) that :func:`~dercosim.scenarios.load.check_scenario` passed, so a run need not check it again
    _checked_as: str | None = PrivateAttr(default=None)

    @property
    def checked(self) -> bool:
        """Whether :func:`~dercosim.scenarios.load.check_scenario` passed on this scenario as it is now (not a modified copy)."""
        return self._checked_as is not None and self._checked_as == self.model_dump_json()

    @property
    def n_steps(self) -> int:
        return self.clock.duration // self.clock.step_s

    def set(self, key: str, value: Any) -> Scenario:
        """Set one key and validate the whole scenario again, as a file is; returns the scenario (changed in
        place), so calls chain: ``sc.set("contract.engine", "evm").set("seed", 3)``.

        ``key`` is a key path as the error messages and ``dercosim run --set`` write it (``"contract.interval_s"``,
        ``"batteries.groups[0].capacity_kwh"``); a missing section is created with its defaults. A wrong key or
        value raises :class:`ScenarioError` naming the key path, and leaves the scenario as it was.
        """
        from dercosim.scenarios.load import check_scenario
        from dercosim.studies.sweep import set_path

        where = f"{self.name} (set {key} = {value!r})"
        try:
            data = set_path(self.model_dump(mode="python", exclude_none=True), key, value)
        except (ScenarioError, ValueError, TypeError) as exc:
            raise ScenarioError(f"{where}: {exc}") from None
        try:
            new = Scenario.model_validate(data, context={"source_dir": self._source_dir})
        except ValidationError as exc:
            raise ScenarioError(format_validation_error(where, exc)) from None
        new._source_dir = self._source_dir
        check_scenario(new, where)
        for name in type(self).model_fields:
            object.__setattr__(self, name, getattr(new, name))
        object.__setattr__(self, "__pydantic_fields_set__", new.__pydantic_fields_set__)
        self._checked_as = self.model_dump_json()  # check_scenario passed on exactly this
        return self

    @property
    def source_dir(self) -> Path:
        """Folder of the scenario file (for controllers given as "file.py:Class"); cwd if none."""
        return self._source_dir or Path.cwd()

    @model_validator(mode="before")
    @classmethod
    def _buses(cls, data: Any, info: ValidationInfo) -> Any:
        """Bus names and "all" become numbers on the scenario's feeder (:func:`resolve_buses`)."""
        context = info.context if isinstance(info.context, dict) else {}
        return resolve_buses(data, context.get("source_dir"))

    @model_validator(mode="after")
    def _size(self) -> Scenario:
        n_households = sum(len(g.buses) * g.per_bus for g in self.households.groups)
        n_homes = sum(len(g.buses) * g.per_bus * g.aggregate for g in self.households.groups)
        if n_households > MAX_HOUSEHOLDS:
            raise ValueError(f"households.groups: {n_households} households (buses × per_bus); dercosim holds at "
                             f"most {MAX_HOUSEHOLDS} per run")
        if n_homes > MAX_HOMES:
            raise ValueError(f"households.groups: {n_homes} homes (buses × per_bus × aggregate); dercosim draws at "
                             f"most {MAX_HOMES} load profiles per run")
        days = -(-self.clock.duration // 86400) + 1  # profiles are drawn on whole calendar days
        # minute profiles, or the clock's own steps where they are finer
        per_day = max(86400 // self.clock.step_s, 1440)
        profile_bytes = 8 * per_day * days * (2 * n_households + n_homes)
        if profile_bytes > MAX_PROFILE_BYTES:
            raise ValueError(f"clock.duration: {n_households} households over {days} days need about "
                             f"{profile_bytes / 1024 ** 3:.1f} GB of minute profiles; at most "
                             f"{MAX_PROFILE_BYTES / 1024 ** 3:.0f} GB (shorten the run or the fleet)")
        return self

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        names_seen: set[str] = set()
        for k, g in enumerate(self.households.groups):
            if g.name in names_seen:
                raise ValueError(f"households.groups[{k}].name: {g.name!r} is used twice; group names must be unique")
            names_seen.add(g.name)
        groups = {g.name for g in self.households.groups}
        for i, b in enumerate(self.batteries.groups):
            if b.at == "households" and b.household_group is not None and b.household_group not in groups:
                raise ValueError(f"batteries.groups[{i}].household_group: no household group "
                                 f"{b.household_group!r} (groups: {', '.join(sorted(groups)) or 'none'})")
        if self.contract is not None:
            if self.market is None:
                raise ValueError("contract: the smart contract coordinates market commitments; add [market]")
            if self.market.interval_s % self.contract.interval_s:
                raise ValueError(f"contract.interval_s ({self.contract.interval_s}) must divide the market "
                                 f"interval ({self.market.interval_s})")
            lat = self.contract.latency
            typical = lat.a  # constant; the shortest of uniform; the median of lognormal
            if typical >= self.market.interval_s:
                raise ValueError(f"contract.latency: a report takes {typical:g} s or more to arrive, not less than "
                                 f"the market interval ({self.market.interval_s} s): no report would count in its "
                                 f"interval")
        from dercosim.grids.feeders import SIMBENCH_CODE

        for k, g in enumerate(self.households.groups):
            for part in ("load", "pv"):
                if getattr(g, part) == "simbench" and not SIMBENCH_CODE.match(self.grid.feeder):
                    raise ValueError(f"households.groups[{k}].{part}: 'simbench' takes the profiles of a SimBench "
                                     f"feeder; grid.feeder is {self.grid.feeder!r} (e.g. '1-LV-rural1--0-sw')")
        if self.grid.base_load.shape == "simbench":
            if not SIMBENCH_CODE.match(self.grid.feeder):
                raise ValueError(f"grid.base_load.shape: 'simbench' takes the profiles of a SimBench feeder; "
                                 f"grid.feeder is {self.grid.feeder!r} (e.g. '1-MV-rural--0-sw')")
            if self.planner is not None:
                raise ValueError("grid.base_load.shape: the planner plans with one shape for the whole base load; "
                                 "'simbench' gives every bus its own (use 'bdew_h25', 'flat' or a file)")
        step = self.clock.step_s
        cycles = step / self.batteries.pms_cycle_s
        if abs(cycles - round(cycles)) > 1e-9 or round(cycles) < 1:
            raise ValueError(f"batteries.pms_cycle_s: {self.batteries.pms_cycle_s} s must divide the clock's step "
                             f"({step} s): the PMS cycles inside every step")
        multiples: list[tuple[str, int]] = ([("tariff.demand_interval_s", self.tariff.demand_interval_s)]
                     if self.tariff.peak_demand_per_kw > 0 else [])
        if self.market is not None:
            multiples.append(("market.interval_s", self.market.interval_s))
        if self.contract is not None:
            multiples.append(("contract.interval_s", self.contract.interval_s))
        if self.planner is not None:
            multiples.append(("planner (its hourly plan)", 3600))
        for key, value in multiples:
            if value % step:
                raise ValueError(f"{key}: {value} s is not a whole number of the clock's steps ({step} s); choose "
                                 f"clock.step_s dividing it")
        start = self.clock.start
        into_day = start.hour * 3600 + start.minute * 60 + start.second
        if into_day % self.clock.step_s or start.microsecond:
            raise ValueError(f"clock.start: {start.isoformat()} must be a whole number of steps "
                             f"({self.clock.step_s} s) after midnight")
        if self.market is not None:
            if into_day % self.market.interval_s:
                raise ValueError(f"clock.start: {start:%H:%M} is not on the market interval's grid (every "
                                 f"{self.market.interval_s} s from midnight): the market would settle intervals "
                                 f"the aggregator did not plan")
        if self.market is not None:
            for key in ("central_groups", "portfolio_groups"):
                listed = getattr(self.market, key) or []
                if len(set(listed)) != len(listed):
                    raise ValueError(f"market.{key}: a group is named twice ({listed}); names must be unique")
                for k, g in enumerate(listed):
                    if g not in groups:
                        raise ValueError(f"market.{key}[{k}]: no household group {g!r} "
                                         f"(groups: {', '.join(sorted(groups)) or 'none'})")
                    if key == "portfolio_groups" and g in self.market.central_groups:
                        raise ValueError(f"market.portfolio_groups[{k}]: {g!r} is a central group (the "
                                         f"aggregator's own plants are always in the portfolio)")
            if not self.batteries.groups:
                raise ValueError("market: an aggregator needs batteries to plan with; add [[batteries.groups]] "
                                 "or drop [market]")
        names = [b.name for b in self.batteries.groups]
        if len(names) != len(set(names)):
            raise ValueError(f"batteries.groups: names must be unique, got {names}")
        if self.planner is not None:
            p = self.planner
            if p.communities not in groups:
                raise ValueError(f"planner.communities: no household group {p.communities!r} "
                                 f"(groups: {', '.join(sorted(groups)) or 'none'})")
            bat = {b.name: b for b in self.batteries.groups}.get(p.batteries)
            if bat is None or bat.at != "buses":
                raise ValueError(f"planner.batteries: need a battery group with at = 'buses' named {p.batteries!r} "
                                 f"(groups: {', '.join(sorted(names)) or 'none'})")
            group = next(g for g in self.households.groups if g.name == p.communities)
            if group.per_bus != 1 or sorted(group.buses) != sorted(bat.buses) or len(set(bat.buses)) != len(bat.buses):
                raise ValueError(f"planner: household group {p.communities!r} needs per_bus = 1 and the same buses "
                                 f"as battery group {p.batteries!r} (got {sorted(group.buses)} and {sorted(bat.buses)})")
            if p.admm.partial_barrier is not None and p.admm.partial_barrier > len(group.buses):
                raise ValueError(f"planner.admm.partial_barrier: {p.admm.partial_barrier} is more than the "
                                 f"{len(group.buses)} communities")
        return self


# ---------------------------------------------------------------- errors


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (through Annotated, list, Optional), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is None and not isinstance(annotation, types.UnionType):
        return None
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] | None = Scenario
    for part in loc[:-1]:
        if isinstance(part, int) or model is None or part in _SOURCE_TAGS:
            continue
        field = model.model_fields.get(part)
        model = _model_in(field.annotation) if field else None
    return list(model.model_fields) if model else []


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if part in _SOURCE_TAGS:
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(scenario)"


def _describe(err: Any) -> str:  # a pydantic ErrorDetails
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc)
        return f"unknown key; expected one of: {', '.join(allowed)}"
    if err["type"] == "missing":
        return "required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if "got " not in msg and not isinstance(err["input"], (dict, list)):
        msg += f" (got {shown(err['input'])})"
    return msg[:1000]


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)``, shortened for an error line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def format_validation_error(path: str | Path, exc: ValidationError) -> str:
    """One line per error: ``file: key.path: what was expected (got …)``."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        # errors across sections carry their key path at the start of the message
        lines.append(f"{path}: {_key_path(loc)}: {_describe(err)}" if loc else f"{path}: {_describe(err)}")
    return "\n".join(lines)


def parse_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario TOML file against the schema; :class:`ScenarioError` on any problem.

    Values are validated strictly (a TOML string is never taken as a number,
    a boolean never as 0/1, NaN and ±inf never pass). The checks that need more than the schema are
    :func:`dercosim.scenarios.load.load_scenario`'s.
    """
    path = Path(path)
    try:
        if path.exists() and not path.is_file():  # a folder, a FIFO, a device: reading it could wait forever
            raise ScenarioError(f"{_short(path)}: not a regular file (a scenario is a TOML file)")
    except OSError:
        pass  # reading it below gives the error
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the TOML
    except OSError as exc:
        raise ScenarioError(f"{_short(path)}: cannot read scenario file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: not a UTF-8 text file") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ScenarioError(f"{path}: nested too deeply to be a scenario") from None
    if _depth(data) > MAX_DEPTH:  # also when a library has raised the recursion limit (py-evm does)
        raise ScenarioError(f"{path}: nested too deeply to be a scenario (more than {MAX_DEPTH} levels)")
    try:
        scenario = Scenario.model_validate(data, strict=True, context={"source_dir": path.resolve().parent})
    except ValidationError as exc:
        raise ScenarioError(format_validation_error(path, exc)) from None
    except RecursionError:
        raise ScenarioError(f"{path}: nested too deeply to be a scenario") from None
    scenario._source_dir = path.resolve().parent
    return scenario


#: deepest nesting of tables and arrays a scenario may have (the schema needs 5)
MAX_DEPTH = 32


def _depth(data: Any) -> int:
    """Nesting depth of tables and arrays, without recursion."""
    deepest, stack = 0, [(data, 0)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, d + 1)
            if deepest > MAX_DEPTH:
                return deepest
            stack.extend((v, d + 1) for v in (node.values() if isinstance(node, dict) else node))
    return deepest


def _short(path: Path | str, limit: int = 200) -> str:
    text = str(path)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def scenario_to_toml(scenario: Scenario) -> str:
    """The resolved scenario (every default filled in) as TOML."""
    import tomli_w

    data = scenario.model_dump(mode="python", exclude_none=True)
    return tomli_w.dumps(data)
