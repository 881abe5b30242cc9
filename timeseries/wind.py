"""Wind turbine output from the bundled weather's wind speed, with windpowerlib.

The TMY3 wind speed (measured at 10 m) is interpolated to the minute,
corrected to the hub height with the Hellman power law (exponent 1/7,
open terrain), and passed through a real power curve: the Enercon
E-53/800 of windpowerlib's turbine library (OpenEnergy Database, shipped
with the package, read offline), normalised to its 800 kW rating and scaled
to each turbine's rated power. The library holds no small (household-size)
turbine, so the same normalised curve stands for the small turbines too;
a small turbine's curve has a similar shape (cut-in about 3 m/s, rated
about 11–13 m/s).
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from dercosim.timeseries import weather

TURBINE_TYPE = "E-53/800"
MEASUREMENT_HEIGHT_M = 10.0
HELLMAN_EXPONENT = 1.0 / 7.0


@functools.lru_cache(maxsize=1)
def normalised_power_curve() -> tuple[np.ndarray, np.ndarray]:
    """(wind speed m/s, output as a fraction of the rating) of :data:`TURBINE_TYPE`."""
    from windpowerlib import WindTurbine

    turbine = WindTurbine(turbine_type=TURBINE_TYPE, hub_height=60.0)
    curve = turbine.power_curve
    return curve["wind_speed"].to_numpy(float), curve["value"].to_numpy(float) / float(turbine.nominal_power)


def hub_wind_speed_m_s(wind_speed_10m: np.ndarray, hub_height_m: float | np.ndarray) -> np.ndarray:
    """Wind speed at hub height from the 10-m reading (Hellman, exponent 1/7), m/s."""
    from windpowerlib import wind_speed

    return np.asarray(wind_speed.hellman(np.asarray(wind_speed_10m, float), MEASUREMENT_HEIGHT_M,
                                         np.asarray(hub_height_m, float), HELLMAN_EXPONENT))


def wind_ac_kw(site: weather.Site, times: pd.DatetimeIndex, rated_kw: np.ndarray,
               hub_height_m: np.ndarray) -> np.ndarray:
    """Output (kW) at each of ``times`` of turbines with the given ratings and hub heights; shape (T, n)."""
    rated = np.asarray(rated_kw, float)
    out = np.zeros((len(times), len(rated)))
    if not np.any(rated > 0):
        return out
    v10 = weather.weather_at(site, times)["wind_speed_m_s"].to_numpy(float)
    speeds, fraction = normalised_power_curve()
    for j in np.flatnonzero(rated > 0):
        v = hub_wind_speed_m_s(v10, hub_height_m[j])
        # windpowerlib's power_curve: linear interpolation, 0 outside the curve (above cut-out)
        out[:, j] = rated[j] * np.interp(v, speeds, fraction, left=0.0, right=0.0)
    return out
