"""The learning environments: gymnasium's and PettingZoo's own checks, rewards that are the recorded bills,
actions that reach the batteries, the other households untouched, determinism, no leaks across resets,
closing mid-episode, the market and contract, validate on an episode's record, and the training example."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gymnasium")
pytest.importorskip("pettingzoo")

import dercosim as dc  # noqa: E402
from dercosim.gym import DercosimEnv, parallel_env  # noqa: E402
from dercosim.scenarios.config import ScenarioError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def afternoon(duration: str = "1h"):
    """households_pv_battery (IEEE-33, 32 batteries, rule-based) from 12:00: PV surplus, batteries active."""
    sc = dc.load("households_pv_battery")
    sc.set("clock.start", "2016-06-21T12:00")
    sc.set("clock.duration", duration)
    return sc


def test_gymnasium_env_checker_passes():
    from gymnasium.utils.env_checker import check_env

    env = DercosimEnv(afternoon(), episode="30min", households=3)
    try:
        check_env(env, skip_render_check=True)
    finally:
        env.close()
    import gymnasium

    made = gymnasium.make("dercosim/Dercosim-v0", scenario="households_pv_battery", episode="1d", households=2)
    try:  # by id, with gymnasium's own wrappers; a bundled scenario by its name
        obs, info = made.reset(seed=0)
        assert obs.shape == made.observation_space.shape and info["episode"] == 0
        made.step(made.action_space.sample())
    finally:
        made.close()


def test_pettingzoo_parallel_api_test_passes():
    from pettingzoo.test import parallel_api_test

    env = parallel_env(afternoon(), episode="30min", households=3)
    try:
        assert env.possible_agents == ["hh_007", "hh_008", "hh_009"]  # the first households with a battery
        parallel_api_test(env, num_cycles=40)  # past the episode's end (30 steps): agents leave at truncation
    finally:
        env.close()


def test_rewards_are_the_recorded_bills_and_actions_reach_the_batteries(tmp_path):
    """The episode's rewards sum to minus the recorded bills of the controlled households (the summary's own
    tariff arithmetic on the recorded meters), and each action is the battery's setpoint, scaled to its limits."""
    env = DercosimEnv(afternoon(), episode="1h", households=4, record=True, runs_dir=tmp_path,
                      reward=lambda rec: -rec.bill())
    rng = np.random.default_rng(3)
    obs, info = env.reset(seed=0)
    assert info["time"].hour == 12 and obs.shape == (4, len(env.observation_names))
    actions, total, truncated = [], 0.0, False
    while not truncated:
        a = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        actions.append(a[:, 0])
        obs, reward, terminated, truncated, info = env.step(a)
        total += reward
        assert not terminated
    assert len(actions) == 60 and info["t_s"] == 3600
    res = dc.Result.open(info["run_dir"])
    bills = res.summary["households"]["per_household"]
    assert res.summary["steps"] == 60  # the extra step that gave the last observation is not recorded
    assert total == pytest.approx(-sum(bills[n]["bill"] for n in env.households), abs=1e-12)
    bat = res.batteries.set_index(["time_s", "entity"])
    for i, name in enumerate(env.households):
        p_set = bat.xs(f"bat_{name}", level="entity")["p_set_kw"].to_numpy()
        a = np.array([x[i] for x in actions], dtype=np.float64)
        assert np.allclose(p_set, np.where(a >= 0, a * 5.3, a * 5.3), atol=1e-6)  # 5.3 kW both ways
        assert (bat.xs(f"bat_{name}", level="entity")["follow_residual"] == 0).all()
    # the run folder of an episode is a run folder: validate holds it against AC power flow
    from dercosim.analysis.validate import validate

    report = validate(info["run_dir"], models=["lindistflow_squared"], engine_minutes=5)
    assert report["engine_check"]["agrees"] and report["engine_check"]["minutes"] == 5
    assert report["models"]["lindistflow_squared"]["max_abs_error_pu"] < 0.01


def test_other_households_keep_the_scenario_controller(tmp_path):
    """Batteries the agent does not control follow the scenario's rule-based controller exactly as in a plain run
    of the same hour (their physics do not see the agent's households), while the agent's differ."""
    env = DercosimEnv(afternoon(), episode="1h", households=4, record=True, runs_dir=tmp_path / "env")
    env.reset(options={"episode": 0})
    truncated = False
    while not truncated:
        _, _, _, truncated, info = env.step(-np.ones(env.action_space.shape, dtype=np.float32))
    episode = dc.Result.open(info["run_dir"]).batteries.set_index(["time_s", "entity"]).sort_index()
    plain = dc.run(afternoon(), out=tmp_path / "plain", plots=False).batteries
    plain = plain.set_index(["time_s", "entity"]).sort_index()
    others = [e for e in plain.index.get_level_values("entity").unique() if e.removeprefix("bat_") not in env.households]
    assert len(others) == 28
    cols = ["p_kw", "soc_kwh", "meter_kw"]
    o = episode.loc[(slice(None), others), cols]
    assert np.array_equal(o.to_numpy(), plain.loc[o.index, cols].to_numpy())
    mine = [f"bat_{n}" for n in env.households]
    assert not np.allclose(episode.loc[(slice(None), mine), "p_kw"].to_numpy(),
                           plain.loc[(slice(None), mine), "p_kw"].to_numpy())


def test_episodes_are_deterministic_for_a_seed():
    def rollout(seed: int) -> tuple[int, list[np.ndarray], list[float]]:
        env = DercosimEnv(afternoon("2h"), episode="20min", households=2)
        env.action_space.seed(seed)
        obs, info = env.reset(seed=seed)
        seen, rewards = [obs], []
        for _ in range(5):
            obs, r, _, _, _ = env.step(env.action_space.sample())
            seen.append(obs)
            rewards.append(r)
        env.close()
        return info["episode"], seen, rewards

    first, again, other = rollout(11), rollout(11), rollout(12)
    assert first[0] == again[0] and 0 <= first[0] < 6  # 2 h of 20-min episodes
    assert all(np.array_equal(a, b) for a, b in zip(first[1], again[1])) and first[2] == again[2]
    assert (other[0], other[2]) != (first[0], first[2])


def _fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


def test_resets_leak_no_threads_or_files():
    env = DercosimEnv(afternoon("1h"), episode="10min", households=2)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    gc.collect()
    threads, fds = threading.active_count(), _fds()
    for i in range(12):  # closing mid-episode by reset, and at the end
        env.reset(seed=i)
        for _ in range(i % 4):
            env.step(env.action_space.sample())
    env.close()
    gc.collect()
    assert threading.active_count() <= threads  # the worlds run in greenlets of this thread: none left behind
    assert _fds() <= fds
    from dercosim.gym.bridge import CHANNELS

    assert not CHANNELS


def test_episodes_closed_mid_way_leave_no_memory_behind():
    """A world stopped mid-episode leaves reference cycles; the next episode's run freezes the heap, so they must
    be collected before it (a day's profiles of 64 households, ~3.7 MB, were kept per closed episode)."""
    import tracemalloc

    env = DercosimEnv(afternoon(), episode="10min", households=2)
    for _ in range(3):
        env.reset(seed=0)
        env.step(np.zeros(env.action_space.shape, dtype=np.float32))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(8):
            env.reset(seed=0)
            for _ in range(4):
                env.step(np.zeros(env.action_space.shape, dtype=np.float32))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        env.close()
    assert grown < 8e6, f"{grown / 1e6:.1f} MB kept after 8 episodes closed mid-way"


def test_closing_mid_episode_keeps_the_record(tmp_path):
    env = DercosimEnv(afternoon(), episode="1h", households=2, record=True, runs_dir=tmp_path)
    env.reset(seed=0)
    for _ in range(7):
        env.step(np.ones(env.action_space.shape, dtype=np.float32))
    env.close()
    res = dc.Result.open(env.run_dir)
    assert res.summary["interrupted"]["signal"] == "episode closed by the environment"
    assert res.summary["steps"] == 7
    charged = res.batteries[res.batteries.entity == "bat_hh_007"]["p_kw"].to_numpy()
    assert np.allclose(charged, 5.3)  # a = +1: the charge limit every recorded minute (SoC 0.51, far from full)


def test_bad_arguments_are_clear_errors():
    sc = afternoon()
    with pytest.raises(ScenarioError, match="cannot take p_set_kw"):
        DercosimEnv(sc, episode="1h", households=["hh_001"])  # no battery
    with pytest.raises(ScenarioError, match="longer than the scenario's clock"):
        DercosimEnv(sc, episode="2h")
    with pytest.raises(ScenarioError, match="expected some of"):
        DercosimEnv(sc, episode="1h", actions=("p_kw",))
    with pytest.raises(ScenarioError, match="not available at every controlled household"):
        DercosimEnv(sc, episode="1h", observations=("re_kwh",))  # no contract in this scenario
    env = DercosimEnv(sc, episode="30min", households=1)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(np.zeros(env.action_space.shape))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.full(env.action_space.shape, np.nan))
    env.close()


def test_market_and_contract_reach_the_agent():
    """On Couraud et al. 2022's scenario 4 (market, smart contract, MPC for the other households) the agent's
    members see the contract's RE and mode, and the imbalance share is |RE| at an interval's end × its price."""
    sc = dc.load("fleet_market_s4")
    sc.set("clock.start", "2016-06-21T10:00")
    sc.set("clock.duration", "1h")
    env = DercosimEnv(sc, episode="1h", households=2, period_s=300)
    assert {"re_kwh", "s_mode", "soc_target_frac"} <= set(env.observation_names)
    obs, _ = env.reset(seed=0)
    re_column = env.observation_names.index("re_kwh")
    seen_re, imbalance = [], 0.0
    for _ in range(12):
        obs, reward, _, truncated, _ = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
        rec = env.last_record
        assert rec is not None and rec.meter_kw.shape == (2, 5) and np.isfinite(reward)
        ends = ~np.isnan(rec.re_kwh[0])
        if ends.any():
            assert np.allclose(rec.imbalance(), np.nansum(np.abs(rec.re_kwh) * rec.imbalance_price, axis=1))
            imbalance += float(rec.imbalance().sum())
        seen_re.append(obs[:, re_column].copy())
    env.close()
    assert truncated
    assert np.abs(np.array(seen_re)).max() > 0  # the contract answered the members
    assert imbalance > 0  # two interval ends (10:30, 11:00) with something left unmet


def test_training_example_beats_idle_batteries():
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "gym_random_search.py"), "--quick"],
                         capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    bill, idle = (float(x) for x in last.split("bill ")[1].split(" with idle")[0].split(" against "))
    assert bill < idle - 0.1, last  # at least 0.1 GBP better over the episode than idle batteries


def test_inverter_actions_curtail_and_inject_reactive_power(tmp_path):
    """a = −1 on the curtailment cap and +1 on reactive power: from the next minute the PV inverter holds back all
    its active power and gives its whole kVA rating as reactive power (Volt-VAr off: the [inverters] default)."""
    sc = afternoon("30min")
    env = DercosimEnv(sc, episode="30min", households=2, actions=("p_curtail_kw", "q_set_kvar"), record=True,
                      runs_dir=tmp_path)
    env.reset(seed=0)
    action = np.tile(np.array([-1.0, 1.0], dtype=np.float32), (2, 1))
    truncated = False
    while not truncated:
        _, _, _, truncated, info = env.step(action)
    hh = dc.Result.open(info["run_dir"]).households.set_index("entity")
    kwp = dict(zip(env.households, env._scale["pv_kwp"]))
    for name in env.households:
        rows = hh.loc[name].sort_values("time_s").iloc[1:]  # applied from the minute after the first action
        assert (rows["pv_curtailed_kw"] > 0.5).all()  # a sunny June afternoon: kilowatts held back
        assert np.allclose(rows["pv_kw"], 0.0, atol=1e-9)
        assert np.allclose(rows["pv_q_kvar"], kwp[name] * sc.inverters.s_per_kwp)
