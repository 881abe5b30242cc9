"""The user's own series from CSV and parquet files: resampling that keeps energy, checks that name the file, the
column and the first bad row, only the run's window read, and scenarios that run on them."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dercosim.scenarios.config import ScenarioError
from dercosim.scenarios.load import load_scenario
from dercosim.scenarios.resolve import RunInputs
from dercosim.timeseries import files, prices

REPO = Path(__file__).resolve().parents[1]
UTC = "UTC"
DAY = pd.Timestamp("2016-06-21", tz="Etc/GMT")


def write(tmp_path: Path, name: str, frame: pd.DataFrame) -> Path:
    path = tmp_path / name
    if name.endswith(".parquet"):
        frame.to_parquet(path, index=False, row_group_size=96)
    else:
        frame.to_csv(path, index=False)
    return path


def quarter_hours(days: int = 3, start: str = "2016-06-20") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=days * 96, freq="15min")


def frame(times: pd.DatetimeIndex, **columns: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"time": times.strftime("%Y-%m-%d %H:%M"), **columns})


@pytest.mark.parametrize("step_s", [1, 30, 60, 300, 3600])
def test_mean_rule_keeps_every_quarter_hours_energy_at_any_clock_step(tmp_path, step_s):
    t = quarter_hours()
    kw = np.random.default_rng(0).uniform(0, 5, len(t))
    path = write(tmp_path, "p.csv", frame(t, p=kw))
    got = files.read_series(path, ["p"], start=DAY, end=DAY + pd.Timedelta(days=1), step_s=step_s, rule="mean",
                            timezone=UTC)[:, 0]
    assert len(got) == 86400 // step_s
    # energy of each hour (kWh) is the file's, whatever the clock's step
    per_hour = 3600 // step_s
    file_hourly = kw[96:192].reshape(24, 4).mean(axis=1)
    np.testing.assert_allclose(got.reshape(24, per_hour).mean(axis=1), file_hourly, rtol=1e-12)
    if step_s <= 900:  # finer than the file: each step within a quarter hour has the quarter hour's power
        np.testing.assert_allclose(got, np.repeat(kw[96:192], 900 // step_s), rtol=1e-12)


def test_energy_per_row_end_labels_and_prices_held(tmp_path):
    t = quarter_hours()
    kwh = np.arange(len(t), dtype=float) / 100
    # each row: the energy of the quarter hour that ends at its time (a smart meter's export)
    path = write(tmp_path, "m.csv", frame(t + pd.Timedelta(minutes=15), e=kwh))
    got = files.read_series(path, ["e"], start=DAY, end=DAY + pd.Timedelta(hours=1), step_s=60, rule="mean",
                            per_step=True, timezone=UTC, label="end")[:, 0]
    # 00:00-00:15 on 21 June is the row written 00:15, i.e. index 96; kWh per 15 min × 4 = kW
    np.testing.assert_allclose(got[:15], kwh[96] * 4)
    np.testing.assert_allclose(got[15:30], kwh[97] * 4)
    # a price held over its half hour, per MWh → per kWh
    half = pd.date_range("2016-06-20", periods=3 * 48, freq="30min")
    path = write(tmp_path, "prices.csv", frame(half, gbp_mwh=np.arange(len(half), dtype=float)))
    at = pd.DatetimeIndex([DAY, DAY + pd.Timedelta(minutes=29), DAY + pd.Timedelta(minutes=30)])
    np.testing.assert_allclose(files.read_at(path, "gbp_mwh", at, unit_factor=1e-3, timezone=UTC),
                               [48e-3, 48e-3, 49e-3])


def test_timezone_with_daylight_saving_and_utc_offsets(tmp_path):
    # London local times across the October change: 01:00-01:59 happens twice; read in order, it is inferred
    local = pd.date_range("2016-10-29", "2016-11-01", freq="30min", inclusive="left", tz="Europe/London")
    values = np.arange(len(local), dtype=float)
    path = write(tmp_path, "london.csv", pd.DataFrame({"time": local.tz_localize(None).strftime("%Y-%m-%d %H:%M"),
                                                       "p": values}))
    utc_day = pd.Timestamp("2016-10-30", tz=UTC)
    got = files.read_series(path, ["p"], start=utc_day, end=utc_day + pd.Timedelta(days=1), step_s=1800,
                            rule="mean", timezone="Europe/London")[:, 0]
    expected = pd.Series(values, index=local.tz_convert(UTC)).loc[utc_day:utc_day + pd.Timedelta("23h30min")]
    np.testing.assert_array_equal(got, expected.to_numpy())
    # the same instants written with their UTC offsets need no timezone
    with_offset = write(tmp_path, "offset.csv", pd.DataFrame({"time": local.map(lambda x: x.isoformat()), "p": values}))
    files.cache_clear()
    np.testing.assert_array_equal(
        files.read_series(with_offset, ["p"], start=utc_day, end=utc_day + pd.Timedelta(days=1), step_s=1800,
                          rule="mean", timezone="Asia/Tokyo")[:, 0], got)
    # a spring-forward local time that does not exist is an error naming its line
    spring = pd.date_range("2016-03-27 00:00", periods=8, freq="15min").strftime("%Y-%m-%d %H:%M")
    path = write(tmp_path, "spring.csv", pd.DataFrame({"time": spring, "p": 1.0}))
    with pytest.raises(files.DataFileError, match=r"spring.csv: column 'time', line 6: local time 2016-03-27 01:00:00 "
                                                  r"does not exist or is ambiguous in Europe/London"):
        files.read_series(path, ["p"], start=pd.Timestamp("2016-03-27", tz=UTC),
                          end=pd.Timestamp("2016-03-27 01:00", tz=UTC), step_s=60, rule="mean",
                          timezone="Europe/London")


BAD = [
    # (change to the file, error words)
    (lambda d: d.assign(p=d["p"].where(d.index != 150)), "column 'p', line 152: missing or non-finite value"),
    (lambda d: d.drop(index=150).reset_index(drop=True), "line 152: 30 min after the row before it, expected every 15 min"),
    (lambda d: pd.concat([d.iloc[:151], d.iloc[150:]]).reset_index(drop=True), "line 153: 2016-06-21 13:30:00+00:00 (UTC) repeats"),
    (lambda d: d.assign(time=d["time"].where(d.index != 150, "21/06 noon")), "line 152: cannot read '21/06 noon' as a time"),
    (lambda d: d.iloc[:120], "covers 2016-06-20 00:00 to 2016-06-21 06:00 (Etc/GMT) only; the run needs 2016-06-21 00:00"),
    (lambda d: d.rename(columns={"p": "q"}), "no column 'p'; the file has: 'time', 'q'"),
]


@pytest.mark.parametrize("change,words", BAD, ids=["nan", "gap", "duplicate", "time", "coverage", "column"])
def test_a_bad_file_names_the_file_the_column_and_the_first_bad_row(tmp_path, change, words):
    t = quarter_hours()
    path = write(tmp_path, "bad.csv", change(frame(t, p=np.ones(len(t)))))
    with pytest.raises(files.DataFileError) as err:
        files.read_series(path, ["p"], start=DAY, end=DAY + pd.Timedelta(days=1), step_s=60, rule="mean",
                          timezone=UTC)
    assert str(err.value).startswith(f"{path}: ")
    assert words in str(err.value)


@pytest.mark.parametrize("name", ["year.csv", "year.parquet"])
def test_only_the_runs_window_is_read(tmp_path, name, monkeypatch):
    """Rows outside the window are never kept (missing values there do not matter), a CSV is read in chunks and a
    parquet file's row groups outside the window are not read at all."""
    monkeypatch.setattr(files, "CHUNK_ROWS", 500)
    t = pd.date_range("2016-06-01", "2016-07-01", freq="15min", inclusive="left")
    p = np.arange(len(t), dtype=float)
    p[:96] = np.nan  # 1 June is broken; a run on 21 June does not care
    path = write(tmp_path, name, frame(t, p=p, q=2 * p))
    read_groups: list[int] = []
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        original = pq.ParquetFile.read_row_group

        def spy(self, i, *args, **kwargs):
            read_groups.append(i)
            return original(self, i, *args, **kwargs)

        monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    got = files.read_series(path, ["q"], start=DAY, end=DAY + pd.Timedelta(days=1), step_s=900, rule="mean",
                            timezone=UTC)
    np.testing.assert_array_equal(got[:, 0], 2 * p[20 * 96:21 * 96])
    if read_groups:  # one group per day (96 rows): the day, and its neighbours within the margin for time zones
        assert sorted(set(read_groups)) == [19, 20, 21]


def test_example_scenario_runs_on_its_csv_and_keeps_the_metered_energy(tmp_path):
    shutil.copytree(REPO / "examples" / "data", tmp_path / "data")
    shutil.copy(REPO / "examples" / "my_data.toml", tmp_path / "my_data.toml")
    scenario = load_scenario(tmp_path / "my_data.toml")
    run = RunInputs.resolve(scenario)
    csv = pd.read_csv(tmp_path / "data" / "households.csv")
    first_day = csv.iloc[:96]  # rows labelled 00:15 .. 24:00 on 21 June
    load_kwh = run.load_kw.sum(axis=0) / 60
    np.testing.assert_allclose(load_kwh, first_day[["house_1", "house_2", "house_3"]].sum().to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(run.pv_kw.sum(axis=0) / 60, 4.0 * first_day["pv_kw_per_kwp"].sum() / 4, rtol=1e-12)
    # the day after the run (a controller's outlook) is the file's 22 June
    np.testing.assert_allclose(run.day_load_kw[1440:, 0].sum() / 60, csv["house_1"].iloc[96:].sum(), rtol=1e-12)

    from dercosim import api

    result = api.run(scenario, until="3h", out=tmp_path / "runs")
    hh = result.households
    assert set(hh["entity"]) == {"home_001", "home_002", "home_003"}
    import hashlib

    used = result.summary["data_files"]  # which data the run saw, exactly
    digest = hashlib.sha256((tmp_path / "data" / "households.csv").read_bytes()).hexdigest()
    assert [u["key"] for u in used] == ["households.groups[0].load", "households.groups[0].pv"]
    assert all(u["sha256"] == digest and u["file"] == str(tmp_path / "data" / "households.csv") for u in used)
    three_hours = first_day.iloc[:12]
    np.testing.assert_allclose(hh.groupby("entity")["load_kw"].sum().sort_index().to_numpy() / 60,
                               three_hours[["house_1", "house_2", "house_3"]].sum().to_numpy(), rtol=1e-9)


def scenario_text(extra: str, group: str = "") -> str:
    return f'''
name = "t"
[clock]
start = 2016-06-21
duration = "2h"
[site]
weather = "gb_proxy"
[[households.groups]]
buses = [18, 25]
pv_share = 1.0
{group}
{extra}
'''


def test_bad_data_file_in_a_scenario_names_the_key_before_anything_is_written(tmp_path):
    t = quarter_hours()
    d = frame(t, a=np.ones(len(t)), b=np.ones(len(t)))
    d.loc[100, "b"] = np.nan  # 21 June 01:00
    write(tmp_path, "loads.csv", d)
    cases = [
        ('load = { file = "loads.csv", columns = ["a", "b"] }',
         "households.groups[0].load: ", "column 'b', line 102: missing or non-finite value"),
        ('load = { file = "loads.csv", columns = ["a"] }',
         "households.groups[0]: ", "load.columns: 1 columns for the group's 2 households"),
        ('load = { file = "nope.csv", column = "a" }', "households.groups[0].load.file: ", "no such file"),
        ('pv = { file = "loads.csv", column = "c" }', "households.groups[0].pv: ", "no column 'c'"),
        ('load = { file = "loads.xlsx", column = "a" }', "households.groups[0].load.file: ",
         "expected a .csv, .csv.gz or .parquet file"),
        ('load = { file = "loads.csv", column = "a", timezone = "Mars/Olympus" }',
         "households.groups[0].load.timezone: ", "expected an IANA time zone"),
    ]
    from dercosim import cli

    for group, key, words in cases:
        path = tmp_path / "s.toml"
        path.write_text(scenario_text("", group))
        with pytest.raises(ScenarioError) as err:
            load_scenario(path)
        message = str(err.value)
        assert f"{path}: {key}" in message, message
        assert words in message, message
    # from the command line: exit status 2, the same message, no run folder
    path.write_text(scenario_text("", cases[0][0]))
    assert cli.main(["run", str(path), "--out", str(tmp_path / "runs"), "--quiet"]) == 2
    assert not (tmp_path / "runs").exists()


def test_one_column_per_household_by_name_or_one_for_the_group(tmp_path):
    t = quarter_hours()
    rng = np.random.default_rng(1)
    columns = {f"hh_{k:03d}": rng.uniform(0, 2, len(t)) for k in (1, 2, 3)}
    write(tmp_path, "homes.csv", frame(t, **columns, shared=np.full(len(t), 0.7)))
    path = tmp_path / "s.toml"
    path.write_text(scenario_text("", 'load = { file = "homes.csv", columns = "by_name" }'))
    run = RunInputs.resolve(load_scenario(path))  # households hh_001 and hh_002 (buses 18 and 25)
    first_hours = slice(96, 96 + 8)  # 21 June 00:00-02:00
    for j, name in enumerate(["hh_001", "hh_002"]):
        np.testing.assert_allclose(run.load_kw[:, j], np.repeat(columns[name][first_hours], 15))
    path.write_text(scenario_text("", 'load = { file = "homes.csv", column = "shared" }'))
    assert np.all(RunInputs.resolve(load_scenario(path)).load_kw == 0.7)
    path.write_text(scenario_text("", 'load = { file = "homes.csv", columns = "by_name" }').replace(
        "buses = [18, 25]", "buses = [18, 25, 30, 33]"))
    with pytest.raises(ScenarioError, match=r"households.groups\[0\].load: .*homes.csv: no column 'hh_004'"):
        load_scenario(path)


def test_prices_weather_and_base_load_from_files(tmp_path):
    # the bundled N2EX series written to a file gives the bundled prices to the aggregator
    n2ex = prices.price_periods("gb_n2ex") * 1000.0
    write(tmp_path, "n2ex.csv", pd.DataFrame({"time": n2ex.index.map(lambda x: x.isoformat()), "gbp": n2ex.values}))
    t = pd.date_range("2016-06-21", periods=2 * 1440, freq="1min")
    temp = 15 + 5 * np.sin(np.arange(len(t)) / 200)
    write(tmp_path, "weather.csv", frame(t, ghi=np.zeros(len(t)), t2m=temp))
    write(tmp_path, "shape.csv", frame(t, s=np.full(len(t), 0.5)))
    fleet = (REPO / "scenarios" / "fleet_market_s4.toml").read_text()
    bundled = load_scenario(REPO / "scenarios" / "fleet_market_s4.toml").set("clock.duration", "2h")
    own_prices = 'file = "n2ex.csv", column = "gbp", timezone = "Asia/Tokyo"'  # times carry their offset: no effect
    text = re.sub(r'\nwholesale = "gb_n2ex"', f"\nwholesale = {{ {own_prices} }}", fleet)
    text += f"\n[tariff.agile]\nmarket = {{ {own_prices} }}\n"
    assert text.count("n2ex.csv") == 2
    (tmp_path / "s4.toml").write_text(text)
    own = load_scenario(tmp_path / "s4.toml").set("clock.duration", "2h")
    a, b = RunInputs.resolve(bundled), RunInputs.resolve(own)
    assert a.market_inputs is not None and b.market_inputs is not None
    for key in ("wholesale_price", "import_price"):  # the Agile import price follows the wholesale file
        np.testing.assert_allclose(b.market_inputs[key], a.market_inputs[key], rtol=1e-15, atol=0)
    np.testing.assert_array_equal(b.market_inputs["demand_forecast_kwh"], a.market_inputs["demand_forecast_kwh"])
    np.testing.assert_array_equal(b.load_kw, a.load_kw)

    (tmp_path / "w.toml").write_text(scenario_text(
        '[site.file]\nfile = "weather.csv"\ncolumns = { ghi_w_m2 = "ghi", temp_air_c = "t2m" }\n'
        '[grid.base_load]\nscale = 0.8\nshape = { file = "shape.csv", column = "s" }\n'))
    run = RunInputs.resolve(load_scenario(tmp_path / "w.toml"))
    assert np.all(run.pv_kw == 0.0)  # no irradiance measured, no PV
    np.testing.assert_allclose(run.outdoor_temperature_c, temp[:120])
    np.testing.assert_allclose(run.base_shape, 0.4)


def test_simbench_feeder_takes_simbench_profiles():
    """On a SimBench feeder the households can take SimBench's own 2016 profiles: the day's load of the feeder's
    households is the case's loads' energy that day (every quarter hour kept), PV follows SimBench's PV profile."""
    import simbench

    scenario = load_scenario(REPO / "scenarios" / "simbench_lv_households.toml")
    scenario.set("households.groups[0].load", "simbench").set("households.groups[0].pv", "simbench")
    run = RunInputs.resolve(scenario)
    net = simbench.get_simbench_net(scenario.grid.feeder)
    absolute = simbench.get_absolute_values(net, profiles_instead_of_study_cases=True)
    day = (pd.Timestamp("2016-06-21") - pd.Timestamp("2016-01-01")).days
    june21 = slice(day * 96, (day + 1) * 96)  # SimBench's quarter hours of 21 June 2016
    case_kw = absolute[("load", "p_mw")].to_numpy()[june21] * 1000.0  # every case load (each has a household)
    quarters = run.load_kw.reshape(96, 15, -1).mean(axis=1)
    np.testing.assert_allclose(quarters.sum(axis=1), case_kw.sum(axis=1), rtol=1e-12)
    assert run.load_kw.std(axis=0).mean() > quarters.std(axis=0).mean()  # seeded minute variation inside
    kwp = run.fleet.households["pv_kwp"].to_numpy()
    with_pv = kwp > 0
    per_kwp = run.pv_kw[:, with_pv] / kwp[with_pv]
    pv = absolute[("sgen", "p_mw")].to_numpy()[june21] / net.sgen.p_mw.to_numpy()
    pv = pv[:, net.sgen.type.str.upper().str.startswith("PV").to_numpy()]
    # each household's day per kWp lies within SimBench's PV profiles' (a bus's own, or the feeder's weighted mean)
    daily = per_kwp.sum(axis=0) / 60
    assert daily.min() >= (pv.sum(axis=0) / 4).min() - 1e-9 and daily.max() <= (pv.sum(axis=0) / 4).max() + 1e-9
    assert daily.min() > 0.1  # kWh per kWp: SimBench's 21 June 2016 is a dull day at most of its PV sites
    assert per_kwp.reshape(96, 15, -1).std(axis=1).max() <= 1e-12  # held over each quarter hour
    with pytest.raises(ScenarioError, match=r"households.groups\[0\].load: 'simbench' takes the profiles of a "
                                             r"SimBench feeder; grid.feeder is 'ieee33'"):
        load_scenario(REPO / "scenarios" / "households_pv_battery.toml").set("households.groups[0].load", "simbench")


def test_simbench_base_load_takes_every_case_loads_own_profile(tmp_path):
    """shape = "simbench" on a SimBench feeder: the base load the grid draws each step is the SimBench
    absolute load of the case's loads (held over each quarter hour)."""
    import simbench

    from dercosim import api

    scenario = api.load("simbench_lv_households")
    scenario.set("households.groups[0].replaces_case_loads", False).set("households.groups[0].pv_share", 1.0)
    scenario.set("households.groups[0].buses", [5])  # one household, its bus keeps its case load too
    scenario.set("grid.base_load.shape", "simbench").set("grid.base_load.scale", 1.0)
    run = RunInputs.resolve(scenario)
    assert run.base_shape.shape == (1440, 129)
    result = api.run(scenario, until="1h", out=tmp_path / "run", plots=False)
    feeder = result.feeder.set_index("time_s")
    net = simbench.get_simbench_net(scenario.grid.feeder)
    absolute = simbench.get_absolute_values(net, profiles_instead_of_study_cases=True)
    day = (pd.Timestamp("2016-06-21") - pd.Timestamp("2016-01-01")).days
    expected_kw = absolute[("load", "p_mw")].to_numpy()[day * 96:day * 96 + 4].sum(axis=1) * 1000.0
    np.testing.assert_allclose(feeder["base_p_kw"].to_numpy(), np.repeat(expected_kw, 15), rtol=1e-9)
    with pytest.raises(ScenarioError, match=r"grid.base_load.shape: 'simbench' takes the profiles of a SimBench"):
        api.load("households_pv_battery").set("grid.base_load.shape", "simbench")


def test_five_minute_prices_settled_per_half_hour(tmp_path):
    """rule = "mean": a market interval's price is the mean of the file's rows within it (the NEM's 30-minute
    settlement of 5-minute dispatch prices before 2021); "hold": the first row's."""
    from dercosim.scenarios.config import PriceFile

    t = pd.date_range("2016-06-20", periods=3 * 288, freq="5min")
    price = np.arange(len(t), dtype=float)
    write(tmp_path, "dispatch.csv", frame(t, aud=price))
    starts = pd.date_range(DAY, periods=48, freq="30min")
    mean = PriceFile(file=str(tmp_path / "dispatch.csv"), column="aud", rule="mean", timezone=UTC)
    held = PriceFile(file=str(tmp_path / "dispatch.csv"), column="aud", timezone=UTC)
    first = 288  # 21 June 00:00
    np.testing.assert_allclose(prices.price_per_kwh(mean, starts) * 1000,
                               price[first:first + 288].reshape(48, 6).mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(prices.price_per_kwh(held, starts) * 1000, price[first:first + 288:6])


def test_chunks_of_one_row_read_as_the_whole_file(tmp_path, monkeypatch):
    """A first chunk of a single row does not know its interval until the next row: end labels still land."""
    t = quarter_hours() + pd.Timedelta(minutes=15)
    path = write(tmp_path, "m.csv", frame(t, e=np.arange(len(t), dtype=float)))
    kwargs = dict(start=DAY, end=DAY + pd.Timedelta(hours=2), step_s=300, rule="mean", timezone=UTC, label="end")
    whole = files.read_series(path, ["e"], **kwargs)
    files.cache_clear()
    monkeypatch.setattr(files, "CHUNK_ROWS", 1)
    np.testing.assert_array_equal(files.read_series(path, ["e"], **kwargs), whole)
    np.testing.assert_array_equal(whole[:3, 0], [96.0, 96.0, 96.0])
