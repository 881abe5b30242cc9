"""A gymnasium environment whose step is one control period of the full co-simulation.

The world (AC power flow every minute, batteries with their power-management loop inside the minute, the
market and smart contract where the scenario has them, the scenario's controller for every household the
agent does not control) runs in a greenlet of the caller's thread; an
:class:`~dercosim.gym.bridge.AgentController` hosted by its own controller simulator hands this environment the
agent's observations and takes its action. mosaik keeps the loop: nothing here steps a simulator. An
environment is used from one thread at a time (the thread that called ``reset``).

Observations
    ``Box(shape=(households, len(observation_names)), float32)``: per controlled household (rows in
    ``env.households`` order) what a plug-in controller sees (:data:`dercosim.controllers.base.OBSERVATIONS`:
    load, PV, SoC, metered power and voltage of the previous step, the contract's RE and mode, ...) and four the
    environment adds: ``import_price`` and ``export_price`` (currency/kWh, this step), ``hour_sin`` and
    ``hour_cos`` (time of day). A value the world does not have yet (NaN, e.g. no SoC target before the first
    market interval) is 0.

Actions
    ``Box(-1, 1, shape=(households, len(action_names)), float32)``, scaled per household:
    ``p_set_kw``: a ≥ 0 charges at a × the charge limit, a < 0 discharges at |a| × the discharge limit (the PMS
    holds it; ``follow_residual`` is 0 unless it is an action too); ``follow_residual``: 1 if a > 0;
    ``hvac_set_kw``: (a + 1)/2 × the HVAC rating; ``p_curtail_kw``: (a + 1)/2 × the PV array's kWp (1: no cap);
    ``q_set_kvar``: a × the inverter's kVA rating (+ injects).

Reward
    :func:`default_reward` unless ``reward=`` gives a function of the period's :class:`StepRecord` returning one
    number per household (or one for all); the single-agent reward is their sum.

References
----------
Towers, M. et al. (2024). Gymnasium: A Standard Interface for Reinforcement Learning Environments.
arXiv:2407.17032.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import pandas as pd
from gymnasium import spaces

from dercosim.controllers.base import OBSERVATIONS, household_io
from dercosim.gym.bridge import CHANNELS, Channel
from dercosim.scenarios.config import Scenario, ScenarioError, parse_duration_s
from dercosim.scenarios.load import check_scenario
from dercosim.scenarios.resolve import RunInputs

#: observations the environment computes itself (not from the world)
ENV_OBSERVATIONS: dict[str, str] = {
    "import_price": "import price this step, currency/kWh",
    "export_price": "export price this step, currency/kWh",
    "hour_sin": "sin(2π × hour of day / 24), local standard time",
    "hour_cos": "cos(2π × hour of day / 24), local standard time",
}
#: the default observations, each kept where every controlled household has it
DEFAULT_OBSERVATIONS = ("load_kw", "pv_kw", "soc_frac", "meter_kw", "vm_pu", "re_kwh", "s_mode", "soc_target_frac",
                        "import_price", "export_price", "hour_sin", "hour_cos")
ACTIONS = ("p_set_kw", "follow_residual", "hvac_set_kw", "p_curtail_kw", "q_set_kvar")
#: the observation space's bounds by unit (values are clipped to them; no physical value comes near)
_BOUNDS = {"frac": (0.0, 1.0), "pu": (0.0, 3.0), "price": (-1e3, 1e3), "time": (-1.0, 1.0), "power": (-1e4, 1e4)}


def _bound(name: str) -> tuple[float, float]:
    if name.endswith("_frac") or name == "s_mode":
        return _BOUNDS["frac"]
    if name.endswith("_pu"):
        return _BOUNDS["pu"]
    if name.endswith("_price"):
        return _BOUNDS["price"]
    if name.startswith("hour_"):
        return _BOUNDS["time"]
    return _BOUNDS["power"]  # kW, kWh, °C


#: what the reward is computed from, read whenever a household has it
_REWARD_INPUTS = ("net_kw", "load_kw", "pv_kw", "meter_kw", "battery_p_kw", "soc_frac", "vm_pu", "re_kwh")


@dataclass
class StepRecord:
    """The minutes of one control period, per controlled household (rows) and minute (columns).

    ``meter_kw`` is the household's metered power (after its battery; + = import), ``vm_pu`` its bus voltage
    from that minute's AC power flow, ``re_kwh`` its unmet share of the fleet's commitment at the end of each
    market interval that ended in the period (NaN in other minutes and for non-members). Prices are per minute.
    """

    households: list[str]
    steps: np.ndarray  #: the minutes' step numbers since the episode's start
    step_h: float
    meter_kw: np.ndarray
    vm_pu: np.ndarray
    net_kw: np.ndarray
    load_kw: np.ndarray
    pv_kw: np.ndarray
    battery_p_kw: np.ndarray
    soc_frac: np.ndarray
    re_kwh: np.ndarray
    import_price: np.ndarray
    export_price: np.ndarray
    imbalance_price: np.ndarray  #: per minute, currency/kWh (NaN without a market)
    v_min_pu: float
    v_max_pu: float
    times: pd.DatetimeIndex | None = None  #: the episode's step times (for :attr:`time`)

    @property
    def time(self) -> pd.DatetimeIndex:
        """The start of each minute, local standard time of the site."""
        assert self.times is not None
        return self.times[self.steps]

    def bill(self) -> np.ndarray:
        """Import cost − export revenue per household over the period, currency (energy charges only)."""
        imp = np.maximum(self.meter_kw, 0.0)
        exp = imp - self.meter_kw  # max(−meter, 0)
        return (imp @ self.import_price - exp @ self.export_price) * self.step_h

    def imbalance(self) -> np.ndarray:
        """Each household's share of the fleet's imbalance cost: |RE| left at an interval's end × its price."""
        if np.isnan(self.imbalance_price).all():  # no market
            return np.zeros(len(self.households))
        cost = np.abs(self.re_kwh) * self.imbalance_price
        return np.nansum(cost, axis=1)

    def voltage_excursion_pu_h(self) -> np.ndarray:
        """Per household, Σ over minutes of how far its bus voltage was outside [v_min, v_max], pu·h."""
        # fmax: a minute without a voltage (NaN, a power flow that failed) counts 0
        over = np.fmax(self.vm_pu - self.v_max_pu, 0.0) + np.fmax(self.v_min_pu - self.vm_pu, 0.0)
        return over.sum(axis=1) * self.step_h


def default_reward(record: StepRecord, voltage_penalty_per_pu_h: float = 100.0) -> np.ndarray:
    """−(bill + imbalance share + ``voltage_penalty_per_pu_h`` × voltage excursion) per household, currency.

    The bill is the tariff's energy charges on the metered power (a peak-demand charge, being daily, is not
    in it); the imbalance share is |RE| left at each market interval's end at that interval's imbalance price
    (contract members only); the excursion is outside the scenario's ``[grid] v_min_pu``/``v_max_pu`` (or
    the environment's ``v_band``). 100 per pu·h: a bus 0.01 pu too high for an hour costs 1 (GBP, USD, ...).
    """
    return -(record.bill() + record.imbalance() + voltage_penalty_per_pu_h * record.voltage_excursion_pu_h())


class DercosimEnv(gymnasium.Env):
    """One control period of the co-simulation per step, for the households an agent controls.

    Parameters
    ----------
    scenario : a :class:`~dercosim.scenarios.config.Scenario`, a bundled scenario's name or a TOML path. Its
        ``[clock]`` is the pool of episodes: ``duration`` / ``episode`` of them, back to back from ``start``.
    households : the controlled households: names, a number (the first n that can take every action), or None
        (every household that can).
    episode : an episode's length ("1d", "6h", seconds).
    observations : names from :data:`~dercosim.controllers.base.OBSERVATIONS` and :data:`ENV_OBSERVATIONS`
        (default :data:`DEFAULT_OBSERVATIONS`, each where every controlled household has it).
    actions : names from :data:`ACTIONS` (default ``("p_set_kw",)``).
    period_s : the control period, a multiple of the clock's step (60 s by default).
    reward : a function of a :class:`StepRecord` returning one number per household or one in all
        (default :func:`default_reward`).
    record : write each episode's run folder (``runs_dir``/<scenario>-<n>-<start>; readable by ``dercosim.Result``
        and ``dercosim validate``); off by default (training speed).
    v_band : the voltage band of the default reward, pu (default the scenario's grid limits).
    """

    metadata = {"render_modes": []}

    def __init__(self, scenario: Scenario | str | Path, households: Sequence[str] | int | None = None,
                 episode: str | int = "1d", observations: Sequence[str] | None = None,
                 actions: Sequence[str] = ("p_set_kw",), period_s: int = 60,
                 reward: Callable[[StepRecord], Any] | None = None, record: bool = False,
                 runs_dir: str | Path = "runs/gym", v_band: tuple[float, float] | None = None) -> None:
        super().__init__()
        if not isinstance(scenario, Scenario):
            from dercosim.api import load

            scenario = load(scenario)
        self.scenario = scenario
        step_s = scenario.clock.step_s
        self.episode_s = parse_duration_s(episode)
        if self.episode_s <= 0 or self.episode_s % step_s:
            raise ScenarioError(f"episode ({episode!r}) must be a positive whole number of {step_s}-s steps")
        self.n_episodes = scenario.clock.duration // self.episode_s
        if self.n_episodes < 1:
            raise ScenarioError(f"episode ({episode!r}, {self.episode_s} s) is longer than the scenario's clock "
                                f"({scenario.clock.duration} s): lengthen [clock] duration")
        if int(period_s) <= 0 or int(period_s) % step_s or self.episode_s % int(period_s):
            raise ScenarioError(f"period_s ({period_s}) must be a multiple of the {step_s}-s step dividing the "
                                f"episode ({self.episode_s} s)")
        self.period_s = int(period_s)
        unknown = [a for a in actions if a not in ACTIONS]
        if unknown or not actions:
            raise ScenarioError(f"actions {unknown or list(actions)}: expected some of {', '.join(ACTIONS)}")
        self.action_names = tuple(actions)
        fleet = check_scenario(scenario)
        self._fleet = fleet
        table = fleet.households
        with_battery = set(fleet.batteries.loc[fleet.batteries["household"] != "", "household"])
        hvac = dict(zip(table["name"], np.asarray(fleet.hvac["p_max_kw"], float)))
        members = set(fleet.contract_members) if scenario.contract is not None else set()
        io = {n: household_io(n in with_battery, hvac[n] > 0, n in members, pv > 0)
              for n, pv in zip(table["name"], table["pv_kwp"])}
        able = [n for n in table["name"] if all(a in io[n][1] for a in self.action_names)]
        if households is None:
            chosen = able
        elif isinstance(households, (int, np.integer)):
            chosen = able[:int(households)]
            if len(chosen) < int(households):
                raise ScenarioError(f"households = {households}: only {len(able)} households can take "
                                    f"{', '.join(self.action_names)}")
        else:
            chosen = list(households)
            missing = [n for n in chosen if n not in io]
            unable = [n for n in chosen if n in io and n not in able]
            if missing or unable:
                raise ScenarioError(f"households {missing + unable}: "
                                    + (f"{missing} not in the fleet; " if missing else "")
                                    + (f"{unable} cannot take {', '.join(self.action_names)}" if unable else ""))
        if not chosen:
            raise ScenarioError(f"no household of {scenario.name!r} can take {', '.join(self.action_names)}")
        self.households = chosen
        available = [set(io[n][0]) for n in chosen]
        common = set.intersection(*available)
        if observations is None:
            names = [o for o in DEFAULT_OBSERVATIONS if o in common or o in ENV_OBSERVATIONS]
        else:
            names = list(observations)
            bad = [o for o in names if o not in OBSERVATIONS and o not in ENV_OBSERVATIONS]
            lacking = [o for o in names if o in OBSERVATIONS and o not in common]
            if bad or lacking:
                raise ScenarioError("observations " + (f"{bad} unknown (known: {', '.join([*OBSERVATIONS, *ENV_OBSERVATIONS])}); "
                                                       if bad else "")
                                    + (f"{lacking} not available at every controlled household" if lacking else ""))
        self.observation_names = tuple(names)
        #: every minute's values, per household in this order (NaN where a household lacks one)
        self._fields = [o for o in dict.fromkeys([*self.observation_names, *_REWARD_INPUTS]) if o in OBSERVATIONS]
        self._at = {name: j for j, name in enumerate(self._fields)}
        self._inputs = {n: [o for o in self._fields if o in io[n][0]] for n in chosen}
        self._outputs = {n: list(dict.fromkeys([*self.action_names,
                                                *(["follow_residual"] if "p_set_kw" in self.action_names else [])]))
                         for n in chosen}
        rows = table.set_index("name").loc[chosen]
        bats = fleet.batteries[fleet.batteries["household"] != ""].drop_duplicates("household").set_index("household")
        self._scale = {
            "p_charge_max_kw": np.array([bats.loc[n, "p_charge_max_kw"] if n in bats.index else 0.0 for n in chosen]),
            "p_discharge_max_kw": np.array([bats.loc[n, "p_discharge_max_kw"] if n in bats.index else 0.0
                                            for n in chosen]),
            "hvac_p_max_kw": np.array([hvac[n] for n in chosen]),
            "pv_kwp": rows["pv_kwp"].to_numpy(float),
            "s_rated_kva": rows["pv_kwp"].to_numpy(float) * scenario.inverters.s_per_kwp,
        }
        self._has_battery = np.array([n in with_battery for n in chosen])
        self.reward_fn = reward or default_reward
        self.record = bool(record)
        self.runs_dir = Path(runs_dir)
        self.v_band = v_band or (scenario.grid.v_min_pu, scenario.grid.v_max_pu)
        h, a = len(chosen), len(self.action_names)
        low = np.array([_bound(o)[0] for o in self.observation_names], dtype=np.float32)
        high = np.array([_bound(o)[1] for o in self.observation_names], dtype=np.float32)
        self.observation_box = spaces.Box(np.tile(low, (h, 1)), np.tile(high, (h, 1)), dtype=np.float32)
        self.action_box = spaces.Box(-1.0, 1.0, shape=(h, a), dtype=np.float32)
        self.observation_space = self.observation_box
        # where each observation comes from: a column of the minute's values, or a per-episode series
        self._obs_fields = np.array([self._at.get(o, 0) for o in self.observation_names], dtype=np.intp)
        self._obs_series = [(j, o) for j, o in enumerate(self.observation_names) if o in ENV_OBSERVATIONS]
        self._obs_low = self.observation_box.low.astype(np.float64)
        self._obs_high = self.observation_box.high.astype(np.float64)
        self.action_space = self.action_box
        self._channel: Channel | None = None
        self._run: RunInputs | None = None
        self._series: dict[str, np.ndarray] = {}
        self._imbalance_price = np.zeros(0)
        self._interval_end = np.zeros(0, dtype=bool)
        self._stamps: list[pd.Timestamp] = []
        self._episodes = 0
        self.run_dir: Path | None = None  #: the last recorded episode's run folder
        self.last_record: StepRecord | None = None

    # -- episodes ---------------------------------------------------------------------------------------------
    def episode_start(self, index: int) -> pd.Timestamp:
        """The local start time of episode ``index`` of the scenario's pool."""
        return pd.Timestamp(self.scenario.clock.start) + pd.Timedelta(seconds=index * self.episode_s)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start an episode: ``options["episode"]`` (its index in the pool) or ``options["start"]`` (a time in the
        pool), else one drawn from the environment's generator (seeded by ``seed``)."""
        super().reset(seed=seed)
        self._stop_episode()
        options = options or {}
        if "start" in options:
            offset = (pd.Timestamp(options["start"]) - pd.Timestamp(self.scenario.clock.start)).total_seconds()
            index = int(offset // self.episode_s)
            if offset % self.episode_s or not 0 <= index < self.n_episodes:
                raise ValueError(f"start {options['start']!r} is not an episode start of the pool (every "
                                 f"{self.episode_s} s from {self.scenario.clock.start} for {self.n_episodes})")
        elif "episode" in options:
            index = int(options["episode"])
            if not 0 <= index < self.n_episodes:
                raise ValueError(f"episode {index}: the pool has {self.n_episodes} (0..{self.n_episodes - 1})")
        else:
            index = int(self.np_random.integers(self.n_episodes))
        self._start_episode(index)
        t, minutes = self._resume()
        return self._observation(t, self._values(minutes[-1:])[0]), self._info(t)

    def _start_episode(self, index: int) -> None:
        from dercosim.scenarios.world import AgentHook, run_scenario, with_clock

        step_s = self.scenario.clock.step_s
        start = self.episode_start(index)
        episode = with_clock(self.scenario, start=start.to_pydatetime(), duration=self.episode_s + step_s)
        self._episodes += 1
        self.episode_index = index
        out = self.runs_dir / f"{self.scenario.name}-{self._episodes:05d}-{start:%Y%m%dT%H%M}"
        self.run_dir = out if self.record else None
        if self.record and out.exists() and any(out.iterdir()):
            raise ScenarioError(f"{out}: the run folder already holds files (give another runs_dir)")

        def resolved(run: RunInputs) -> None:  # once per episode: the per-step series the steps look up
            self._run = run
            self._stamps = list(run.times)
            hours = run.times.hour.to_numpy() + run.times.minute.to_numpy() / 60.0
            self._series = {"import_price": run.tariff.import_price(run.times),
                            "export_price": run.tariff.export_price(run.times),
                            "hour_sin": np.sin(2 * np.pi * hours / 24), "hour_cos": np.cos(2 * np.pi * hours / 24)}
            # per step: the market interval's imbalance price, and whether the step is its interval's last
            self._imbalance_price = np.full(len(run.times), math.nan)
            self._interval_end = np.zeros(len(run.times), dtype=bool)
            if run.market_inputs is not None and self.scenario.market is not None:
                interval = self.scenario.market.interval_s
                offset = int((run.times[0] - run.times[0].normalize()).total_seconds())
                since = offset % interval + np.arange(len(run.times)) * step_s
                prices = np.asarray(run.market_inputs["imbalance_price"], float)
                self._imbalance_price = prices[np.minimum(run.market_inputs["first_interval"] + since // interval,
                                                          len(prices) - 1)]
                self._interval_end = (since + step_s) % interval == 0

        spec = "AgentController" if self.period_s == step_s else "AgentObserver"
        hook = AgentHook(spec=f"dercosim.gym.bridge:{spec}", households=list(self.households),
                         params_of=lambda n: {"channel": channel.key, "inputs": self._inputs[n],
                                              "outputs": self._outputs[n], "period_s": self.period_s,
                                              "fields": self._fields},
                         resolved=resolved, record_until_s=self.episode_s)

        def work() -> tuple[str, BaseException | None]:
            try:
                run_scenario(episode, out, progress=False, plots=False, agent=hook, record=self.record)
                return ("done", None)
            except BaseException as exc:  # noqa: BLE001 - handed to the environment
                return ("done", exc)
            finally:
                CHANNELS.pop(channel.key, None)

        channel = Channel(end_s=self.episode_s, run=work)
        self._channel = channel

    def _resume(self, payload: Any = None) -> tuple[int, list[tuple[int, dict[str, tuple[float, ...]]]]]:
        """Run the world to its next control step: (time, minutes); the world's error if it failed instead."""
        assert self._channel is not None
        message = self._channel.resume(payload)
        if message[0] == "obs":
            return message[1], message[2]
        self._channel = None
        if message[1] is not None:
            raise message[1]
        raise RuntimeError("the episode's world ended before its last control step")

    def _stop_episode(self) -> None:
        """Close a running episode: its world stops like on a signal and keeps its record."""
        channel, self._channel = self._channel, None
        if channel is None:
            return
        ended = channel.close()  # its cycles are collected by the next run before it freezes the heap
        from dercosim.scenarios.world import RunInterrupted

        if ended is not None and ended[1] is not None and not isinstance(ended[1], RunInterrupted):
            raise ended[1]

    def close(self) -> None:
        """Stop a running episode (keeping what it recorded)."""
        self._stop_episode()

    # -- steps ------------------------------------------------------------------------------------------------
    def setpoints(self, action: np.ndarray) -> dict[str, dict[str, float]]:
        """The action (clipped to [-1, 1]) as setpoints per household, in the world's units."""
        a = np.asarray(action, dtype=np.float64).reshape(self.action_box.shape)
        if not np.isfinite(a).all():
            raise ValueError("the action holds a NaN or an infinite value")
        a = np.clip(a, -1.0, 1.0)
        s = self._scale
        values: dict[str, np.ndarray] = {}
        for j, name in enumerate(self.action_names):
            x = a[:, j]
            if name == "p_set_kw":
                values[name] = np.where(x >= 0, x * s["p_charge_max_kw"], x * s["p_discharge_max_kw"])
            elif name == "follow_residual":
                values[name] = (x > 0).astype(float)
            elif name == "hvac_set_kw":
                values[name] = (x + 1.0) / 2.0 * s["hvac_p_max_kw"]
            elif name == "p_curtail_kw":
                values[name] = (x + 1.0) / 2.0 * s["pv_kwp"]
            else:  # q_set_kvar
                values[name] = x * s["s_rated_kva"]
        if "p_set_kw" in values and "follow_residual" not in values:
            values["follow_residual"] = np.zeros(len(self.households))
        names = list(values)
        rows = zip(*[values[k].tolist() for k in names])
        return {n: dict(zip(names, row)) for n, row in zip(self.households, rows)}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._channel is None:
            raise RuntimeError("no episode is running (none was started, or the last one ended): call reset()")
        t, minutes = self._resume(self.setpoints(action))
        values = self._values(minutes)
        record = self._record(minutes, values)
        rewards = self._rewards(record)
        truncated = t >= self.episode_s
        info = self._info(t)
        info["rewards"] = rewards
        self.last_record = record  #: the last period's :class:`StepRecord`
        if truncated:
            self._finish()
            info["run_dir"] = self.run_dir
        return self._observation(t, values[-1]), float(np.sum(rewards)), False, truncated, info

    def _finish(self) -> None:
        """The episode's last observation is in: let the world end (its extra step is not recorded)."""
        channel, self._channel = self._channel, None
        assert channel is not None
        ended = channel.resume()
        if ended[0] != "done":
            raise RuntimeError(f"the episode's world went on past its end (t = {ended[1]} s)")
        if ended[1] is not None:
            raise ended[1]

    def _rewards(self, record: StepRecord) -> np.ndarray:
        value = self.reward_fn(record)
        out = np.asarray(value, dtype=np.float64)
        if out.ndim == 0:
            return np.full(len(self.households), float(out) / len(self.households))
        if out.shape != (len(self.households),):
            raise ValueError(f"the reward function returned shape {out.shape}; expected one number or one per "
                             f"household ({len(self.households)})")
        return out

    def _info(self, t: int) -> dict[str, Any]:
        assert self._run is not None
        return {"t_s": t, "time": self._stamps[min(t // self.scenario.clock.step_s, len(self._stamps) - 1)],
                "episode": self.episode_index}

    def _values(self, minutes: list[tuple[int, dict[str, tuple[float, ...]]]]) -> np.ndarray:
        """The minutes' values as one array (minutes, households, fields)."""
        f = len(self._fields)
        flat = np.fromiter(itertools.chain.from_iterable(m[1][n] for m in minutes for n in self.households),
                           dtype=np.float64, count=len(minutes) * len(self.households) * f)
        return flat.reshape(len(minutes), len(self.households), f)

    def _observation(self, t: int, values: np.ndarray) -> np.ndarray:
        """The observation from a minute's values (households, fields)."""
        run = self._run
        assert run is not None
        k = min(t // self.scenario.clock.step_s, len(run.times) - 1)
        out = values[:, self._obs_fields]  # the world's columns, then the environment's own
        for j, name in self._obs_series:
            out[:, j] = self._series[name][k]
        out[np.isnan(out)] = 0.0
        return np.clip(out, self._obs_low, self._obs_high).astype(np.float32)

    def _record(self, minutes: list[tuple[int, dict[str, tuple[float, ...]]]], values: np.ndarray) -> StepRecord:
        """The period's minutes as arrays: same-minute values from minutes[0..-2], the previous step's (meter,
        voltage, SoC, battery power, RE) from minutes[1..] (``values``: :meth:`_values` of ``minutes``)."""
        run = self._run
        assert run is not None
        step_s = self.scenario.clock.step_s
        names = self.households
        now = minutes[:-1]
        nan = np.full((len(names), len(now)), math.nan)

        def grid(rows: slice, name: str) -> np.ndarray:  # (households, minutes)
            j = self._at.get(name)
            return nan if j is None else values[rows, :, j].T

        first, after = slice(0, -1), slice(1, None)

        net = grid(first, "net_kw")
        meter = np.where(self._has_battery[:, None], grid(after, "meter_kw"), net)
        k = np.fromiter((t // step_s for t, _ in now), dtype=np.int64, count=len(now))
        re = np.full((len(names), len(k)), math.nan)
        ends = self._interval_end[k]
        if ends.any():  # RE left at the end of a market interval
            re[:, ends] = grid(after, "re_kwh")[:, ends]
        return StepRecord(households=names, steps=k, times=run.times, step_h=step_s / 3600.0, meter_kw=meter,
                          vm_pu=grid(after, "vm_pu"), net_kw=net, load_kw=grid(first, "load_kw"),
                          pv_kw=grid(first, "pv_kw"), battery_p_kw=grid(after, "battery_p_kw"),
                          soc_frac=grid(after, "soc_frac"), re_kwh=re,
                          import_price=self._series["import_price"][k], export_price=self._series["export_price"][k],
                          imbalance_price=self._imbalance_price[k], v_min_pu=float(self.v_band[0]),
                          v_max_pu=float(self.v_band[1]))

    def __del__(self) -> None:  # a forgotten env must not leave its world waiting
        try:
            if self._channel is not None:
                self._channel.close()
        except Exception:  # noqa: BLE001
            pass
