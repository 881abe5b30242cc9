"""Household electricity demand at 1-minute resolution, and the feeder's daily load shape.

The expected profile is demandlib's BDEW H25 standard load profile for
households (15-minute means, weekday/weekend/holiday and seasonal dynamics).
Each household gets its own, seeded, minute-level realisation:

- a time shift of up to ``±max_shift_min`` (people keep different hours),
- a mean-one log-normal AR(1) factor (correlation ``tau_min``),
- appliance events (kettle, oven, washing machine...) of ``event_kw`` for
  ``event_min`` minutes, arriving more often when the expected demand is high;
  they carry ``event_share`` of the energy, taken from the smooth part.

Every calendar day is drawn from its own seeded stream, so a day's load is the
same whatever the length of the run it is part of.

The expected energy equals the BDEW profile scaled to ``annual_kwh``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from demandlib import bdew

from dercosim.timeseries.rng import DayStreams


def bdew_h25_kw_per_mwh(times: pd.DatetimeIndex) -> np.ndarray:
    """BDEW H25 household profile at ``times`` in kW per MWh of annual demand (step-held 15-min means)."""
    quarter = pd.date_range(times[0].floor("15min"), times[-1].floor("15min"), freq="15min")
    # demandlib works on naive local time; H25 values are W per 1 GWh/a == kW per MWh/a / 1000
    profile = np.asarray(bdew.H25(quarter.tz_localize(None)), float) / 1000.0
    pos = ((times.floor("15min") - quarter[0]) // pd.Timedelta(minutes=15)).to_numpy()
    return profile[pos]


def daily_shape(times: pd.DatetimeIndex) -> np.ndarray:
    """Feeder base-load shape in [0, 1]: BDEW H25 divided by its maximum within each calendar day."""
    days = pd.date_range(times[0].normalize(), times[-1].normalize() + pd.Timedelta(days=1), freq="1min",
                         inclusive="left")
    prof = pd.Series(bdew_h25_kw_per_mwh(days), index=days)
    shape = prof / prof.groupby(prof.index.normalize()).transform("max")
    return shape.reindex(times).to_numpy()


def household_load_kw(times: pd.DatetimeIndex, annual_kwh: np.ndarray, streams: DayStreams, *,
                      max_shift_min: int = 45, sigma: float = 0.35, tau_min: float = 20.0,
                      event_share: float = 0.3, event_kw: tuple[float, float] = (1.0, 3.0),
                      event_min: tuple[int, int] = (3, 15)) -> np.ndarray:
    """Minute demand (kW) of households with ``annual_kwh`` each at ``times`` (on the minute); shape (len(times), n).

    Each calendar day is drawn from its own stream (``streams.day``), with the AR(1) factor started afresh from
    its stationary law at midnight and the appliance events of the day before running on past midnight, so a
    day's numbers never depend on how many days the run has. The time shifts are the household's own, the same
    every day (``streams.fixed``).
    """
    annual_kwh = np.asarray(annual_kwh, float)
    n = len(annual_kwh)
    shifts = streams.fixed("shift").integers(-max_shift_min, max_shift_min + 1, size=n)
    first = times[0].floor("D")
    days = pd.date_range(first, times[-1].floor("D"), freq="D")
    day_args: dict[str, Any] = dict(annual_kwh=annual_kwh, shifts=shifts, max_shift_min=max_shift_min, sigma=sigma,
                                    tau_min=tau_min, event_share=event_share, event_kw=event_kw,
                                    event_min=event_min)
    _, spill = _one_day(first - pd.Timedelta(days=1), streams, **day_args)  # events running on past midnight
    out = np.empty((len(days) * MINUTES_PER_DAY, n))
    for k, day in enumerate(days):
        load, next_spill = _one_day(day, streams, **day_args)
        load[:len(spill)] += spill
        out[k * MINUTES_PER_DAY:(k + 1) * MINUTES_PER_DAY] = load
        spill = next_spill
    pos = ((times - first) // pd.Timedelta(minutes=1)).to_numpy()
    if len(pos) and np.array_equal(pos, np.arange(pos[0], pos[0] + len(pos))):  # consecutive minutes: no copy
        return out[pos[0]:pos[0] + len(pos)]
    return out[pos]


MINUTES_PER_DAY = 1440


def _one_day(day: pd.Timestamp, streams: DayStreams, *, annual_kwh: np.ndarray, shifts: np.ndarray,
             max_shift_min: int, sigma: float, tau_min: float, event_share: float, event_kw: tuple[float, float],
             event_min: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One calendar day's minute demand (1440, n), and the events' power that runs on into the next day."""
    rng = streams.day(day)
    n, n_t = len(annual_kwh), MINUTES_PER_DAY
    pad = pd.Timedelta(minutes=max_shift_min)
    ext = pd.date_range(day - pad, day + pd.Timedelta(minutes=n_t - 1) + pad, freq="1min")
    base_ext = bdew_h25_kw_per_mwh(ext)
    idx = np.arange(n_t)[:, None] + max_shift_min - shifts[None, :]
    expected = base_ext[idx] * (annual_kwh / 1000.0)[None, :]  # kW, (T, n)

    phi = np.exp(-1.0 / tau_min)
    eps = rng.standard_normal((n_t, n))
    x = np.empty((n_t, n))
    x[0] = eps[0]
    scale = np.sqrt(1.0 - phi * phi)
    for i in range(1, n_t):
        x[i] = phi * x[i - 1] + scale * eps[i]
    smooth = (1.0 - event_share) * expected * np.exp(sigma * x - 0.5 * sigma * sigma)

    events = np.zeros((n_t + event_min[1], n))
    mean_event_kwh = np.mean(event_kw) * np.mean(event_min) / 60.0
    rate = event_share * expected / 60.0 / mean_event_kwh  # events per minute
    arrivals = rng.poisson(rate)
    for t, j in zip(*np.nonzero(arrivals)):
        for _ in range(arrivals[t, j]):
            power = rng.uniform(*event_kw)
            duration = int(rng.integers(event_min[0], event_min[1] + 1))
            events[t:t + duration, j] += power
    return smooth + events[:n_t], events[n_t:]
