"""Retail tariffs: import price (flat or time-of-use) and export price, in currency per kWh.

The bundled default is a flat GB domestic tariff of 2016 (about 15 p/kWh
import) with the feed-in export rate of the time (about 5 p/kWh). Time-of-use
periods override the import price between ``start`` and ``end`` local time
(a period may wrap midnight).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class TouPeriod:
    start: time
    end: time
    import_per_kwh: float


@dataclass(frozen=True)
class AgileFormula:
    """Octopus Energy's Agile Octopus import price (the dynamic UK time-of-use tariff Couraud et al. 2022 use).

    Per half-hour: ``min(multiplier × day-ahead price + peak adder (16:00–19:00 UK time), cap) × (1 + VAT)``,
    currency/kWh; the published formula of the tariff's first years (2018–2020, London region: 2.2, 12 p,
    35 p cap, 5 % VAT). It can go negative with the wholesale price.
    """

    market: Any = "gb_n2ex"  #: a bundled series' name or the scenario's price file
    multiplier: float = 2.2
    peak_adder_per_kwh: float = 0.12
    cap_per_kwh: float = 0.35
    vat: float = 0.05

    def price(self, times: pd.DatetimeIndex) -> np.ndarray:
        from dercosim.timeseries.prices import price_per_kwh

        wholesale = price_per_kwh(self.market, times)
        uk = times.tz_convert("Europe/London")
        peak = (uk.hour >= 16) & (uk.hour < 19)
        return np.minimum(self.multiplier * wholesale + np.where(peak, self.peak_adder_per_kwh, 0.0),
                          self.cap_per_kwh) * (1.0 + self.vat)


@dataclass(frozen=True)
class Tariff:
    currency: str = "GBP"
    import_per_kwh: float = 0.15
    export_per_kwh: float = 0.05
    tou: tuple[TouPeriod, ...] = field(default_factory=tuple)
    peak_demand_per_kw: float = 0.0  #: two-part tariff: currency per kW of each day's peak demand
    demand_interval_s: int = 3600  #: demand = mean import over intervals of this length (local clock)
    kind: str = "fixed"  #: "fixed" (flat or time-of-use) or "agile_octopus" (dynamic, from the day-ahead price)
    agile: AgileFormula | None = None

    def import_price(self, times: pd.DatetimeIndex) -> np.ndarray:
        """Import price at each of ``times`` (local time of the index), currency/kWh."""
        if self.kind == "agile_octopus":
            return (self.agile or AgileFormula()).price(times)
        price = np.full(len(times), self.import_per_kwh)
        minutes = times.hour * 60 + times.minute
        for period in self.tou:
            a = period.start.hour * 60 + period.start.minute
            b = period.end.hour * 60 + period.end.minute
            inside = (minutes >= a) & (minutes < b) if a < b else (minutes >= a) | (minutes < b)
            price[np.asarray(inside)] = period.import_per_kwh
        return price

    def export_price(self, times: pd.DatetimeIndex) -> np.ndarray:
        return np.full(len(times), self.export_per_kwh)

    def peak_demand_kw(self, times: pd.DatetimeIndex, meter_kw: np.ndarray) -> np.ndarray:
        """Each day's peak demand per column of ``meter_kw`` (T, n), kW, shape (days, n).

        Demand is the mean import (export counts as 0) over each
        ``demand_interval_s`` interval of the local clock; the peak is the
        largest interval of each local calendar day.
        """
        meter = np.clip(np.asarray(meter_kw, float).reshape(len(times), -1), 0, None)
        frame = pd.DataFrame(meter, index=times)
        demand = frame.resample(f"{self.demand_interval_s}s").mean()
        return demand.groupby(demand.index.date).max().to_numpy()

    def bill(self, times: pd.DatetimeIndex, meter_kw: np.ndarray, step_h: float) -> np.ndarray:
        """Import cost − export revenue (+ peak-demand charge) per column of ``meter_kw`` (T, n), load convention.

        The peak-demand charge is ``peak_demand_per_kw`` × each day's peak
        demand (:meth:`peak_demand_kw`), summed over the days.
        """
        meter = np.asarray(meter_kw, float).reshape(len(times), -1)
        imp = np.clip(meter, 0, None) * step_h
        exp = np.clip(-meter, 0, None) * step_h
        energy = self.import_price(times) @ imp - self.export_price(times) @ exp
        if self.peak_demand_per_kw:
            energy = energy + self.peak_demand_per_kw * self.peak_demand_kw(times, meter).sum(axis=0)
        return energy


def tariff_of(scenario: object) -> Tariff:
    """The :class:`Tariff` of a scenario's ``[tariff]`` table."""
    t = scenario.tariff  # type: ignore[attr-defined]
    return Tariff(currency=t.currency, import_per_kwh=t.import_per_kwh, export_per_kwh=t.export_per_kwh,
                  tou=tuple(TouPeriod(p.start, p.end, p.import_per_kwh) for p in t.tou),
                  peak_demand_per_kw=t.peak_demand_per_kw, demand_interval_s=t.demand_interval_s, kind=t.kind,
                  agile=AgileFormula(**{k: getattr(t.agile, k) for k in type(t.agile).model_fields})
                  if t.kind == "agile_octopus" else None)
