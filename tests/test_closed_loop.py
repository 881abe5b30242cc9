"""The loop closed: market commitments, the smart contract every minute, household MPCs, PMS, AC power flow.

Six households with PV or small wind and a battery, a 40-kWp plant of the aggregator, perfect forecasts,
three sunny hours of 1 June 2016 (the MPC at 120 s over six households keeps this test at seconds; a whole
day of the 70-household s4 waits for the fleet-scale speed work).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dercosim.scenarios.config import Scenario
from dercosim.scenarios.world import run_scenario

sys.path.insert(0, str(Path(__file__).parent))
from test_fleet_market import small_fleet  # noqa: E402


def loop(contract: dict | None, duration: str = "3h", **hems) -> Scenario:
    s = small_fleet().model_dump()
    s["name"] = "closed" if contract else "open"
    s["clock"] = {"start": "2016-06-01T10:00:00", "duration": duration}
    s["households"]["groups"][0]["per_bus"] = 1
    s["batteries"]["groups"][0]["default_mode"] = "idle"
    s["hems"] = {"controller": "mpc", "applies_to": "with_battery",
                 "params": {"period_s": 120, "forecaster": "perfect", "use_contract": contract is not None, **hems}}
    if contract is not None:
        s["contract"] = contract
    return Scenario.model_validate(s)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("loop")
    return {"open": run_scenario(loop(None), out / "open", progress=False),
            "closed": run_scenario(loop({"interval_s": 60}), out / "closed", progress=False)}


def test_the_contract_makes_the_fleet_deliver_what_it_committed(runs):
    closed, open_ = runs["closed"].summary["market"], runs["open"].summary["market"]
    assert closed["committed_kwh"] == pytest.approx(open_["committed_kwh"])  # the same day-ahead plan
    assert closed["committed_kwh"] > 50
    # within 5 % of the commitments on average and in total, and far closer than without coordination
    assert closed["mean_abs_deviation_of_committed"] <= 0.05
    assert abs(closed["delivered_kwh"] - closed["committed_kwh"]) <= 0.05 * closed["committed_kwh"]
    assert closed["mean_abs_deviation_of_committed"] < 0.25 * open_["mean_abs_deviation_of_committed"]
    assert closed["imbalance_cost"] < open_["imbalance_cost"]


def test_every_minute_a_round_and_no_message_late_on_a_fast_network(runs):
    c = runs["closed"].summary["contract"]
    # 180 rounds sent; the last one closes 10 s after the run's last step
    assert c["contract_rounds"] == 179 and c["reports_late"] == 0 and c["members"] == 6
    assert c["meters"] == 1  # the aggregator's plant reports its export: RE is the whole portfolio's
    df = pd.read_parquet(runs["closed"].parquet, filters=[("kind", "==", "member")])
    assert df["w_export"].notna().any() and np.isfinite(df["re_kwh"]).all()


def test_a_latency_longer_than_the_round_makes_reports_late_and_the_summary_counts_them(tmp_path):
    slow = run_scenario(loop({"interval_s": 60, "latency": {"kind": "constant", "a": 90.0}}, duration="30min"),
                        tmp_path / "slow", progress=False)
    c = slow.summary["contract"]
    assert c["reports_late"] > 0 and c["contract_rounds"] == 29


def test_same_seed_same_contract_messages_and_settlement(tmp_path):
    lossy = {"interval_s": 60, "latency": {"kind": "lognormal", "a": 20.0, "b": 1.0}, "loss_prob": 0.2}
    a = run_scenario(loop(lossy, duration="1h"), tmp_path / "a", progress=False)
    b = run_scenario(loop(lossy, duration="1h"), tmp_path / "b", progress=False)
    for r in (a, b):
        assert r.summary["contract"]["reports_lost"] + r.summary["contract"]["replies_lost"] > 0
    cols = ["time_s", "entity", "re_kwh", "w_export", "w_import"]
    ma = pd.read_parquet(a.parquet, filters=[("kind", "==", "member")])[cols]
    mb = pd.read_parquet(b.parquet, filters=[("kind", "==", "member")])[cols]
    pd.testing.assert_frame_equal(ma.reset_index(drop=True), mb.reset_index(drop=True))
    pd.testing.assert_frame_equal(pd.read_csv(a.out_dir / "market.csv"), pd.read_csv(b.out_dir / "market.csv"))


def test_sensitivity_studies_vary_one_key_per_run_as_a_sweep(tmp_path, capsys):
    from dercosim import cli
    from dercosim.scenarios.config import scenario_to_toml

    path = tmp_path / "loop.toml"
    s = loop({"interval_s": 60}, duration="1h")
    s = s.model_copy(update={"market": s.market.model_copy(update={"forecast": s.market.forecast.model_copy(
        update={"kind": "noisy"})})})
    path.write_text(scenario_to_toml(s))
    assert cli.main(["study", "contract-interval", str(path), "--until", "1h", "--intervals", "1,15",
                     "--out", str(tmp_path / "ci")]) == 0
    (folder,) = (tmp_path / "ci").iterdir()
    table = pd.read_csv(folder / "contract-interval.csv")
    assert list(table.case) == ["t_sc=1min", "t_sc=15min"] and (folder / "contract-interval.png").exists()
    runs = {c: json_summary(folder / "cases" / c) for c in table.case}
    assert list(table.status) == ["ok", "ok"] and (folder / "sweep.parquet").exists()  # the sweep machinery
    assert runs["t_sc=1min"]["contract"]["interval_s"] == 60 and runs["t_sc=15min"]["contract"]["interval_s"] == 900
    assert runs["t_sc=1min"]["contract"]["contract_rounds"] > runs["t_sc=15min"]["contract"]["contract_rounds"]
    assert cli.main(["study", "forecast", str(path), "--until", "1h", "--accuracy", "0,0.5", "--steps", "120",
                     "--out", str(tmp_path / "fc")]) == 0
    (folder,) = (tmp_path / "fc").iterdir()
    table = pd.read_csv(folder / "forecast.csv")
    assert list(table.case) == ["acc=0_step=120min", "acc=0.5_step=120min"]
    assert cli.main(["study", "forecast", str(path), "--accuracy", "2", "--out", str(tmp_path / "bad")]) == 2
    assert "accuracy" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def json_summary(folder):
    import json

    return json.loads((folder / "summary.json").read_text())


def test_the_mpcs_batched_or_on_two_threads_give_the_same_numbers_as_one_by_one(tmp_path):
    """The host solves the due MPCs of a minute in one batch (``step_many``) or calls them on a pool; either way
    the numbers are those of one household after another."""
    frames = []
    for threads, batch in ((1, False), (2, False), (1, True), (2, True)):
        s = loop({"interval_s": 300}, duration="30min").model_dump()
        s["hems"].update(threads=threads, batch=batch)
        result = run_scenario(Scenario.model_validate(s), tmp_path / f"t{threads}{batch}", progress=False)
        df = pd.read_parquet(result.parquet)
        frames.append(df[[c for c in df.columns if not c.endswith("_ms")]])
    assert (frames[0]["fallback"] == 0).sum() > 50  # the MPCs solved (one row per household and call)
    for other in frames[1:]:
        pd.testing.assert_frame_equal(frames[0], other, check_exact=True)


def test_qp_horizon_remaining_delivers_the_same_commitments(tmp_path, runs):
    """The MPC on QPs the size of the minutes left (faster): the same market outcome as the interval-sized QPs
    within 1 % of the energy committed; not the same numbers minute by minute (the README says why)."""
    fast = run_scenario(loop({"interval_s": 60}, qp_horizon="remaining"), tmp_path / "remaining", progress=False)
    ctrl = pd.read_parquet(fast.parquet, filters=[("kind", "==", "controller")])
    assert ctrl.fallback.fillna(0).sum() == 0 and (ctrl.fallback == 0).sum() > 100
    a, b = runs["closed"].summary["market"], fast.summary["market"]
    assert b["committed_kwh"] == pytest.approx(a["committed_kwh"])
    assert abs(b["delivered_kwh"] - a["delivered_kwh"]) <= 0.01 * a["committed_kwh"]


def test_whole_column_links_between_simulators_give_the_per_entity_connections_numbers(tmp_path, monkeypatch):
    """Households, batteries, buses, controllers, contract members and the aggregator exchange whole columns, one
    mosaik connection per pair of simulators (sims/tables.py); with one connection per entity instead, every
    recorded number is the same."""
    from dercosim.scenarios import world

    frames = []
    for links in (True, False):
        monkeypatch.setattr(world, "TABLE_LINKS", links)
        result = run_scenario(loop({"interval_s": 300}, duration="40min"), tmp_path / str(links), progress=False)
        df = pd.read_parquet(result.parquet)
        frames.append(df[[c for c in df.columns if not c.endswith("_ms")]])
    assert {"battery", "controller", "member", "contract", "market"} <= set(frames[0].kind)
    pd.testing.assert_frame_equal(frames[0], frames[1], check_exact=True)
