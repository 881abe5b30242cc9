"""Rooftop PV power with pvlib: clear sky modulated by the bundled weather, or measured irradiance.

Per minute: pvlib's Ineichen clear-sky GHI times the hour's clearness
(TMY GHI / clear-sky GHI, interpolated between hours, with seeded minute-level
cloud flicker in partly cloudy hours), Erbs decomposition, isotropic
transposition to each array's plane, Faiman cell temperature, PVWatts DC and
inverter models.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pvlib

from dercosim.timeseries.rng import DayStreams
from dercosim.timeseries.weather import Site, hourly_ghi, measured, weather_at


def clearness_index(site: Site, times: pd.DatetimeIndex, streams: DayStreams | None,
                    flicker: float = 0.25, tau_min: float = 8.0) -> tuple[np.ndarray, pd.DataFrame]:
    """Minute clearness GHI/GHI_clear and the clear-sky frame at ``times``.

    ``flicker`` scales a mean-one AR(1) cloud factor whose amplitude is
    ``flicker * 4 k (1 - k)``: zero under clear or overcast skies, largest at
    k = 0.5. ``tau_min`` is its correlation time in minutes. ``streams=None``
    gives the smooth hourly-interpolated clearness.
    """
    loc = pvlib.location.Location(site.latitude, site.longitude, site.tz, site.altitude_m)
    clear = loc.get_clearsky(times, model="ineichen")
    hourly = hourly_ghi(site, times)
    # Clear-sky hourly means on the same hours as the TMY record.
    fine = pd.date_range(hourly.index[0], hourly.index[-1] + pd.Timedelta(hours=1), freq="5min", inclusive="left")
    clear_fine = loc.get_clearsky(fine, model="ineichen")["ghi"]
    clear_hourly = clear_fine.resample("1h").mean().reindex(hourly.index).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        k_hourly = np.where(clear_hourly > 10.0, hourly.to_numpy() / clear_hourly, 0.0)
    k_hourly = np.clip(k_hourly, 0.0, 1.2)
    mid = (hourly.index + pd.Timedelta(minutes=30)).asi8.astype(float)
    k = np.interp(times.asi8.astype(float), mid, k_hourly)
    if streams is not None and flicker > 0:
        # per calendar day, a minute AR(1) started afresh at midnight from its own stream (night: no PV), so a
        # day's clouds do not depend on the run's length; sampled at the minutes of ``times``
        phi = np.exp(-1.0 / tau_min)
        local = times.tz_convert(site.tz) if times.tz is not None else times  # days of the site's clock
        first = local[0].floor("D")
        n_days = int((local[-1].floor("D") - first) // pd.Timedelta(days=1)) + 1
        x_days = np.empty(n_days * 1440)
        for d in range(n_days):
            eps = streams.day(first + pd.Timedelta(days=d)).standard_normal(1440)
            x = x_days[d * 1440:(d + 1) * 1440]
            x[0] = eps[0]
            for i in range(1, 1440):
                x[i] = phi * x[i - 1] + np.sqrt(1 - phi * phi) * eps[i]
        x = x_days[((local - first) // pd.Timedelta(minutes=1)).to_numpy()]
        amp = flicker * 4.0 * np.clip(k, 0, 1) * (1.0 - np.clip(k, 0, 1))
        k = np.clip(k * (1.0 + amp * x), 0.0, 1.2)
    return k, clear


def pv_ac_kw(site: Site, times: pd.DatetimeIndex, kwp: np.ndarray, tilt_deg: np.ndarray,
             azimuth_deg: np.ndarray, streams: DayStreams | None,
             system_loss: float = 0.14, gamma_pdc: float = -0.004,
             inverter_efficiency: float = 0.96) -> np.ndarray:
    """AC power (kW) of PV arrays at ``times``, shape (len(times), n_arrays).

    ``kwp`` is the DC rating at STC (kWp); the inverter's AC rating equals
    ``kwp``. Arrays with kwp == 0 produce 0. Azimuth 180° = south.
    """
    kwp = np.asarray(kwp, float)
    tilt_deg = np.asarray(tilt_deg, float)
    azimuth_deg = np.asarray(azimuth_deg, float)
    out = np.zeros((len(times), len(kwp)))
    if not np.any(kwp > 0):
        return out
    given = measured(site, times)
    if "ghi_w_m2" in given:  # measured irradiance at the clock's resolution: no clear-sky model, no flicker
        ghi = np.clip(given["ghi_w_m2"].to_numpy(float), 0.0, None)
    else:
        k, clear = clearness_index(site, times, streams)
        ghi = clear["ghi"].to_numpy() * k
    solpos = pvlib.solarposition.get_solarposition(times, site.latitude, site.longitude, site.altitude_m)
    zenith = solpos["apparent_zenith"].to_numpy()
    decomposed = pvlib.irradiance.erbs(ghi, zenith, times)
    dni = np.nan_to_num(decomposed["dni"].to_numpy() if hasattr(decomposed["dni"], "to_numpy") else decomposed["dni"])
    dhi = np.nan_to_num(decomposed["dhi"].to_numpy() if hasattr(decomposed["dhi"], "to_numpy") else decomposed["dhi"])
    if "dni_w_m2" in given and "dhi_w_m2" in given:  # measured components replace Erbs' decomposition
        dni = np.clip(given["dni_w_m2"].to_numpy(float), 0.0, None)
        dhi = np.clip(given["dhi_w_m2"].to_numpy(float), 0.0, None)
    weather = weather_at(site, times)
    temp_air = weather["temp_air_c"].to_numpy()
    wind = weather["wind_speed_m_s"].to_numpy()
    # plain arrays, not Series: pvlib's functions are element-wise either way (the same numbers), and a
    # fleet's arrays each have their own orientation, so the pandas overhead per call was most of set-up
    # (5 s of 5.5 at 1,984 homes)
    solar_zenith = solpos["apparent_zenith"].to_numpy()
    solar_azimuth = solpos["azimuth"].to_numpy()
    # arrays of one orientation share its per-kWp DC power, made once and dropped after them (drawn
    # orientations are mostly all different: keeping each would hold a second array of the output's size)
    by_orientation: dict[tuple[float, float], list[int]] = {}
    for j in np.flatnonzero(kwp > 0):
        by_orientation.setdefault((float(tilt_deg[j]), float(azimuth_deg[j])), []).append(int(j))
    for (tilt, azimuth), arrays in by_orientation.items():
        poa = pvlib.irradiance.get_total_irradiance(
            tilt, azimuth, solar_zenith, solar_azimuth, dni, ghi, dhi, model="isotropic"
        )["poa_global"]
        poa = np.nan_to_num(np.asarray(poa, float)).clip(min=0.0)
        temp_cell = pvlib.temperature.faiman(poa, temp_air, wind)
        # per-kWp DC power (kW/kWp) after system losses
        per_kwp = np.asarray(pvlib.pvsystem.pvwatts_dc(poa, temp_cell, 1.0, gamma_pdc)) * (1.0 - system_loss)
        for a in arrays:
            pdc = per_kwp * kwp[a]
            pac = pvlib.inverter.pvwatts(pdc, kwp[a] / inverter_efficiency, inverter_efficiency)
            out[:, a] = np.clip(np.asarray(pac, float), 0.0, None)
    return out
