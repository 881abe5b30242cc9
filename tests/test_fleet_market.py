"""The aggregator and the wholesale market in a run: settlement from the recorded flows, plan vs delivery."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dercosim import cli
from dercosim.scenarios.config import Scenario, ScenarioError
from dercosim.scenarios.load import load_scenario
from dercosim.scenarios.world import run_scenario, with_duration

REPO = Path(__file__).resolve().parents[1]


def small_fleet(forecast: str = "perfect", **market) -> Scenario:
    """12 households with PV or small wind and a battery following the residual, a PV plant, a day-ahead market."""
    return Scenario.model_validate({
        "name": "small_fleet", "seed": 4, "clock": {"start": "2016-06-01T08:00:00", "duration": "6h"},
        "site": {"weather": "gb_proxy"},
        "households": {"groups": [
            {"name": "hh", "buses": [6, 12, 18, 25, 30, 33], "per_bus": 2, "pv_share": 0.75, "wind_share": 0.25,
             "pv_kwp": [3, 6], "wind_kw": [3, 5]},
            {"name": "plant", "buses": [18], "annual_kwh": 0, "pv_share": 1.0, "pv_kwp": 40}]},
        "batteries": {"groups": [{"household_group": "hh", "households": "all", "default_mode": "follow_residual"}]},
        "tariff": {"kind": "agile_octopus", "export_per_kwh": 0.0},
        "market": {"central_groups": ["plant"], "forecast": {"kind": forecast}, **market},
    })


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return run_scenario(small_fleet(), tmp_path_factory.mktemp("market") / "run", progress=False)


def test_the_aggregator_bid_and_was_awarded_in_the_sunny_hours(run):
    m = run.summary["market"]
    assert m["milp_failures"] == 0 and m["intervals"] == 12
    assert m["committed_kwh"] > 1.0 and m["committed_kwh"] == pytest.approx(m["bid_kwh"])  # price taker
    table = pd.read_csv(run.out_dir / "market.csv")
    assert (table.committed_kwh[table.wholesale_per_kwh <= 0] == 0).all()
    assert (run.out_dir / "market.png").exists() and (run.out_dir / "soc_three_households.png").exists()


def test_with_perfect_forecasts_delivery_misses_the_commitment_only_by_what_the_batteries_did_otherwise(run):
    df = pd.read_parquet(run.parquet)
    table = pd.read_csv(run.out_dir / "market.csv")
    bat = df[df.kind == "battery"].groupby("time_s").p_kw.sum()  # + = charging
    actual = bat.to_numpy().reshape(12, 30).sum(axis=1) / 60.0
    awarded = table.committed_kwh.to_numpy() > 0
    assert awarded.any()
    miss = table.delivered_kwh.to_numpy() - table.committed_kwh.to_numpy()
    np.testing.assert_allclose(miss[awarded], (table.planned_battery_kwh.to_numpy() - actual)[awarded], atol=1e-6)


def test_settlement_adds_up_to_the_recorded_energy_flows(run):
    """Revenue, imbalance and bills recomputed minute by minute from the parquet, another way, to 1e-6."""
    df = pd.read_parquet(run.parquet)
    table = pd.read_csv(run.out_dir / "market.csv")
    s = run.summary
    hh = df[df.kind == "household"].set_index(["time_s", "entity"])
    bat = df[df.kind == "battery"].set_index(["time_s", "entity"])
    batteries = pd.read_csv(run.out_dir / "batteries.csv", keep_default_na=False).set_index("household")
    prices = df[df.kind == "market"].set_index("time_s")
    times = sorted(df.time_s.unique())
    from dercosim.timeseries.tariffs import tariff_of

    stamps = pd.DatetimeIndex(df[df.kind == "feeder"].sort_values("time_s").time)
    import_price = tariff_of(small_fleet()).import_price(stamps)
    delivered = np.zeros(12)
    bills: dict[str, float] = {}
    for k, t in enumerate(times):
        meters = {}
        for name in [n for n in hh.loc[t].index if n.startswith("hh")]:
            meters[name] = bat.loc[(t, batteries.loc[name, "name"]), "meter_kw"]
        plant_kw = float(hh.loc[(t, "plant_001"), "net_kw"])
        imports = {n: max(v, 0.0) / 60 for n, v in meters.items()}
        fleet_export = sum(max(-v, 0.0) for v in meters.values()) / 60 + max(-plant_kw, 0.0) / 60
        total_import = sum(imports.values())
        covered = min(total_import, fleet_export)
        for n, e in imports.items():
            share = e * covered / total_import if total_import > 0 else 0.0
            bills[n] = bills.get(n, 0.0) + import_price[k] * (e - share) + 0.48 * import_price[k] * share
        delivered[k // 30] -= (sum(meters.values()) + plant_kw) / 60
    np.testing.assert_allclose(table.delivered_kwh, delivered, atol=1e-9)
    committed = table.committed_kwh.to_numpy()
    first = prices.loc[times[::30]]
    revenue = float(np.sum(committed * first.wholesale_per_kwh.to_numpy()))
    # charged where a bid exists (the authors' code of Couraud et al. 2022)
    imbalance = float(np.sum(np.where(committed > 1e-9, np.abs(delivered - committed), 0.0)
                             * first.imbalance_per_kwh.to_numpy()))
    assert s["market"]["wholesale_revenue"] == pytest.approx(revenue, abs=1e-6)
    assert s["market"]["imbalance_cost"] == pytest.approx(imbalance, abs=1e-6)
    assert s["market"]["bill_total"] == pytest.approx(sum(bills.values()), abs=1e-6)
    for name, bill in bills.items():
        assert s["households"]["per_household"][name]["bill"] == pytest.approx(bill, abs=1e-6)


def test_a_shorter_run_commits_what_the_longer_run_committed_first(run, tmp_path):
    short = run_scenario(with_duration(small_fleet(), 2 * 3600), tmp_path / "short", progress=False)
    a = pd.read_csv(short.out_dir / "market.csv")
    b = pd.read_csv(run.out_dir / "market.csv").iloc[:len(a)]
    np.testing.assert_allclose(a.committed_kwh, b.committed_kwh, atol=1e-9)
    np.testing.assert_allclose(a.delivered_kwh, b.delivered_kwh, atol=1e-9)


def test_the_forecast_is_seeded_and_its_error_changes_the_bids(run, tmp_path):
    a = run_scenario(small_fleet("noisy"), tmp_path / "a", progress=False)
    b = run_scenario(small_fleet("noisy"), tmp_path / "b", progress=False)
    ta, tb = pd.read_csv(a.out_dir / "market.csv"), pd.read_csv(b.out_dir / "market.csv")
    pd.testing.assert_frame_equal(ta, tb)  # same seed, same forecast, same bids and settlement
    perfect = pd.read_csv(run.out_dir / "market.csv")
    assert not np.allclose(ta.bid_kwh, perfect.bid_kwh)  # 25 % error every 2 h moves the bids


GOOD = (REPO / "scenarios" / "fleet_market_uncoordinated.toml").read_text()


@pytest.mark.parametrize("old,new,key,words", [
    ("start = 2016-06-01T00:00:00", "start = 2016-09-01T00:00:00", "market.wholesale", ["covers"]),
    ("accuracy = 0.25", "accuracy = 1.5", "market.forecast.accuracy", ["less than or equal to 1"]),
    ("interval_s = 1800", "interval_s = 1700", "market", ["divide a day"]),
    ('central_groups = ["pv_plant", "wind_farm"]', 'central_groups = ["farm"]', "market.central_groups[0]",
     ["no household group 'farm'"]),
])
def test_a_bad_market_scenario_is_one_clear_line(tmp_path, capsys, old, new, key, words):
    path = tmp_path / "bad.toml"
    assert old in GOOD
    path.write_text(GOOD.replace(old, new))
    assert cli.main(["run", str(path), "--out", str(tmp_path / "runs"), "--quiet"]) == 2
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if f"{path}: {key}:" in ln)
    for word in words:
        assert word in line
    assert not (tmp_path / "runs").exists()


def test_an_aggregator_without_batteries_is_refused(tmp_path):
    text = GOOD[:GOOD.index("[[batteries.groups]]")] + GOOD[GOOD.index("[tariff]"):]
    path = tmp_path / "nobat.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match="an aggregator needs batteries"):
        load_scenario(path)


def test_the_fleet_scenarios_load_and_describe_the_paper_fleet():
    s1 = load_scenario(REPO / "scenarios" / "fleet_market_s1.toml")
    from dercosim.scenarios.fleet import Fleet

    fleet = Fleet.draw(s1)
    hh = fleet.households
    assert len(hh) == 70 and (hh.pv_kwp > 0).sum() == 56 and (hh.wind_kw > 0).sum() == 14
    assert ((hh.pv_kwp > 0) & (hh.wind_kw > 0)).sum() == 0
    b = fleet.batteries
    assert len(b) == 70 and (b.capacity_kwh == 10.3).all() and (b.p_charge_max_kw == 5.3).all()
    assert np.allclose(b.soc_init_kwh, 0.51 * 10.3)
    unc = load_scenario(REPO / "scenarios" / "fleet_market_uncoordinated.toml")
    plants = Fleet.draw(unc).households.set_index("group")
    assert plants.loc["pv_plant", "pv_kwp"] == 105 and plants.loc["wind_farm", "wind_kw"] == 130
    assert json.loads(json.dumps(unc.market.model_dump()))["vpw_share"] == 0.48


def test_bill_reduction_against_a_baseline_run(tmp_path, capsys):
    base = '''name = "base"
seed = 5
[clock]
start = 2016-06-01T10:00:00
duration = "2h"
[site]
weather = "gb_proxy"
[[households.groups]]
buses = [6, 18, 30]
per_bus = 2
pv_share = PV
[tariff]
kind = "agile_octopus"
export_per_kwh = 0.0
'''
    (tmp_path / "s0.toml").write_text(base.replace("PV", "0.0"))
    (tmp_path / "s5.toml").write_text(base.replace("PV", "1.0").replace('name = "base"', 'name = "pv"'))
    assert cli.main(["run", str(tmp_path / "s0.toml"), "--out", str(tmp_path / "a"), "--quiet"]) == 0
    (s0_dir,) = (tmp_path / "a").iterdir()
    assert cli.main(["run", str(tmp_path / "s5.toml"), "--out", str(tmp_path / "b"), "--quiet",
                     "--baseline", str(s0_dir)]) == 0
    (s5_dir,) = (tmp_path / "b").iterdir()
    s0 = json.loads((s0_dir / "summary.json").read_text())
    s5 = json.loads((s5_dir / "summary.json").read_text())
    r = s5["bill_reduction"]
    assert r["households"] == 6
    assert r["reduction"] == pytest.approx(s0["households"]["bill_total"] - s5["households"]["bill_total"], abs=1e-9)
    assert r["reduction"] > 0  # midday PV
    capsys.readouterr()
    assert cli.main(["run", str(tmp_path / "s5.toml"), "--out", str(tmp_path / "c"), "--quiet",
                     "--baseline", str(tmp_path)]) == 2
    assert "--baseline" in capsys.readouterr().err and not (tmp_path / "c").exists()


def test_validation_holds_the_commitments_against_the_delivery(run):
    from dercosim.analysis.validate import validate

    r = validate(run.out_dir, engine_minutes=5)
    m = r["beliefs"]["market"]
    assert m["committed_kwh"] == pytest.approx(run.summary["market"]["committed_kwh"])
    assert m["delivered_kwh"] == pytest.approx(run.summary["market"]["delivered_kwh"])
    assert r["engine_check"]["agrees"]


def test_households_inside_the_portfolio_get_the_virtual_private_wire_outside_not(tmp_path):
    """Couraud et al. 2022 scenarios 2 and 3 in small: a central plant with the battery; households without assets."""
    def central(portfolio):
        s = small_fleet().model_dump()
        s["name"] = "central"
        s["clock"] = {"start": "2016-06-01T10:00:00", "duration": "2h"}
        s["households"]["groups"][0].update(pv_share=0.0, wind_share=0.0)
        s["batteries"]["groups"][0].update(household_group="plant", capacity_kwh=60, p_charge_max_kw=30,
                                          p_discharge_max_kw=30)
        s["market"]["portfolio_groups"] = portfolio
        return run_scenario(Scenario.model_validate(s), tmp_path / str(bool(portfolio)), progress=False)

    outside, inside = central([]), central(["hh"])
    mo, mi = outside.summary["market"], inside.summary["market"]
    assert mo["households_outside"] == 12 and mo["households_in_portfolio"] == 0 and mo["vpw_kwh"] == 0
    assert mi["households_in_portfolio"] == 12 and mi["vpw_kwh"] > 1.0
    assert mi["bill_total"] < mo["bill_total"]  # the plant's midday export covers them at 48 %
    # the households' imports count against the portfolio's delivery only when they are in it
    hh_import = mo["delivered_kwh"] - mi["delivered_kwh"]
    df = pd.read_parquet(inside.parquet, filters=[("kind", "==", "household")])
    imported = df[df.entity.str.startswith("hh")].net_kw.clip(lower=0).sum() / 60
    assert hh_import == pytest.approx(imported, rel=1e-9)


def test_the_central_scenarios_put_the_fleet_in_one_plant():
    from dercosim.scenarios.fleet import Fleet, contract_members, portfolio

    for name, inside in (("fleet_market_s2", 0), ("fleet_market_s3", 70)):
        s = load_scenario(REPO / "scenarios" / f"{name}.toml")
        f = Fleet.draw(s)
        central, members = portfolio(s, f.households)
        assert central == ["central_pv_001", "central_wind_001"] and len(members) == inside
        assert contract_members(s, f.households, f.batteries) == ["central_pv_001"]  # k = 1
        assert f.batteries.capacity_kwh.sum() == pytest.approx(70 * 10.3)


def test_the_fleet_scenarios_share_their_households_loads():
    """A plant added to a scenario (annual_kwh = 0) draws no load: s0's homes are s2's and s4's homes."""
    from dercosim.scenarios.resolve import RunInputs

    runs = {n: RunInputs.resolve(with_duration(load_scenario(REPO / "scenarios" / f"fleet_market_{n}.toml"), 7200))
            for n in ("s0", "s2", "s4")}
    for n in ("s2", "s4"):
        hh = (runs[n].fleet.households["group"] == "hh").to_numpy()
        np.testing.assert_array_equal(runs[n].load_kw[:, hh], runs["s0"].load_kw)


def test_study_fleet_runs_the_cases_in_processes_and_writes_table_ii(tmp_path, capsys):
    assert cli.main(["study", "fleet", "--until", "1h", "--cases", "s0,s2", "--out", str(tmp_path)]) == 0
    (folder,) = tmp_path.iterdir()
    table = pd.read_csv(folder / "fleet_table.csv")
    assert list(table.scenario) == ["s0", "s2"] and table.bill_reduction_vs_s0.iloc[0] == 0.0
    assert table.paper_total_revenue_month.iloc[1] == 2722.0
    assert (folder / "fleet_table.md").exists() and (folder / "fleet_table.png").exists()
    assert (folder / "s2" / "summary.json").exists()
    assert "[2/2]" in capsys.readouterr().err
    assert cli.main(["study", "fleet", "--cases", "s9", "--out", str(tmp_path)]) == 2


def test_the_fleet_power_plot_draws_s4_against_s5(run, tmp_path):
    import shutil

    from dercosim.studies.fleet import plot_fleet_power

    for case in ("s4", "s5"):
        (tmp_path / case).mkdir()
        shutil.copy(run.parquet, tmp_path / case / "timeseries.parquet")
    path = plot_fleet_power(tmp_path, tmp_path / "fleet_power.png")
    assert path.stat().st_size > 10_000


def test_the_market_is_recorded_every_minute_with_its_intervals_numbers(run):
    """The aggregator steps once per market interval, yet every recorded minute has its row, holding that
    interval's published numbers (mosaik keeps a simulator's outputs until its next step): the per-minute rows
    are constant within each 30-min interval and equal the interval table."""
    df = pd.read_parquet(run.parquet)
    m = df[df.kind == "market"].sort_values("time_s")
    assert m.time_s.tolist() == sorted(df.time_s.unique())
    table = pd.read_csv(run.out_dir / "market.csv")
    for col in ("committed_kwh", "wholesale_per_kwh", "imbalance_per_kwh", "mode_s"):
        per_interval = m[col].to_numpy().reshape(len(table), 30)
        assert (per_interval == per_interval[:, :1]).all(), col
        np.testing.assert_allclose(per_interval[:, 0], table[col].to_numpy(), rtol=1e-12)  # (the CSV's digits)
