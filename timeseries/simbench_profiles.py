"""SimBench's own 2016 load and PV profiles for the households of a SimBench feeder.

SimBench ships, with every grid, quarter-hour profiles of 2016 for its loads (``H0-A``, ``G1-B``, ...) and
generators (``PV3``, ``WP4``, ...); ``simbench.get_absolute_values`` scales them by each element's rating. Here:

- **load**: the absolute active power of the case's loads at a bus, shared equally by the households placed
  there, held over each quarter hour and given a seeded minute variation — a mean-one log-normal AR(1) factor
  (as the BDEW path's smooth part, :mod:`~dercosim.timeseries.loads`), renormalised within every quarter hour
  so that each quarter hour keeps SimBench's energy exactly;
- **base load**: each bus's case loads relative to their rating (their summed SimBench profiles), the multiplier
  of the bus's base load, held over each quarter hour;
- **PV**: the relative output (per kW of rating) of the case's PV generators at the bus (rating-weighted),
  or of all the feeder's PV generators where the bus has none, times each household's kWp, held over each
  quarter hour.

The run's calendar day is read on 2016's same month and day (SimBench's year); SimBench's times, on a clock
without daylight saving, are taken as the clock's local standard time.

References
----------
Meinecke, S., Sarajlić, D., Drauz, S. R., Klettke, A., Lauven, L.-P., Rehtanz, C., Moser, A., Braun, M. (2020).
SimBench — A Benchmark Dataset of Electric Power Systems to Compare Innovative Solutions Based on Power Flow
Analysis. Energies 13(12), 3290.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np
import pandas as pd

from dercosim.timeseries.rng import DayStreams

QUARTERS_PER_DAY = 96


@functools.lru_cache(maxsize=4)
def _absolute(code: str) -> tuple[Any, dict[Any, pd.DataFrame]]:
    import simbench

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = simbench.get_simbench_net(code)
        return net, simbench.get_absolute_values(net, profiles_instead_of_study_cases=True)


def _quarter_rows(days: pd.DatetimeIndex) -> np.ndarray:
    """Row of SimBench's 2016 table for every quarter hour of the calendar days ``days`` (midnights)."""
    base = pd.Timestamp("2016-01-01")
    rows = []
    for day in days:
        same = pd.Timestamp(2016, day.month, day.day)  # 29 February exists in 2016
        first = int((same - base) // pd.Timedelta(minutes=15))
        rows.append(np.arange(first, first + QUARTERS_PER_DAY))
    return np.concatenate(rows)


def _sum_per_bus(net: Any, element_buses: Any, values: np.ndarray, bus_of_name: dict[str, int],
                 n_bus: int) -> np.ndarray:
    """``values`` of the elements at ``element_buses`` (the net's bus indices; one per element, the last axis)
    summed per feeder bus number (1-based positions): shape (..., n_bus). Elements on buses the feeder does not
    have are left out."""
    numbers = np.array([bus_of_name.get(str(net.bus.name.at[bus]), 0) for bus in element_buses], int)
    out = np.zeros(values.shape[:-1] + (n_bus + 1,))
    np.add.at(out.T, numbers, values.T)  # column 0 collects the elements left out
    return out[..., 1:]


def bus_load_kw(code: str, bus_of_name: dict[str, int], n_bus: int, days: pd.DatetimeIndex) -> np.ndarray:
    """(quarter hours of ``days``, n_bus) the case's loads summed per bus number (1-based), kW."""
    net, absolute = _absolute(code)
    p = absolute[("load", "p_mw")].to_numpy(float)[_quarter_rows(days)] * 1000.0
    return _sum_per_bus(net, net.load.bus.to_numpy(), p, bus_of_name, n_bus)


def bus_load_multiplier(code: str, bus_of_name: dict[str, int], n_bus: int, days: pd.DatetimeIndex) -> np.ndarray:
    """(quarter hours of ``days``, n_bus) the case's loads at each bus relative to their rated sum (SimBench's
    ``p_mw``): the multiplier of the bus's base load; 1 where the bus has no load."""
    net, _ = _absolute(code)
    absolute = bus_load_kw(code, bus_of_name, n_bus, days)
    rated = _sum_per_bus(net, net.load.bus.to_numpy(), net.load.p_mw.to_numpy(float) * 1000.0, bus_of_name, n_bus)
    out = np.ones_like(absolute)
    loaded = rated > 0
    out[:, loaded] = absolute[:, loaded] / rated[loaded]
    return out


def bus_pv_per_kw(code: str, bus_of_name: dict[str, int], n_bus: int, days: pd.DatetimeIndex) -> np.ndarray:
    """(quarter hours of ``days``, n_bus) PV output per kW of rating at each bus: its PV generators'
    (rating-weighted), else all the feeder's PV generators'."""
    net, absolute = _absolute(code)
    sgen = net.sgen
    pv = np.flatnonzero(sgen.type.astype(str).str.upper().str.startswith("PV").to_numpy())
    if not len(pv):
        raise ValueError(f"SimBench {code} has no PV generator whose profile the households could take")
    p = absolute[("sgen", "p_mw")].to_numpy(float)[_quarter_rows(days)][:, pv]
    rating = sgen.p_mw.to_numpy(float)[pv]
    buses = sgen.bus.to_numpy()[pv]
    p_bus = _sum_per_bus(net, buses, p, bus_of_name, n_bus)
    rating_bus = _sum_per_bus(net, buses, rating, bus_of_name, n_bus)
    out = np.repeat((p.sum(axis=1) / rating.sum())[:, None], n_bus, axis=1)  # the feeder's, where a bus has none
    own = rating_bus > 0
    out[:, own] = p_bus[:, own] / rating_bus[own]
    return np.clip(out, 0.0, None)


def household_load_kw(quarter_kw: np.ndarray, days: pd.DatetimeIndex, streams: DayStreams, *, sigma: float = 0.35,
                      tau_min: float = 20.0) -> np.ndarray:
    """Minute load (len(days) × 1440, n) from quarter-hour means (len(days) × 96, n), keeping every quarter hour's
    energy: each day's seeded mean-one AR(1) factor, renormalised within each quarter hour."""
    n = quarter_kw.shape[1]
    phi = np.exp(-1.0 / tau_min)
    scale = np.sqrt(1.0 - phi * phi)
    out = np.empty((len(days) * 1440, n))
    for d, day in enumerate(days):
        eps = streams.day(day).standard_normal((1440, n))
        x = np.empty((1440, n))
        x[0] = eps[0]
        for i in range(1, 1440):
            x[i] = phi * x[i - 1] + scale * eps[i]
        factor = np.exp(sigma * x - 0.5 * sigma * sigma).reshape(QUARTERS_PER_DAY, 15, n)
        factor /= factor.mean(axis=1, keepdims=True)  # every quarter hour keeps its mean
        quarter = quarter_kw[d * QUARTERS_PER_DAY:(d + 1) * QUARTERS_PER_DAY]
        out[d * 1440:(d + 1) * 1440] = (factor * quarter[:, None, :]).reshape(1440, n)
    return out
