"""Bundled weather (TMY3) at minute resolution, and the simulation clock's time index.

Times are tz-aware, in the site's local standard time (no daylight saving),
so that one simulated day is always 1,440 minutes.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any
from importlib import resources

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Site:
    """A location with bundled weather. ``tz`` is a fixed-offset zone (local standard time)."""

    name: str
    latitude: float
    longitude: float
    altitude_m: float
    tz: str
    weather_file: str
    month_shift: int = 0  #: read the file this many months later (a seasonal proxy for the other hemisphere)
    #: measured weather (the scenario's ``WeatherFile``): the quantities it gives replace the bundled ones
    file: Any = None


SITES: dict[str, Site] = {
    "greensboro_tmy3": Site(
        name="greensboro_tmy3",
        latitude=36.1,
        longitude=-79.95,
        altitude_m=273.0,
        tz="Etc/GMT+5",  # UTC-5, the TMY3 file's local standard time
        weather_file="weather_greensboro_tmy3.csv",
    ),
    # No Australian weather is bundled (no network at run time): Brisbane's sun position with the
    # Greensboro TMY3 six months on (its July for Brisbane's January) as a seasonal proxy for clouds and
    # temperature. Documented in PROVENANCE.md; use it for the NEM (Jiang & Wang 2024) scenarios only.
    "brisbane_proxy": Site(
        name="brisbane_proxy",
        latitude=-27.47,
        longitude=153.03,
        altitude_m=30.0,
        tz="Etc/GMT-10",  # AEST, UTC+10, no daylight saving in Queensland
        weather_file="weather_greensboro_tmy3.csv",
        month_shift=6,
    ),
    # No UK weather is bundled: the sun of central Scotland (the ReFLEX fleet of Couraud et al. 2022 is in
    # Orkney; Edinburgh's latitude here) with the Greensboro TMY3 clouds, temperature and wind on the same
    # calendar day, in UK standard time (UTC, the bundled GB prices' clock). A proxy, documented as such.
    "gb_proxy": Site(
        name="gb_proxy",
        latitude=55.95,
        longitude=-3.19,
        altitude_m=50.0,
        tz="Etc/GMT",  # GMT = UTC; British Summer Time is not used on the simulation clock
        weather_file="weather_greensboro_tmy3.csv",
    ),
}


def get_site(name: str) -> Site:
    try:
        return SITES[name]
    except KeyError:
        raise ValueError(f"unknown site {name!r}; bundled sites: {', '.join(SITES)}") from None


def site_of(config: Any) -> Site:
    """The site of a scenario's ``[site]`` table: the bundled site, with its location, zone and weather file
    replaced by those the table gives."""
    base = get_site(config.weather)
    changes = {k: getattr(config, k) for k in ("latitude", "longitude", "altitude_m", "tz")
               if getattr(config, k, None) is not None}
    if getattr(config, "file", None) is not None:
        changes["file"] = config.file
    return dataclasses.replace(base, **changes) if changes else base


def measured(site: Site, times: pd.DatetimeIndex) -> pd.DataFrame:
    """The quantities of the site's weather file at ``times`` (regular, tz-aware): the mean over each step;
    an empty frame without a file."""
    if site.file is None:
        return pd.DataFrame(index=times)
    from dercosim.timeseries import files

    spec = site.file
    quantities = list(spec.columns)
    step_s = int((times[1] - times[0]).total_seconds()) if len(times) > 1 else 60
    end = times[-1] + pd.Timedelta(seconds=step_s)
    whole_days = times[0] == times[0].normalize() and len(times) * step_s % 86400 == 0
    values = files.read_series(spec.file, [spec.columns[q] for q in quantities], start=times[0], end=end,
                               step_s=step_s, rule="mean", time_column=spec.time_column,
                               timezone=spec.zone(site.tz), label=spec.label, outlook_day=whole_days)
    return pd.DataFrame(np.array(values), index=times, columns=quantities)


def time_index(start: pd.Timestamp | str, n_steps: int, step_s: int, tz: str) -> pd.DatetimeIndex:
    """Start of each simulation step, tz-aware. ``start`` naive = local standard time of ``tz``."""
    ts = pd.Timestamp(start)
    ts = ts.tz_localize(tz) if ts.tzinfo is None else ts.tz_convert(tz)
    return pd.date_range(ts, periods=n_steps, freq=pd.Timedelta(seconds=step_s))


def whole_days(times: pd.DatetimeIndex, step_s: int = 60) -> pd.DatetimeIndex:
    """Every ``step_s`` step (default: minute) of the whole calendar days that ``times`` touches.

    Profiles are generated on whole days and then cut, so a shorter run sees
    exactly the first part of a longer run's numbers.
    """
    first = times[0].normalize()
    last = times[-1].normalize() + pd.Timedelta(days=1)
    return pd.date_range(first, last, freq=pd.Timedelta(seconds=step_s), inclusive="left")


@functools.lru_cache(maxsize=4)
def _tmy(weather_file: str) -> pd.DataFrame:
    with resources.files("dercosim.timeseries").joinpath("data", weather_file).open("r") as fh:
        return pd.read_csv(fh)


def _hourly_on_calendar(site: Site, times: pd.DatetimeIndex) -> pd.DataFrame:
    """TMY hours laid on the real calendar around ``times`` (29 Feb reuses 28 Feb).

    The TMY's hours are the site's local standard time: tz-aware ``times`` in
    another zone (e.g. UTC) are read on the site's clock, so they get the same
    weather as the same instants in local time; naive ``times`` are local.
    """
    if times.tz is not None:
        times = times.tz_convert(site.tz)
    tmy = _tmy(site.weather_file).set_index(["month", "day", "hour"])
    start = times[0].floor("D") - pd.Timedelta(days=1)
    end = times[-1].ceil("D") + pd.Timedelta(days=1)
    hours = pd.date_range(start, end, freq="1h", inclusive="left")
    month = (hours.month.to_numpy() - 1 + site.month_shift) % 12 + 1
    days_in = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[month - 1]
    day = np.minimum(hours.day.to_numpy(), days_in)  # 29 Feb reuses 28 Feb; with a shift, 31st → 30th
    key = pd.MultiIndex.from_arrays([month, day, hours.hour])
    out = tmy.reindex(key)
    out.index = hours
    return out


def _interp(times: pd.DatetimeIndex, at: pd.DatetimeIndex, values: np.ndarray) -> np.ndarray:
    return np.interp(times.asi8.astype(float), at.asi8.astype(float), values)


def weather_at(site: Site, times: pd.DatetimeIndex) -> pd.DataFrame:
    """Weather at ``times``: hourly TMY values interpolated linearly.

    Irradiance columns are hourly means, placed at mid-interval; temperature
    and wind are TMY3 readings at the end of the hour. Columns: ``ghi_w_m2``,
    ``dni_w_m2``, ``dhi_w_m2``, ``temp_air_c``, ``wind_speed_m_s``. A site with a
    weather file gives its measured quantities instead (:func:`measured`).
    """
    hourly = _hourly_on_calendar(site, times)
    mid = hourly.index + pd.Timedelta(minutes=30)
    end = hourly.index + pd.Timedelta(hours=1)
    out = {c: _interp(times, mid, hourly[c].to_numpy(float)) for c in ("ghi_w_m2", "dni_w_m2", "dhi_w_m2")}
    out.update({c: _interp(times, end, hourly[c].to_numpy(float)) for c in ("temp_air_c", "wind_speed_m_s")})
    if site.file is not None:  # the measured quantities replace the bundled ones
        out.update({c: v.to_numpy() for c, v in measured(site, times).items()})
    return pd.DataFrame(out, index=times)


def hourly_ghi(site: Site, times: pd.DatetimeIndex) -> pd.Series:
    """The TMY's hourly-mean GHI (W/m²) indexed by interval start, around ``times``."""
    return _hourly_on_calendar(site, times)["ghi_w_m2"].astype(float)


def outdoor_temperature_c(site: Site, times: pd.DatetimeIndex) -> np.ndarray:
    """Outdoor air temperature at ``times``, °C."""
    return weather_at(site, times)["temp_air_c"].to_numpy()
