"""Real-time mode: steps paced to the wall clock, a deadline report per simulator, a clean abort."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from dercosim import cli
from dercosim.scenarios.load import load_scenario
from dercosim.scenarios.world import RunInterrupted, run_scenario, with_duration
from dercosim.sims import pacing
from dercosim.sims.pacing import Pacer
from dercosim.sims.recorder import STOP

SLEEPY = '''
import time


class Sleepy:
    """Sleeps beyond its slot on every call (a controller too slow for real time)."""
    period_s = 60
    inputs = ("net_kw",)
    outputs = ("p_set_kw",)

    def __init__(self, sleep_s=0.005):
        self.sleep_s = sleep_s

    def step(self, t, obs):
        time.sleep(self.sleep_s)
        return {"p_set_kw": 0.0}
'''


def test_a_fast_world_is_paced_to_the_wall_clock(tmp_path: Path):
    """At factor 600 a 30-min world takes 3 s of slots; no step starts before its slot (the pacer's own log)."""
    scenario = with_duration(load_scenario(cli.bundled_scenarios()["ieee33_households"]), 1800)
    pacer = Pacer(factor=600.0, step_s=60, deadline_ms=50.0, say=lambda msg: None)
    result = run_scenario(scenario, tmp_path / "run", progress=False, realtime=pacer)
    log = pd.read_parquet(tmp_path / "run" / "realtime.parquet")
    assert set(log.simulator) == {"Grid", "Household", "Recorder"}
    assert (log.groupby("simulator").size() == 30).all()
    assert log.start_offset_ms.min() >= -1.0  # never early (sleep's resolution: 1 ms)
    # the last step began 29 slots of 100 ms after the first: the run spanned the paced wall time
    last, first = log[log.t_s == 1740], log[log.t_s == 0]
    assert (last.start_offset_ms.to_numpy() >= -1.0).all() and len(first) == 3
    assert pacer.epoch is not None
    rt = result.summary["realtime"]
    assert rt["factor"] == 600.0 and set(rt["per_simulator"]) == {"Grid", "Household", "Recorder"}
    assert rt["per_simulator"]["Grid"]["steps"] == 30 and rt["aborted"] is None
    assert (tmp_path / "run" / "realtime_lateness.png").exists()
    assert pacing.PACER is None  # the pacer is gone after the run


def test_a_slow_controller_is_reported_late_by_name_and_the_run_stops_cleanly(tmp_path: Path, capsys):
    (tmp_path / "sleepy.py").write_text(SLEEPY)
    text = cli.bundled_scenarios()["households_pv_battery"].read_text()
    text = text.replace('controller = "rule_based"', 'controller = "sleepy.py:Sleepy"')
    path = tmp_path / "slow.toml"
    path.write_text(text)
    scenario = with_duration(load_scenario(path), 3600)
    said = []
    pacer = Pacer(factor=600.0, step_s=60, deadline_ms=20.0, abort_after=3, say=said.append)
    with pytest.raises(RunInterrupted) as err:
        run_scenario(scenario, tmp_path / "run", progress=False, realtime=pacer)
    assert err.value.signal_name == "realtime: Controller late in 3 slots in a row (tolerance 20 ms)"
    assert any(line.startswith("realtime: Controller late by") for line in said)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["interrupted"]["signal"].startswith("realtime: Controller")
    assert summary["realtime"]["per_simulator"]["Controller"]["late"] >= 3
    # 32 controllers sleeping 5 ms each: at least 160 ms per step against a 100-ms slot
    assert summary["realtime"]["per_simulator"]["Controller"]["compute_ms_mean"] >= 5.0 * 32
    recorded = pd.read_parquet(tmp_path / "run" / "timeseries.parquet")  # what ran before the stop is kept
    assert 0 < recorded.time_s.nunique() < 60
    assert not STOP.is_set()  # a later run in this process is not stopped by our flag


def test_realtime_flags_without_realtime_are_refused(tmp_path: Path, capsys):
    rc = cli.main(["run", "ieee33_households", "--deadline-ms", "5", "--out", str(tmp_path / "runs"), "--quiet"])
    assert rc == 2 and "need --realtime" in capsys.readouterr().err and not (tmp_path / "runs").exists()
    rc = cli.main(["run", "ieee33_households", "--realtime", "0", "--out", str(tmp_path / "runs"), "--quiet"])
    assert rc == 2 and "positive" in capsys.readouterr().err and not (tmp_path / "runs").exists()



def test_a_stop_while_waiting_for_a_slot_is_acted_on_at_once():
    """At factor 0.01 the second minute's slot begins 100 min after the first. A stop (SIGTERM, Ctrl-C) asked in
    between steps at once, unpaced (the recorder then ends the run), not after the slot (the old pacer slept
    through it: 40 s of a minute at --realtime 1)."""
    import threading

    pacer = Pacer(factor=0.01, step_s=60, say=lambda msg: None)
    stepped = []

    def step(sim, t, inputs, max_advance):
        stepped.append(t)
        return t + 60

    pacer.call("Sim-0", step, None, 0, {}, 0)  # its slot is now
    waiting = threading.Thread(target=pacer.call, args=("Sim-0", step, None, 60, {}, 0), daemon=True)
    STOP.clear()
    try:
        waiting.start()
        STOP.set()
        waiting.join(timeout=600)  # 6,000 s if the wait were not interrupted
    finally:
        STOP.clear()
    assert not waiting.is_alive() and stepped == [0, 60]
    assert list(pacer.table().t_s) == [0]  # the unpaced step is not timed against a slot
