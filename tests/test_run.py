"""End to end: a scenario runs in mosaik, writes parquet/summary/plots that agree, reproducibly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from dercosim.grids.ieee33 import BASE_P_KW_TOTAL, base_load_kw
from dercosim import cli
from dercosim.scenarios.config import Scenario
from dercosim.scenarios.load import load_scenario
from dercosim.scenarios.world import run_scenario, with_duration
from dercosim.sims.recorder import RecorderSim

HOURS = 3


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, default_scenario_path) -> Path:
    out = tmp_path_factory.mktemp("runs")
    assert cli.main(["run", str(default_scenario_path), "--until", f"{HOURS}h", "--out", str(out), "--quiet"]) == 0
    (run_dir,) = out.iterdir()
    return run_dir


def small_scenario(**grid) -> Scenario:
    return Scenario.model_validate({
        "name": "small", "seed": 7, "clock": {"start": "2016-06-21T10:00:00", "duration": "1h"},
        "grid": grid,
        "households": {"groups": [{"buses": [6, 18, 33], "per_bus": 2, "pv_share": 0.5}]},
    })


def test_run_folder_has_everything(default_run: Path, default_scenario_path):
    assert default_run.name.startswith("ieee33_households-")
    for name in ("scenario.toml", "households.csv", "timeseries.parquet", "summary.json",
                 "voltage_envelope.png", "feeder_head_power.png", "voltage_profile_worst.png"):
        assert (default_run / name).stat().st_size > 0, name
    assert not (default_run / "timeseries.parquet.parts").exists()
    # the resolved scenario loads back, with the run length actually used
    resolved = load_scenario(default_run / "scenario.toml")
    original = load_scenario(default_scenario_path)
    assert resolved.clock.duration == HOURS * 3600
    assert resolved.model_dump(exclude={"clock"}) == original.model_dump(exclude={"clock"})


def test_parquet_columns_and_one_row_per_minute_per_entity(default_run: Path):
    df = pd.read_parquet(default_run / "timeseries.parquet")
    households = pd.read_csv(default_run / "households.csv")
    expected = {"time_s", "time", "entity", "kind", "bus", "vm_pu", "va_degree", "p_net_kw", "losses_kw",
                "p_head_kw", "converged", "load_kw", "pv_kw", "net_kw", "q_kvar"}
    assert expected <= set(df.columns)
    n_min = HOURS * 60
    assert sorted(df.time_s.unique()) == list(range(0, n_min * 60, 60))
    counts = df.groupby("entity").size()
    assert len(counts) == 1 + 33 + len(households)
    assert (counts == n_min).all()
    assert set(df[df.kind == "household"].entity) == set(households.name)
    assert df[df.kind == "bus"].bus.min() == 1 and df[df.kind == "bus"].bus.max() == 33
    # streamed: at least one row group per simulated hour
    assert pq.ParquetFile(default_run / "timeseries.parquet").metadata.num_row_groups >= HOURS
    assert str(df.time.iloc[0]) == "2016-06-21 00:00:00-05:00"


def strict_json(path: Path) -> dict:
    def no_nan(token: str) -> None:
        raise ValueError(f"{path} holds {token}")
    return json.loads(path.read_text(), parse_constant=no_nan)


def test_summary_agrees_with_parquet(default_run: Path):
    s = strict_json(default_run / "summary.json")
    df = pd.read_parquet(default_run / "timeseries.parquet")
    bus = df[df.kind == "bus"]
    feeder = df[df.kind == "feeder"]
    hh = df[df.kind == "household"]
    assert s["steps"] == HOURS * 60
    assert s["powerflow"]["solves"] == HOURS * 60 and s["powerflow"]["failures"] == 0
    assert s["voltage"]["min_pu"] == pytest.approx(bus.vm_pu.min(), abs=1e-12)
    assert s["voltage"]["min_bus"] == int(bus.loc[bus.vm_pu.idxmin(), "bus"])
    assert s["voltage"]["max_pu"] == pytest.approx(bus.vm_pu.max(), abs=1e-12)
    assert s["voltage"]["per_bus"]["18"]["min_pu"] == pytest.approx(bus[bus.bus == 18].vm_pu.min())
    assert s["energy_kwh"]["line_losses"] == pytest.approx(feeder.losses_kw.sum() / 60)
    assert s["households"]["load_kwh"] == pytest.approx(hh.load_kw.sum() / 60)
    # physics: the head supplies base load + household net + losses
    head = feeder.p_head_kw.to_numpy()
    supplied = feeder.base_p_kw.to_numpy() + hh.groupby("time_s").net_kw.sum().to_numpy() + feeder.losses_kw.to_numpy()
    np.testing.assert_allclose(head, supplied, rtol=1e-6)
    # the households' net power arrives at their buses
    t0 = bus[bus.time_s == 0].set_index("bus")
    hh0 = hh[hh.time_s == 0].groupby("bus").net_kw.sum()
    base_factor = feeder.base_p_kw.iloc[0] / BASE_P_KW_TOTAL
    for b, net in hh0.items():
        expected = base_load_kw()[0][int(b) - 1] * base_factor + net
        assert t0.loc[b, "p_net_kw"] == pytest.approx(expected, rel=1e-9)


def test_same_seed_same_numbers_and_shorter_run_is_a_prefix(tmp_path: Path):
    a = run_scenario(small_scenario(), tmp_path / "a", progress=False)
    b = run_scenario(small_scenario(), tmp_path / "b", progress=False)
    df_a, df_b = pd.read_parquet(a.parquet), pd.read_parquet(b.parquet)
    pd.testing.assert_frame_equal(df_a, df_b)
    short = run_scenario(with_duration(small_scenario(), 1800), tmp_path / "c", progress=False)
    df_c = pd.read_parquet(short.parquet)
    pd.testing.assert_frame_equal(df_c, df_a[df_a.time_s < 1800].reset_index(drop=True))
    other = small_scenario().model_copy(update={"seed": 8})
    df_d = pd.read_parquet(run_scenario(other, tmp_path / "d", progress=False).parquet)
    assert not np.allclose(df_d.load_kw.dropna(), df_a.load_kw.dropna())


def test_diverged_power_flow_in_a_run_is_counted_and_the_run_continues(tmp_path: Path):
    # 5 x base load collapses the feeder at the evening peak but not at night
    scenario = Scenario.model_validate({
        "name": "collapse", "clock": {"start": "2016-06-21T00:00:00", "duration": "1d"},
        "grid": {"base_load": {"scale": 5.0}},
    })
    result = run_scenario(scenario, tmp_path / "collapse", progress=False)
    feeder = pd.read_parquet(result.parquet).query("kind == 'feeder'").set_index("time_s")
    failed = ~feeder.converged.astype(bool)
    assert 0 < failed.sum() < len(feeder)
    assert result.summary["powerflow"]["failures"] == int(failed.sum())
    assert feeder.loc[failed, "vm_min_pu"].isna().all() and feeder.loc[failed, "losses_kw"].isna().all()
    # after the last failure, the feeder converges again (it does not carry the failed state)
    last_failure = feeder.index[failed.to_numpy()].max()
    assert feeder.loc[feeder.index > last_failure, "converged"].astype(bool).all()
    assert (feeder.index > last_failure).sum() > 0


def test_recorder_kill_loses_at_most_the_flushes_not_yet_on_disk(tmp_path: Path):
    sim = RecorderSim()
    sim.init("Recorder-0", step_s=60)
    path = tmp_path / "ts.parquet"
    entities = {"G.feeder": {"entity": "feeder", "kind": "feeder", "bus": None}}
    sim.create(1, "Recorder", path=str(path), entities=entities, columns={"losses_kw": "float64"},
               start="2016-06-21T00:00:00", tz="Etc/GMT+5", flush_every_s=3600)
    for k in range(150):  # 2.5 simulated hours, then the process "dies" (no finalize)
        sim.step(60 * k, {"recorder": {"losses_kw": {"G.feeder": float(k)}}}, 10**9)
    # at any instant what is on disk reads: whole hours (the second part may still be being written)
    survived = pd.read_parquet(tmp_path / "ts.parquet.parts")
    assert len(survived) in (60, 120)
    assert survived.losses_kw.tolist() == [float(k) for k in range(len(survived))]
    sim.wait_written()
    survived = pd.read_parquet(tmp_path / "ts.parquet.parts")
    assert len(survived) == 120  # two hourly flushes made it to disk; the last half hour is lost
    assert survived.losses_kw.tolist() == [float(k) for k in range(120)]
    sim.finalize()
    assert len(pd.read_parquet(path)) == 150


def test_recorder_writes_the_whole_file_as_it_goes_and_joins_the_parts_if_that_file_failed(tmp_path: Path):
    """Each flush is a part and a row group of the whole file (one per simulated hour here); at the end that file
    is renamed into place and the parts removed. If writing the whole file fails mid-run, nothing is lost: the
    parts are joined instead, to the same rows. A run shorter than one flush is written straight to its file."""
    import pyarrow.parquet as pq

    def record(folder: Path, break_whole_after: int | None, steps: int = 150) -> Path:
        folder.mkdir()
        sim = RecorderSim()
        sim.init("Recorder-0", step_s=60)
        path = folder / "ts.parquet"
        sim.create(1, "Recorder", path=str(path), entities={"G.feeder": {"entity": "feeder", "kind": "feeder",
                                                                        "bus": None}},
                   columns={"losses_kw": "float64"}, start="2016-06-21T00:00:00", tz="UTC", flush_every_s=3600)
        for k in range(steps):
            sim.step(60 * k, {"recorder": {"losses_kw": {"G.feeder": float(k)}}}, 10**9)
            if break_whole_after is not None and k == break_whole_after:
                sim.wait_written()
                assert sim._whole is not None and sim._whole_tmp.exists()  # the whole file is being written
                sim._whole.close()  # a writer that fails from now on (as a full disk would)
        sim.finalize()
        assert sim._whole_failed == (break_whole_after is not None)  # the broken writer was noticed
        assert not (folder / "ts.parquet.parts").exists() and not sim._whole_tmp.exists()
        return path

    whole = record(tmp_path / "whole", None)
    joined = record(tmp_path / "joined", 70)
    for path in (whole, joined):
        assert pq.ParquetFile(path).metadata.num_row_groups == 3  # 60, 60 and 30 minutes
        assert pd.read_parquet(path).losses_kw.tolist() == [float(k) for k in range(150)]
    short = record(tmp_path / "short", None, steps=45)
    assert pq.ParquetFile(short).metadata.num_row_groups == 1 and sorted(p.name for p in short.parent.iterdir()) == \
        ["ts.parquet"]
    assert pd.read_parquet(short).losses_kw.tolist() == [float(k) for k in range(45)]


def _recorder(tmp_path: Path, **create: object) -> tuple[RecorderSim, Path]:
    """A recorder of two batteries and a feeder, registered in the order bat_1, feeder, bat_0."""
    sim = RecorderSim()
    sim.init("Recorder-0", step_s=60)
    path = tmp_path / "ts.parquet"
    entities = {"B.bat_1": {"entity": "bat_1", "kind": "battery", "bus": 7},
                "G.feeder": {"entity": "feeder", "kind": "feeder", "bus": None},
                "B.bat_0": {"entity": "bat_0", "kind": "battery", "bus": 3}}
    sim.create(1, "Recorder", path=str(path), entities=entities,
               columns={"soc_kwh": "float64", "converged": "bool", "losses_kw": "float64"},
               start="2016-06-21T00:00:00", tz="UTC", flush_every_s=3600, **create)
    return sim, path


def test_recorder_rows_follow_registration_order_and_keep_gaps_and_booleans(tmp_path: Path):
    """One row per entity that sent data, in the order the world registered them; an attribute an entity
    does not have is null (not 0); a value mosaik passes as None is null; booleans stay booleans."""
    sim, path = _recorder(tmp_path)
    sim.step(0, {"recorder": {"soc_kwh": {"B.bat_0": 1.5, "B.bat_1": None},
                              "converged": {"G.feeder": True}, "losses_kw": {"G.feeder": 2.0}}}, 10**9)
    sim.step(60, {"recorder": {"soc_kwh": {"B.bat_0": 1.25}}}, 10**9)  # only one entity this step
    sim.finalize()
    df = pd.read_parquet(path)
    assert df.entity.tolist() == ["bat_1", "feeder", "bat_0", "bat_0"]
    assert df.time_s.tolist() == [0, 0, 0, 60]
    assert df.bus.isna().tolist() == [False, True, False, False] and df.bus.iloc[0] == 7
    assert df.soc_kwh.isna().tolist() == [True, True, False, False]
    assert df.soc_kwh.iloc[2:].tolist() == [1.5, 1.25]
    assert df.converged.iloc[1] == True and df.converged.isna().tolist() == [True, False, True, True]  # noqa: E712
    assert df.losses_kw.iloc[1] == 2.0 and str(df.time.dt.tz) == "UTC"


def test_recorder_takes_whole_columns_from_a_table_and_readers_get_each_kinds_own_columns(tmp_path: Path):
    """A simulator's Table entity hands over {attribute: values in a fixed entity order} (one mosaik value per
    simulator, not per entity); the rows are those per-entity inputs would give, and ``read_recorded`` returns
    each kind's rows with the columns recorded for that kind (the file's metadata names them)."""
    from dercosim.analysis.results import read_recorded

    sim, path = _recorder(tmp_path, tables={"B.__table__": {"soc_kwh": ["B.bat_0", "B.bat_1"]},
                                            "G.__table__": {"converged": ["G.feeder"], "losses_kw": ["G.feeder"]}})
    sim.step(0, {"recorder": {"table": {"B.__table__": {"soc_kwh": [1.5, None]},
                                        "G.__table__": {"converged": [True], "losses_kw": [2.0]}}}}, 10**9)
    sim.step(60, {"recorder": {"table": {"B.__table__": {"soc_kwh": [1.25, 4.0]}}}}, 10**9)
    sim.finalize()
    df = pd.read_parquet(path)
    assert df.entity.tolist() == ["bat_1", "feeder", "bat_0", "bat_1", "bat_0"]  # registration order
    assert df.soc_kwh.isna().tolist() == [True, True, False, False, False]
    assert df.soc_kwh.dropna().tolist() == [1.5, 4.0, 1.25]
    assert df.converged.iloc[1] == True and df.losses_kw.iloc[1] == 2.0  # noqa: E712
    recorded = read_recorded(path)
    assert sorted(recorded) == ["battery", "feeder"]
    assert list(recorded["battery"].columns) == ["time_s", "time", "entity", "kind", "bus", "soc_kwh"]
    assert list(recorded["feeder"].columns) == ["time_s", "time", "entity", "kind", "bus", "converged", "losses_kw"]
    pd.testing.assert_frame_equal(recorded["battery"], df[df.kind == "battery"][recorded["battery"].columns]
                                  .reset_index(drop=True), check_dtype=False)  # bus: int16 without the feeder


def test_a_runs_report_reads_each_kind_with_its_own_columns(default_run: Path):
    """What the report reads (``read_recorded``) is the parquet split by kind; a column left out of a kind is
    empty for that kind in the file."""
    from dercosim.analysis.results import read_recorded

    df = pd.read_parquet(default_run / "timeseries.parquet")
    recorded = read_recorded(default_run / "timeseries.parquet")
    assert sorted(recorded) == sorted(df.kind.unique()) == ["bus", "feeder", "household"]
    for kind, rows in recorded.items():
        full = df[df.kind == kind].reset_index(drop=True)
        pd.testing.assert_frame_equal(rows, full[rows.columns], check_dtype=False)  # bus: int16 within a kind
        left_out = [c for c in df.columns if c not in rows.columns]
        assert full[left_out].isna().all().all(), kind
    assert "net_kw" in recorded["household"] and "vm_pu" not in recorded["household"]


def test_a_run_where_nothing_converges_still_reports(tmp_path: Path):
    scenario = Scenario.model_validate({"name": "allfail", "clock": {"duration": "10min"},
                                        "grid": {"base_load": {"scale": 6.0, "shape": "flat"}}})
    run_scenario(scenario, tmp_path / "allfail", progress=False)
    s = strict_json(tmp_path / "allfail" / "summary.json")
    assert s["powerflow"]["failures"] == s["steps"] == 10
    assert s["voltage"]["min_pu"] is None and s["voltage"]["per_bus"]["18"]["min_pu"] is None
    # nothing is known about the feeder: null, not "0.0 minutes outside limits" or "0.0 kWh losses"
    assert s["voltage"]["minutes_outside_limits"] is None and s["voltage"]["minutes_below_min"] is None
    assert s["energy_kwh"]["line_losses"] is None and s["energy_kwh"]["feeder_head_import"] is None
    assert (tmp_path / "allfail" / "voltage_envelope.png").exists()


def test_run_set_and_seed_override_keys_and_are_checked_like_the_file(tmp_path: Path, capsys):
    """`run --set KEY=VALUE` (sweep's syntax, one value) and `--seed N` change the scenario the run records; a wrong
    key or a sweep's list is one clear line before anything is written."""
    base = cli.bundled_scenarios()["households_pv_battery"]
    out = tmp_path / "runs"
    assert cli.main(["run", str(base), "--until", "10min", "--out", str(out), "--quiet", "--seed", "7",
                     "--set", "batteries.groups[0].capacity_kwh=7.5", "--set", "tariff.import_per_kwh=0.2"]) == 0
    (folder,) = out.iterdir()
    ran = load_scenario(folder / "scenario.toml")
    assert ran.seed == 7 and ran.batteries.groups[0].capacity_kwh == 7.5 and ran.tariff.import_per_kwh == 0.2
    assert json.loads((folder / "summary.json").read_text())["seed"] == 7
    capsys.readouterr()
    for args, words in ((["--set", "batteries.groups[0].capacity_kwh=-1"], "batteries.groups[0].capacity_kwh: Input should be greater than 0"),
                        (["--set", "clock.step_s=60,120"], "one value per key"),
                        (["--set", "nonsense.key=1"], "nonsense")):
        assert cli.main(["run", str(base), "--out", str(tmp_path / "bad"), "--quiet", *args]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
    assert not (tmp_path / "bad").exists()


def test_version(capsys):
    from dercosim import __version__

    with pytest.raises(SystemExit) as end:
        cli.main(["--version"])
    assert end.value.code == 0 and capsys.readouterr().out.strip() == f"dercosim {__version__}"
