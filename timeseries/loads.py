"""Household electricity demand at 1-minute resolution, and the feeder's daily load shape.

The expected profile is demandlib's BDEW H25 standard load profile for
households (15-minute means, weekday/weekend/holiday and seasonal dynamics).
Each household gets its own, seeded, minute-level realisation:

- a time shift of up to ``±max_shift_min`` (people keep different hours),
- a mean-one log-normal AR(1) factor (correlation ``tau_min``),
- appliance events (kettle, oven, washing machine...) of ``event_kw`` for
  ``event_min`` minutes, arriving more often when the expected demand is high;
  they carry ``event_share`` of the energy, taken from the smooth part.

The expected energy equals the BDEW profile scaled to ``annual_kwh``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from demandlib import bdew


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


def household_load_kw(times: pd.DatetimeIndex, annual_kwh: np.ndarray, rng: np.random.Generator, *,
                      max_shift_min: int = 45, sigma: float = 0.35, tau_min: float = 20.0,
                      event_share: float = 0.3, event_kw: tuple[float, float] = (1.0, 3.0),
                      event_min: tuple[int, int] = (3, 15)) -> np.ndarray:
    """Minute demand (kW) of households with ``annual_kwh`` each; shape (len(times), n)."""
    annual_kwh = np.asarray(annual_kwh, float)
    n, n_t = len(annual_kwh), len(times)
    pad = pd.Timedelta(minutes=max_shift_min)
    ext = pd.date_range(times[0] - pad, times[-1] + pad, freq="1min")
    base_ext = bdew_h25_kw_per_mwh(ext)
    shifts = rng.integers(-max_shift_min, max_shift_min + 1, size=n)
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

    events = np.zeros((n_t, n))
    mean_event_kwh = np.mean(event_kw) * np.mean(event_min) / 60.0
    rate = event_share * expected / 60.0 / mean_event_kwh  # events per minute
    arrivals = rng.poisson(rate)
    for t, j in zip(*np.nonzero(arrivals)):
        for _ in range(arrivals[t, j]):
            power = rng.uniform(*event_kw)
            duration = int(rng.integers(event_min[0], event_min[1] + 1))
            events[t:t + duration, j] += power
    return smooth + events
