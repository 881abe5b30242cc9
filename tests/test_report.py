"""The report of a long run streams: the kinds with a row per step and entity are read a window of whole local
days at a time, and the figures are the same as from one whole read (to the bit with one window; to the order of
floating-point additions, 1e-9 relative, with several).

The run crosses midnight (8 h from 20:00 on 1 June 2016 of ``fleet_market_s4``: 70 households, batteries, MPC,
contract, market) with a daily peak-demand charge on the tariff, so every section of the summary — voltages,
energies, bills with each day's peak, batteries, controllers, market settlement per interval — adds over two
days.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import dercosim
from dercosim.analysis import summary as summaries
from dercosim.analysis.results import Records, bus_voltages, read_recorded, rows_of
from dercosim.scenarios.load import load_scenario
from dercosim.scenarios.resolve import RunInputs
from dercosim.scenarios.world import strict_json

#: the sums of several windows against one: the order of additions only
REL = 1e-9
#: fields that are wall-clock times, not results
TIMES = {"wall_time_s", "run_wall_time_s", "ms_per_step", "versions"}


@pytest.fixture(scope="module")
def night_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    scenario = dercosim.load("fleet_market_s4").set("clock.start", "2016-06-01T20:00:00").set(
        "tariff.peak_demand_per_kw", 0.1)
    dercosim.run(scenario, until="8h", out=out, plots=False)
    return out


def _report(run_dir: Path, chunk_rows: int | None) -> tuple[dict[str, Any], pd.DataFrame, Records]:
    scenario = load_scenario(run_dir / "scenario.toml")
    run = RunInputs.resolve(scenario)
    records = Records(run_dir / "timeseries.parquet") if chunk_rows is None else Records(
        run_dir / "timeseries.parquet", chunk_rows)
    tables: dict[str, pd.DataFrame] = {}
    summary = json.loads(strict_json(summaries.summarize(records, run, 0.0, 0.0, tables)))
    return summary, tables["market"], records


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two summaries differ: keys, texts and integers exactly, floats beyond :data:`REL`."""
    if isinstance(a, dict):
        keys = (set(a) | set(b)) - TIMES
        return [d for k in sorted(keys) for d in (_differences(a.get(k), b.get(k), f"{path}.{k}")
                                                  if k in a and k in b else [f"{path}.{k}: only in one"])]
    if isinstance(a, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float):
        return [] if math.isclose(a, b, rel_tol=REL, abs_tol=1e-12) else [f"{path}: {a!r} vs {b!r}"]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def test_one_window_gives_the_runs_own_summary(night_run: Path) -> None:
    """A run of fewer rows than the window's budget is read at once: the report from the folder equals the
    summary the run wrote, to the bit, and ``market.csv`` too."""
    summary, market, records = _report(night_run, None)
    assert records.windows() == [None]
    written = json.loads((night_run / "summary.json").read_text(encoding="utf-8"))
    for key in TIMES | {"versions"}:
        written.pop(key, None)
        summary.pop(key, None)
    assert summary == written
    buf = io.StringIO()
    market.to_csv(buf, index=False)
    assert buf.getvalue() == (night_run / "market.csv").read_text(encoding="utf-8")


def test_windows_of_whole_days_give_the_same_figures(night_run: Path) -> None:
    """Cut at local midnight, the two days' partial figures add up to the whole read's: energies, bills (each
    day's peak demand charged once), voltage extremes and minutes outside limits, batteries' balances,
    controllers' counts and call times, and the market's settlement interval by interval."""
    whole, market_whole, _ = _report(night_run, None)
    split, market_split, records = _report(night_run, 20_000)
    windows = records.windows()
    assert len(windows) == 2
    feeder = records.whole("feeder").set_index("time_s")["time"]
    midnight = windows[0][1]
    assert (feeder.loc[midnight].hour, feeder.loc[midnight].minute) == (0, 0)
    assert whole["households"]["bill_total"] > 0 and whole["market"]["intervals"] == 16
    assert _differences(whole, split) == []
    pd.testing.assert_frame_equal(market_whole, market_split, rtol=REL, atol=1e-12)


def test_the_report_never_holds_a_long_run(night_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a budget below the run's rows, no read of a kind with a row per entity covers more than a window,
    and the kinds with a row per step are read a row group at a time, never filtered out of the whole file: the
    report holds one window's rows at a time (what lets a month of 2,000 homes be reported)."""
    read: list[tuple[str, int, tuple[int, int] | None]] = []
    original = Records._read

    def counting(self: Records, kind: str, window: tuple[int, int] | None = None,
                 only: list[str] | None = None) -> pd.DataFrame:
        rows = original(self, kind, window, only)
        read.append((kind, len(rows), window))
        return rows

    monkeypatch.setattr(Records, "_read", counting)
    summary, _, records = _report(night_run, 20_000)
    big = [(kind, n, w) for kind, n, w in read if kind in ("bus", "household", "battery", "controller")]
    assert big and all(w is not None for _, _, w in read)  # no kind filtered out of the whole file
    assert set(records._whole) >= {"feeder", "market", "contract"}  # those a row group at a time
    households = summary["households"]["count"]
    steps_per_window = max(w[1] - w[0] for _, _, w in big) // 60
    assert max(n for kind, n, _ in big if kind == "household") <= households * steps_per_window
    assert steps_per_window < summary["steps"]


def test_kept_step_figures_equal_the_whole_rows(night_run: Path) -> None:
    """What the figures draw from the windows — bus voltages, the batteries' band and power per step — is what
    the whole rows give."""
    whole = read_recorded(night_run / "timeseries.parquet")
    records = Records(night_run / "timeseries.parquet", 20_000)
    pd.testing.assert_frame_equal(records.vm, bus_voltages(whole))
    soc = rows_of(whole, "battery").pivot(index="time_s", columns="entity", values="soc_frac")
    power = rows_of(whole, "battery").pivot(index="time_s", columns="entity", values="p_kw")
    steps = records.battery_steps
    np.testing.assert_array_equal(steps["soc_min"], soc.min(axis=1))
    np.testing.assert_array_equal(steps["soc_max"], soc.max(axis=1))
    np.testing.assert_allclose(steps["soc_mean"], soc.mean(axis=1), rtol=0, atol=1e-15)
    np.testing.assert_allclose(steps["p_kw"], power.sum(axis=1), rtol=0, atol=1e-9)
    assert set(records.battery_soc.columns) <= set(soc.columns) and len(records.battery_soc.columns) == 3


def test_windows_keep_whole_market_intervals_and_days(night_run: Path) -> None:
    """Without a daily peak charge a window is whole hours (whole market intervals) from the first step; with
    it, whole local days cut at midnight, and if the recorded steps do not start on the market's interval grid
    no edge can be both, so the run is read at once."""
    records = Records(night_run / "timeseries.parquet", 20_000)
    first = records.windows()[0][0]
    records.interval_s = 5400  # 90-min intervals: windows of whole 3 h (whole hours and intervals) from 20:00
    assert {(w[0] - first) % 10800 for w in records.windows()} == {0}
    assert len(records.windows()) == 3  # 8 h, one 3-h unit per window within 20,000 rows
    records.midnights = True
    assert records.windows() == [None]  # 90-min intervals do not start at midnight from 20:00
    records.interval_s = 1800
    assert records.windows()[0][1] - first == 4 * 3600  # 20:00 → midnight
    moved = Records(night_run / "timeseries.parquet", 20_000)
    moved._whole["feeder"] = records.whole("feeder").iloc[15:].reset_index(drop=True)  # as if from 20:15
    moved.interval_s, moved.midnights = 1800, True
    assert moved.windows() == [None]
    moved.midnights = False
    assert [w[1] - w[0] for w in moved.windows()[:-1]] == [3600] * (len(moved.windows()) - 1)
