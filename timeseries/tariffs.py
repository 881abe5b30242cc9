"""Retail tariffs: import price (flat or time-of-use) and export price, in currency per kWh.

The bundled default is a flat GB domestic tariff of 2016 (about 15 p/kWh
import) with the feed-in export rate of the time (about 5 p/kWh). Time-of-use
periods override the import price between ``start`` and ``end`` local time
(a period may wrap midnight).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class TouPeriod:
    start: time
    end: time
    import_per_kwh: float


@dataclass(frozen=True)
class Tariff:
    currency: str = "GBP"
    import_per_kwh: float = 0.15
    export_per_kwh: float = 0.05
    tou: tuple[TouPeriod, ...] = field(default_factory=tuple)

    def import_price(self, times: pd.DatetimeIndex) -> np.ndarray:
        """Import price at each of ``times`` (local time of the index), currency/kWh."""
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

    def bill(self, times: pd.DatetimeIndex, meter_kw: np.ndarray, step_h: float) -> np.ndarray:
        """Import cost − export revenue per column of ``meter_kw`` (T, n) (load convention)."""
        meter = np.asarray(meter_kw, float).reshape(len(times), -1)
        imp = np.clip(meter, 0, None) * step_h
        exp = np.clip(-meter, 0, None) * step_h
        return self.import_price(times) @ imp - self.export_price(times) @ exp


def tariff_of(scenario: object) -> Tariff:
    """The :class:`Tariff` of a scenario's ``[tariff]`` table."""
    t = scenario.tariff  # type: ignore[attr-defined]
    return Tariff(t.currency, t.import_per_kwh, t.export_per_kwh,
                  tuple(TouPeriod(p.start, p.end, p.import_per_kwh) for p in t.tou))
