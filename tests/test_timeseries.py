"""Profiles and bundled data: household load, PV, weather, daily shape, prices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dercosim.scenarios.config import Scenario
from dercosim.scenarios.fleet import draw_households
from dercosim.timeseries import loads, prices, pv, weather
from dercosim.timeseries.rng import DayStreams

SITE = weather.get_site("greensboro_tmy3")


def day(date: str = "2016-06-21", n: int = 1440) -> pd.DatetimeIndex:
    return weather.time_index(date, n, 60, SITE.tz)


def test_household_load_keeps_bdew_energy_and_differs_per_household():
    times = weather.whole_days(day("2016-06-20", 7 * 1440))  # one week
    annual = np.full(200, 4000.0)
    load = loads.household_load_kw(times, annual, DayStreams(3, "load"))
    expected_kwh = loads.bdew_h25_kw_per_mwh(times).sum() / 60 * 4.0
    mean_kwh = load.sum(axis=0).mean() / 60
    assert mean_kwh == pytest.approx(expected_kwh, rel=0.03)
    assert (load >= 0).all()
    corr = np.corrcoef(load[:, 0], load[:, 1])[0, 1]
    assert corr < 0.9  # households are not copies of each other
    # minute-level variation: a household is spikier than the 15-min standard profile
    assert np.max(load[:, 0]) > 3 * np.max(loads.bdew_h25_kw_per_mwh(times) * 4.0)


def test_household_load_is_reproducible_from_the_seed():
    times = day()
    a = loads.household_load_kw(times, np.array([3000.0, 5000.0]), DayStreams(1, "household_load"))
    b = loads.household_load_kw(times, np.array([3000.0, 5000.0]), DayStreams(1, "household_load"))
    c = loads.household_load_kw(times, np.array([3000.0, 5000.0]), DayStreams(2, "household_load"))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_daily_shape_peaks_at_one_every_day():
    times = weather.whole_days(day("2016-06-20", 3 * 1440))
    shape = pd.Series(loads.daily_shape(times), index=times)
    daily_max = shape.groupby(shape.index.normalize()).max()
    np.testing.assert_allclose(daily_max, 1.0)
    assert 0.2 < shape.min() < 0.8


def test_pv_power_follows_the_sun_and_the_rating():
    times = day()
    kwp = np.array([5.0, 5.0, 0.0])
    out = pv.pv_ac_kw(SITE, times, kwp, np.array([30.0, 30.0, 0.0]), np.array([180.0, 90.0, 0.0]),
                      DayStreams(1, "pv_clouds"))
    hours = times.hour
    assert np.all(out[(hours < 4) | (hours > 21)] == 0.0)
    assert np.all(out <= kwp + 1e-9)
    assert np.all(out[:, 2] == 0.0)
    kwh_per_kwp = out[:, 0].sum() / 60 / 5.0
    assert 2.0 < kwh_per_kwp < 8.0  # a June day at 36 N
    # an east-facing array peaks before a south-facing one
    assert np.argmax(pd.Series(out[:, 1]).rolling(60).mean()) < np.argmax(pd.Series(out[:, 0]).rolling(60).mean())


def test_pv_arrays_equal_pvlib_on_pandas_series_to_the_bit():
    # pv_ac_kw hands pvlib plain arrays (the pandas overhead per array was most of a fleet's set-up);
    # pvlib's documented Series path must give the very same numbers for every orientation
    import pvlib

    times = day()
    rng = np.random.default_rng(4)
    tilt, azimuth, kwp = rng.uniform(5, 50, 6), rng.uniform(80, 280, 6), rng.uniform(1, 6, 6)
    out = pv.pv_ac_kw(SITE, times, kwp, tilt, azimuth, DayStreams(1, "pv_clouds"))
    k, clear = pv.clearness_index(SITE, times, DayStreams(1, "pv_clouds"))
    ghi = clear["ghi"].to_numpy() * k
    solpos = pvlib.solarposition.get_solarposition(times, SITE.latitude, SITE.longitude, SITE.altitude_m)
    erbs = pvlib.irradiance.erbs(ghi, solpos["apparent_zenith"].to_numpy(), times)
    w = weather.weather_at(SITE, times)
    for j in range(6):
        poa = pvlib.irradiance.get_total_irradiance(
            tilt[j], azimuth[j], solpos["apparent_zenith"], solpos["azimuth"], np.nan_to_num(erbs["dni"]), ghi,
            np.nan_to_num(erbs["dhi"]), model="isotropic")["poa_global"]
        poa = np.nan_to_num(np.asarray(poa, float)).clip(min=0.0)
        cell = pvlib.temperature.faiman(poa, w["temp_air_c"].to_numpy(), w["wind_speed_m_s"].to_numpy())
        pdc = np.asarray(pvlib.pvsystem.pvwatts_dc(poa, cell, 1.0, -0.004)) * (1 - 0.14) * kwp[j]
        pac = np.clip(np.asarray(pvlib.inverter.pvwatts(pdc, kwp[j] / 0.96, 0.96), float), 0.0, None)
        np.testing.assert_array_equal(out[:, j], pac)
    assert out.max() > 1.0  # a June day: the comparison covers real output


def test_weather_and_pv_read_the_site_clock_whatever_the_zone_of_the_times():
    # the TMY is in the site's local standard time: the same instants given in UTC get the same sun and clouds
    # (Brisbane is UTC+10: read on the UTC clock, its days fell in the TMY's nights and PV was 0 all day)
    site = weather.get_site("brisbane_proxy")
    local = weather.time_index("2016-06-01", 1440, 60, site.tz)
    utc = local.tz_convert("UTC")
    np.testing.assert_array_equal(weather.weather_at(site, utc).to_numpy(), weather.weather_at(site, local).to_numpy())
    a = pv.pv_ac_kw(site, local, np.array([4.0]), np.array([25.0]), np.array([0.0]), DayStreams(1, "pv_clouds"))
    b = pv.pv_ac_kw(site, utc, np.array([4.0]), np.array([25.0]), np.array([0.0]), DayStreams(1, "pv_clouds"))
    np.testing.assert_array_equal(a, b)
    assert a.max() > 1.0  # a winter day in Brisbane still has sun, at local midday (02:00 UTC)
    assert 0 <= utc[int(np.argmax(a[:, 0]))].hour <= 4


def test_pv_clear_sky_day_beats_cloudy_day():
    # TMY hourly GHI sums tell which June days were clear; PV must order them the same way
    times = weather.whole_days(day("2016-06-01", 30 * 1440))
    ghi = weather.hourly_ghi(SITE, times)
    daily = ghi.groupby(ghi.index.normalize()).sum().loc[times[0]:times[-1]]
    sunny, cloudy = daily.idxmax(), daily.idxmin()
    energy = {}
    for d in (sunny, cloudy):
        t = weather.time_index(d.tz_localize(None), 1440, 60, SITE.tz)
        energy[d] = pv.pv_ac_kw(SITE, t, np.array([1.0]), np.array([25.0]), np.array([180.0]), None).sum() / 60
    assert energy[sunny] > 2 * energy[cloudy]


def test_weather_is_the_bundled_tmy():
    w = weather.weather_at(SITE, day())
    assert 10 < w.temp_air_c.min() < w.temp_air_c.max() < 40  # a June day in North Carolina
    assert w.ghi_w_m2.iloc[0] == 0.0 and w.ghi_w_m2.max() > 500


def test_prices_are_the_bundled_market_data():
    t = pd.DatetimeIndex(["2016-06-01 00:10", "2016-06-01 00:40"]).tz_localize("UTC")
    # first two N2EX periods of June 2016 in the source file: 28.98 and 28.98 GBP/MWh; SSP 26.07 then 21.91
    np.testing.assert_allclose(prices.price_per_kwh("gb_n2ex", t), [0.02898, 0.02898])
    np.testing.assert_allclose(prices.price_per_kwh("gb_ssp", t), [0.02607, 0.02191])
    nem = prices.price_periods("nem_qld")
    assert len(nem) == 59 * 48  # Jan + Feb 2018, 30-min periods
    brisbane = pd.DatetimeIndex(["2018-01-01 00:00"]).tz_localize("Australia/Brisbane")
    assert prices.price_per_kwh("nem_qld", brisbane)[0] == pytest.approx(nem.iloc[0])
    with pytest.raises(ValueError, match="covers"):
        prices.price_per_kwh("gb_n2ex", day("2017-01-01", 10))


def test_draw_households_puts_pv_on_the_requested_share():
    s = Scenario.model_validate({"name": "x", "seed": 5, "households": {"groups": [
        {"buses": "all", "per_bus": 2, "pv_share": 0.5, "pv_kwp": [3, 8], "annual_kwh": [2000, 4000]}]}})
    table = draw_households(s)
    assert len(table) == 64 and (table.pv_kwp > 0).sum() == 32
    assert table.pv_kwp[table.pv_kwp > 0].between(3, 8).all()
    assert table.annual_kwh.between(2000, 4000).all()
    assert sorted(table.bus.unique()) == list(range(2, 34))
    assert table.equals(draw_households(s))
