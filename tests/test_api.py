"""The Python API (dercosim.load / run / Result), run --start windows, the run's recorded versions, the optional
extras' message, `show` with the controller's parameters, and -q / -v."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import dercosim as dc
from dercosim import cli
from dercosim.analysis.results import VERSIONS_KEY
from dercosim.environment import MissingExtra, require_extra

ROOT = Path(__file__).resolve().parents[1]
WALL = ["step_ms", "solve_ms", "milp_solve_ms"]  # wall-clock columns: never equal between two runs


@pytest.fixture(scope="module")
def whole_and_window(tmp_path_factory: pytest.TempPathFactory) -> tuple[dc.Result, dc.Result]:
    """households_mpc for 90 min, and its window 60..90 min run with start="1h" (the hour before simulated)."""
    base = tmp_path_factory.mktemp("api")
    whole = dc.run("households_mpc", until="90min", out=base / "whole", plots=False)
    window = dc.run("households_mpc", start="1h", until="30min", out=base / "window")
    return whole, window


def test_a_window_is_the_whole_runs_rows_to_the_bit(whole_and_window: tuple[dc.Result, dc.Result]) -> None:
    whole, window = whole_and_window
    a = pd.read_parquet(whole.parquet)
    a = a[a.time_s >= 3600].reset_index(drop=True)
    b = pd.read_parquet(window.parquet)
    assert len(b) == len(a) > 0 and b.time_s.min() == 3600
    pd.testing.assert_frame_equal(a.drop(columns=WALL, errors="ignore"), b.drop(columns=WALL, errors="ignore"))
    s = window.summary
    assert s["steps"] == 30 and s["window"]["warm_up_s"] == 3600
    assert s["start"].startswith("2016-06-21 01:00")
    # the battery energy balance holds over the window, from the SoC the window began with (not the initial one)
    assert s["batteries"]["energy_balance_max_error_kwh"] < 1e-9
    soc_before = pd.read_parquet(whole.parquet, filters=[("kind", "==", "battery"),
                                                                         ("time_s", "==", 3540)])
    name, per = next(iter(s["batteries"]["per_battery"].items()))
    assert per["soc_start_kwh"] == pytest.approx(float(soc_before.set_index("entity").loc[name, "soc_kwh"]),
                                                 abs=1e-9)


def test_result_reads_by_kind_with_filters(whole_and_window: tuple[dc.Result, dc.Result]) -> None:
    whole, _ = whole_and_window
    res = dc.Result.open(whole.out_dir)
    hh = res.households
    assert set(hh.columns) >= {"time_s", "entity", "load_kw", "pv_kw", "net_kw"} and "vm_pu" not in hh.columns
    assert len(hh) == 90 * hh.entity.nunique()
    vm = res.wide("bus", "vm_pu")
    assert vm.shape == (90, 33) and list(vm.columns) == list(range(1, 34))
    assert float(vm[1].min()) == pytest.approx(1.0, abs=1e-9)  # the slack bus holds its set voltage
    names = sorted(hh.entity.unique())[:2]
    part = res.frame("household", ["net_kw"], start_s=600, end_s=1200, entities=names)
    assert list(part.columns) == ["time_s", "time", "entity", "bus", "net_kw"]
    assert part.time_s.min() == 600 and part.time_s.max() == 1140 and sorted(part.entity.unique()) == names
    # the same numbers as the whole table
    full = pd.read_parquet(res.parquet)
    ref = full[(full.kind == "household") & full.entity.isin(names) & (full.time_s >= 600) & (full.time_s < 1200)]
    np.testing.assert_array_equal(part.sort_values(["time_s", "entity"]).net_kw.to_numpy(),
                                  ref.sort_values(["time_s", "entity"]).net_kw.to_numpy())
    with pytest.raises(KeyError, match="household has no column 'vm_pu'"):
        res.frame("household", ["vm_pu"])
    assert res.summary == json.loads((res.out_dir / "summary.json").read_text())


def test_result_draws_each_figure_on_request(whole_and_window: tuple[dc.Result, dc.Result]) -> None:
    whole, _ = whole_and_window
    assert not (whole.out_dir / "voltage_envelope.png").exists()  # plots=False
    fig = whole.plot.voltage_envelope(save=True)
    assert (whole.out_dir / "voltage_envelope.png").stat().st_size > 10_000
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert any("slack bus 1 left out" in label for label in labels)
    # the max over buses leaves the slack (1.0 pu) out: it is the highest other bus
    vm = whole.wide("bus", "vm_pu").drop(columns=[1])
    drawn_max = next(line for line in fig.axes[0].get_lines() if line.get_label().startswith("max"))
    np.testing.assert_allclose(drawn_max.get_ydata(), vm.max(axis=1).to_numpy())
    assert "batteries" in dir(whole.plot)
    with pytest.raises(AttributeError, match="no figure 'nope'"):
        whole.plot.nope()
    with pytest.raises(ValueError, match="nothing to draw in 'market'"):
        whole.plot.market()


def test_open_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="timeseries.parquet and summary.json missing"):
        dc.Result.open(tmp_path)


def test_set_validates_the_whole_scenario_and_leaves_it_unchanged_on_error() -> None:
    sc = dc.load("fleet_market_s4")
    assert sc.set("contract.interval_s", 60) is sc and sc.contract.interval_s == 60 and sc.checked
    with pytest.raises(dc.ScenarioError, match=r"contract\.interval_s"):
        sc.set("contract.interval_s", 7)
    with pytest.raises(dc.ScenarioError, match="hems.params.no_such: unknown parameter"):
        sc.set("hems.params.no_such", 1)
    assert sc.contract.interval_s == 60 and sc.checked
    sc.set("seed", 3)
    assert sc.seed == 3


def test_a_window_must_start_on_a_step_within_the_run_and_on_a_market_interval() -> None:
    sc = dc.load("fleet_market_s4")
    with pytest.raises(dc.ScenarioError, match="not on a market interval"):
        dc.api.window(sc, "10:15")
    with pytest.raises(dc.ScenarioError, match="must fall within"):
        dc.api.window(sc, "2016-06-22 10:00")
    with pytest.raises(dc.ScenarioError, match="expected a time of day"):
        dc.api.window(sc, "25:00")
    scenario, offset = dc.api.window(sc, "10:00", "2h")
    assert offset == 36000 and scenario.clock.duration == 36000 + 7200


def test_the_run_records_the_software_that_produced_it(whole_and_window: tuple[dc.Result, dc.Result]) -> None:
    whole, _ = whole_and_window
    in_summary = whole.summary["versions"]
    in_parquet = json.loads(pq.read_schema(whole.parquet).metadata[VERSIONS_KEY])
    assert in_summary["dercosim"] == dc.__version__ == in_parquet["dercosim"]
    import casadi
    import pandapower

    assert in_summary["casadi"] == casadi.__version__ and in_summary["pandapower"] == pandapower.__version__
    assert in_summary["python"] == ".".join(map(str, sys.version_info[:3]))
    commit = in_summary["commit"]  # the checkout's commit (+dirty), or None outside a checkout of dercosim
    assert commit is None or len(commit.split("+")[0]) == 40


def test_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vyper" else real(name, *a))
    with pytest.raises(MissingExtra, match=r"pip install 'dercosim\[evm\]'"):
        require_extra("evm")
    sc = dc.load("fleet_market_s4")
    with pytest.raises(dc.ScenarioError, match=r"contract.engine: .*dercosim\[evm\]"):
        sc.set("contract.engine", "evm")


def test_show_prints_the_controllers_parameters_with_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["show", "fleet_market_s4"]) == 0
    out = capsys.readouterr().out
    assert "# controller 'mpc'" in out
    assert "# * use_contract = true" in out and "default false" in out  # set by the scenario
    assert "#   qp_solver = \"ipm\"" in out  # a default


def test_quiet_and_verbose(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "ieee33_households", "--until", "2min", "--out", str(tmp_path / "q"), "-q"]) == 0
    quiet = capsys.readouterr()
    assert "dercosim:" not in quiet.err and "results in" in quiet.out
    assert cli.main(["run", "ieee33_households", "--until", "2min", "--out", str(tmp_path / "v"), "-v"]) == 0
    verbose = capsys.readouterr()
    assert "versions: dercosim" in verbose.err and "dercosim:" in verbose.err


def test_the_api_tour_runs(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "api_tour.py"), str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "refused: households_mpc (set batteries.groups[0].capacity_kwh = -5)" in done.stdout
    assert "steps recorded: 60" in done.stdout
    assert dc.Result.open(tmp_path / "api-tour").summary["window"]["warm_up_s"] == 6 * 3600
