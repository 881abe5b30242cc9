"""Bundled real market prices (30-minute settlement periods), served in currency per kWh.

See ``timeseries/data/PROVENANCE.md`` for sources. Prices are held constant
over each settlement period.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class PriceSeries:
    name: str
    file: str
    column: str
    currency: str
    description: str


MARKETS: dict[str, PriceSeries] = {
    "gb_n2ex": PriceSeries("gb_n2ex", "prices_gb_2016-06_2016-07.csv", "n2ex_gbp_mwh", "GBP",
                           "GB day-ahead, N2EX (Nord Pool), 2016-06..07"),
    "gb_epex": PriceSeries("gb_epex", "prices_gb_2016-06_2016-07.csv", "epex_gbp_mwh", "GBP",
                           "GB day-ahead, EPEX, 2016-06..07"),
    "gb_ssp": PriceSeries("gb_ssp", "prices_gb_2016-06_2016-07.csv", "ssp_gbp_mwh", "GBP",
                          "GB system sell price (imbalance), Elexon, 2016-06..07"),
    "nem_qld": PriceSeries("nem_qld", "prices_au_nem_qld_2018-01_2018-02.csv", "nem_qld_aud_mwh", "AUD",
                           "Australian NEM spot, Queensland (AEMO), 2018-01..02"),
}


@functools.lru_cache(maxsize=8)
def _periods(file: str) -> pd.DataFrame:
    with resources.files("dercosim.timeseries").joinpath("data", file).open("r") as fh:
        df = pd.read_csv(fh)
    df.index = pd.to_datetime(df.pop("period_start_utc"), utc=True)
    return df


def price_periods(market: str) -> pd.Series:
    """The bundled 30-minute prices of ``market`` in currency per kWh, indexed by period start (UTC)."""
    if market not in MARKETS:
        raise ValueError(f"unknown price series {market!r}; bundled: {', '.join(MARKETS)}")
    series = MARKETS[market]
    return _periods(series.file)[series.column] / 1000.0


def price_per_kwh(market: Any, times: pd.DatetimeIndex) -> np.ndarray:
    """Price (currency/kWh) in force at each of ``times`` (tz-aware); error outside the data's window.

    ``market`` is a bundled series' name or a price file of the scenario (``PriceFile``: its ``column`` held
    over each row, in its ``unit``; naive times in its ``timezone``, else the clock's; with ``rule = "mean"``
    the mean over each step of ``times``, which must then be evenly spaced).
    """
    if not isinstance(market, str):
        from dercosim.timeseries import files

        common = dict(unit_factor=files.PRICE_UNITS[market.unit], time_column=market.time_column,
                      timezone=market.zone(str(times.tz)), label=market.label)
        if getattr(market, "rule", "hold") == "mean" and len(times) > 1:  # the mean over each of ``times``' steps
            step = times[1] - times[0]
            if not (times[1:] - times[:-1] == step).all():
                raise ValueError("a price file's mean rule needs evenly spaced times")
            return files.read_series(market.file, [market.column], start=times[0], end=times[-1] + step,
                                     step_s=int(step.total_seconds()), rule="mean", **common)[:, 0]
        return files.read_at(market.file, market.column, times, **common)
    periods = price_periods(market)
    t_utc = times.tz_convert("UTC")
    first, last = periods.index[0], periods.index[-1] + pd.Timedelta(minutes=30)
    if t_utc[0] < first or t_utc[-1] >= last:
        raise ValueError(
            f"price series {market!r} covers {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC only; "
            f"asked for {t_utc[0]:%Y-%m-%d %H:%M} to {t_utc[-1]:%Y-%m-%d %H:%M} UTC"
        )
    pos = periods.index.searchsorted(t_utc, side="right") - 1
    return periods.to_numpy()[pos]
