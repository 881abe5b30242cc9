"""Build the mosaik world from a validated scenario and run it.

``run_scenario`` draws the households (and their HVAC and batteries),
generates their profiles, starts one simulator per kind (grid, households,
batteries, controllers, recorder), connects them, runs, and writes the run
folder: ``scenario.toml`` (resolved), ``households.csv``, ``batteries.csv``,
``timeseries.parquet``, ``summary.json`` and the plots.

One simulated minute (same-time connections unless marked shifted)::

    households --net_kw--> batteries --meter_kw--> grid bus      (households without battery: net_kw --> bus)
    households --q_kvar--> grid bus
    households --load_kw, pv_kw, ...--> controllers --p_set_kw, follow_residual--> batteries
    batteries  --soc, p (shifted)--> controllers;  grid bus --vm_pu (shifted)--> controllers
    controllers --hvac_set_kw (shifted)--> households
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, overload

import mosaik
from mosaik.exceptions import ConnectionClosedError, SimulationError
from mosaik_api_v3.connection import RemoteException
import numpy as np
import pandas as pd

from dercosim.devices.battery import BatteryParams
from dercosim.controllers.base import INVERTER_SETPOINTS, household_io
from dercosim.controllers.registry import ControllerError, load_controller_class
from dercosim.analysis import plots as plot_module, summary as summaries
from dercosim.analysis.results import Records, Result
from dercosim.scenarios.fleet import Fleet
from dercosim.scenarios.resolve import RunInputs, data_files
from dercosim.environment import versions
from dercosim.grids.feeders import load_feeder
from dercosim.scenarios.config import Scenario, ScenarioError, scenario_to_toml
from dercosim.scenarios.load import check_scenario
from dercosim.sims.planner import COMMUNITY_OUT, OPERATOR_OUT
from dercosim.sims.controller import HOST_DIAGNOSTICS
from dercosim.sims.contract import CONTRACT_OUT, EVM_OUT, MEMBER_OUT
from dercosim.sims.market import OUTPUTS as MARKET_OUTPUTS
from dercosim.sims import MOVABLE, SIMULATORS, pacing
from dercosim.sims.pacing import Pacer
from dercosim.sims.tables import TABLE_ATTR, TABLE_EID
from dercosim.sims import recorder as recorder_sim
from dercosim.sims.connection import harden_channels
from dercosim.sims.recorder import STOP, STOP_REASON, StopRequested
from dercosim.sims.grid import FEEDER_ATTRS, LINE_ATTRS

SIM_CONFIG = {kind: {"python": target} for kind, target in SIMULATORS.items()}
harden_channels()  # a simulator process killed hard resets its connection: "connection lost", not a hang
BUS_RECORDED = ["vm_pu", "va_degree", "p_net_kw", "q_net_kvar"]
HOUSEHOLD_RECORDED = ["load_kw", "pv_kw", "wind_kw", "hvac_kw", "net_kw", "q_kvar", "t_indoor_c", "t_outdoor_c"]
#: with PV inverters that act ([inverters] mode other than "unity"): what each held back and its reactive power
INVERTER_RECORDED = ["pv_curtailed_kw", "pv_q_kvar"]
BATTERY_RECORDED = ["p_kw", "soc_kwh", "soc_frac", "e_charge_kwh", "e_discharge_kwh", "e_self_discharge_kwh",
                    "e_clipped_kwh", "meter_kw", "follow_residual", "p_set_kw"]
#: observations a household itself provides (same time) and those of its battery (time-shifted)
HOUSEHOLD_OBS = ["load_kw", "pv_kw", "net_kw", "t_outdoor_c"]
HVAC_OBS = ["hvac_kw", "t_indoor_c"]
BATTERY_OBS = {"soc_kwh": "soc_kwh", "soc_frac": "soc_frac", "p_kw": "battery_p_kw", "meter_kw": "meter_kw",
               "capacity_kwh": "capacity_kwh",
               "p_charge_max_kw": "p_charge_max_kw", "p_discharge_max_kw": "p_discharge_max_kw",
               "soc_min_frac": "soc_min_frac", "soc_max_frac": "soc_max_frac"}


#: what :func:`run_scenario` returns: the run folder, read lazily (its summary already in memory)
RunResult = Result


@dataclass
class AgentHook:
    """Households whose controller comes from outside the scenario (a learning environment, :mod:`dercosim.gym`).

    Their controller is ``spec`` with ``params_of(household)`` as its parameters, hosted by a controller simulator of
    its own (one call per minute for all of them when the class has ``step_many``); every other household keeps
    the scenario's controller. ``resolved`` is called with the run's inputs (fleet, times, tariff, market) before
    the world is built; ``record_until_s``: steps from then on are simulated, not recorded.
    """

    spec: str
    households: list[str]
    params_of: Callable[[str], dict[str, Any]]
    resolved: Callable[[RunInputs], None] | None = None
    record_until_s: int | None = None


def with_clock(scenario: Scenario, **changes: Any) -> Scenario:
    """A copy of the scenario with ``[clock]`` keys replaced (``start``, ``duration``), validated again."""
    clock = scenario.clock.model_copy(update=changes)
    new = Scenario.model_validate({**scenario.model_dump(), "clock": clock.model_dump()})
    new._source_dir = scenario._source_dir
    return new


def with_duration(scenario: Scenario, duration_s: int) -> Scenario:
    """The scenario with its run length replaced (``--until``)."""
    return with_clock(scenario, duration=duration_s)


class RemoteSimulatorError(RuntimeError):
    """A simulator in another process (``[processes]``) raised; the message is its own and names it."""


class RunInterrupted(KeyboardInterrupt):
    """The run was stopped by a signal (SIGINT, SIGTERM); what was recorded is joined and summarised."""

    def __init__(self, signal_name: str = "SIGINT", out_dir: Path | None = None) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.out_dir = out_dir


def _plugin_files(scenario: Scenario, out_dir: Path) -> Scenario:
    """Copy a ``file.py:Class`` controller into the run folder; the resolved scenario names the copy.

    The run folder can then be re-run (``dercosim run <run>/scenario.toml``)
    without the user's original folder.
    """
    spec = scenario.hems.controller
    if spec is None or ":" not in spec:
        return scenario
    module, _, cls = spec.rpartition(":")
    if not module.endswith(".py"):
        return scenario
    source = (scenario.source_dir / module).resolve()
    target = out_dir / source.name
    shutil.copy2(source, target)
    hems = scenario.hems.model_copy(update={"controller": f"{target.name}:{cls}"})
    return scenario.model_copy(update={"hems": hems})


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (a kill never leaves half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def strict_json(data: Any) -> str:
    """JSON with every non-finite float as null (``summary.json`` is strict JSON)."""
    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean(data), indent=2, allow_nan=False)


@overload
def run_scenario(scenario: Scenario, out_dir: str | Path, progress: bool = ...,
                 log: Callable[[str], None] = ..., realtime: Pacer | None = ..., record_from_s: int = ...,
                 plots: bool = ..., agent: AgentHook | None = ..., record: Literal[True] = ...) -> RunResult: ...


@overload
def run_scenario(scenario: Scenario, out_dir: str | Path, progress: bool = ...,
                 log: Callable[[str], None] = ..., realtime: Pacer | None = ..., record_from_s: int = ...,
                 plots: bool = ..., agent: AgentHook | None = ..., *, record: Literal[False]) -> None: ...


@overload
def run_scenario(scenario: Scenario, out_dir: str | Path, progress: bool = ...,
                 log: Callable[[str], None] = ..., realtime: Pacer | None = ..., record_from_s: int = ...,
                 plots: bool = ..., agent: AgentHook | None = ..., record: bool = ...) -> RunResult | None: ...


def run_scenario(scenario: Scenario, out_dir: str | Path, progress: bool = True,
                 log: Callable[[str], None] = lambda msg: None, realtime: Pacer | None = None,
                 record_from_s: int = 0, plots: bool = True, agent: AgentHook | None = None,
                 record: bool = True) -> RunResult | None:
    """Run ``scenario`` and write its results to ``out_dir`` (created; must not hold files yet).

    Everything is checked before anything is written (:func:`~dercosim.scenarios.load.check_scenario`).
    On SIGINT (or SIGTERM, when the CLI installed its handler) the run stops,
    what was recorded is joined and summarised (``summary.json`` →
    ``interrupted``), and :class:`RunInterrupted` is raised. ``realtime``: pace
    every step to the wall clock and report deadlines (:mod:`dercosim.sims.pacing`;
    ``summary.json`` → ``realtime``, ``realtime.parquet``, ``realtime_lateness.png``);
    its abort stops the run like a signal, with its reason.

    ``record_from_s``: the window of ``dercosim run --start``: the steps before it are simulated (the same states,
    plans and commitments as in the whole run) but not recorded, and the summary and plots cover the window
    only (``summary.json`` → ``window``). ``plots``: False writes no figures. ``agent``: households driven from
    outside (:class:`AgentHook`). ``record``: False writes nothing at all (no recorder, no summary; ``out_dir``
    is not used) and returns None, for runs whose use is in their controllers (a learning environment's episodes).
    """
    wall_start = time.perf_counter()
    out_dir = Path(out_dir) if record else Path(os.devnull)
    # built in Python, or changed since it was loaded (--until, a copy with updates): checked now
    drawn = Fleet.draw(scenario) if scenario.checked else check_scenario(scenario)
    if record and out_dir.is_dir() and any(out_dir.iterdir()):
        raise ScenarioError(f"{out_dir}: the run folder already holds files; two runs never share a folder")
    step_s = scenario.clock.step_s
    n_steps = scenario.n_steps
    if not 0 <= record_from_s < n_steps * step_s or record_from_s % step_s:
        raise ScenarioError(f"the window's start ({record_from_s} s after the scenario's start) must be a whole "
                            f"number of {step_s}-s steps within the run's {n_steps * step_s} s")
    if record_from_s and realtime is not None:
        raise ScenarioError("a window (--start) cannot run in real time: the warm-up would be paced too")
    table, hvac, batteries = drawn.households, drawn.hvac, drawn.batteries
    if agent is not None:
        unknown = [n for n in agent.households if n not in set(table["name"])]
        if unknown:
            raise ScenarioError(f"agent households {unknown} are not in the scenario's fleet")
    log(f"{len(table)} households ({int((table.pv_kwp > 0).sum())} with PV, {int((hvac['p_max_kw'] > 0).sum())} "
        f"with HVAC), {len(batteries)} batteries; generating profiles")
    run = RunInputs.resolve(scenario, drawn)
    site, times = run.site, run.times
    if agent is not None and agent.resolved is not None:
        agent.resolved(run)
    grid = load_feeder(scenario.grid.feeder)
    if record:
        out_dir.mkdir(parents=True, exist_ok=True)
        resolved = _plugin_files(scenario, out_dir)
        write_text_atomically(out_dir / "scenario.toml", scenario_to_toml(resolved))
        table.assign(hvac_p_max_kw=hvac["p_max_kw"]).to_csv(out_dir / "households.csv", index=False)
        batteries.to_csv(out_dir / "batteries.csv", index=False)
        pd.DataFrame({"bus": grid.numbers, "name": list(grid.names), "vn_kv": grid.vn_kv,
                      "slack": np.isin(grid.numbers, grid.slack_numbers), "case_p_kw": grid.base_p_kw,
                      "case_q_kvar": grid.base_q_kvar}).to_csv(out_dir / "buses.csv", index=False)

    timeout_s = scenario.processes.start_timeout_s
    world = mosaik.World(sim_config(scenario), mosaik_config={"start_timeout": timeout_s, "stop_timeout": timeout_s},
                         time_resolution=1.0, skip_greetings=True, configure_logging=False)
    parquet = out_dir / "timeseries.parquet"
    interrupted: KeyboardInterrupt | StopRequested | None = None
    lost: str | None = None
    run_start = time.perf_counter()
    try:
        parquet = _build(world, run, out_dir, log, record_from_s, agent, record)
        log(f"running {n_steps} steps of {step_s} s from {times[0]:%Y-%m-%d %H:%M} ({site.tz})"
            + (f" in real time x{realtime.factor:g}" if realtime is not None else ""))
        # everything built so far (profiles, networks, solvers) lives for the whole run: out of the garbage
        # collector's full passes, which otherwise walk it again and again (tens of ms each at 2,000 households)
        gc.collect()  # garbage left from before (an earlier run stopped mid-way) must not be frozen with it
        gc.freeze()
        run_start = time.perf_counter()
        if realtime is not None:
            realtime.stop = _stop_for
            pacing.PACER = realtime
        bar = _progress_bar(n_steps, step_s) if progress and realtime is None else None
        recorder_sim.PROGRESS = bar.update if bar is not None else None
        try:
            world.run(until=n_steps * step_s, print_progress=False)
        finally:
            recorder_sim.PROGRESS = None
            if bar is not None:
                bar.close()
    except (KeyboardInterrupt, StopRequested) as exc:
        interrupted = exc
        _shutdown_quietly(world)  # the recorder joins what it has
    except (ConnectionClosedError, ConnectionError) as exc:  # a simulator in another process or machine went away
        interrupted = KeyboardInterrupt()
        lost = f"connection lost: {exc} ([processes] {_placements(scenario)})"
        _shutdown_quietly(world)
    except RemoteException as exc:  # a simulator in another process raised: its own message, not mosaik's plumbing
        _shutdown_quietly(world)
        kind, message, sim_id = (exc.args[0], exc.args[1], exc.args[-1]) if len(exc.args) >= 3 else ("", str(exc), "")
        if kind == "ControllerError":
            raise ControllerError(f"{message} (simulator {sim_id}; [processes] {_placements(scenario)})") from None
        raise RemoteSimulatorError(f"simulator {sim_id} in another process failed: {kind}: {message} "
                                   f"([processes] {_placements(scenario)})") from None
    except BaseException:
        _shutdown_quietly(world)  # lets the recorder join what it has
        raise
    finally:
        gc.unfreeze()
        pacing.PACER = None
        if realtime is not None and realtime.aborted is not None:  # our stop, not the user's: leave no flag set
            STOP.clear()
    run_wall_s = time.perf_counter() - run_start
    if interrupted is not None and (not record or not parquet.exists()):
        raise RunInterrupted(lost or _signal_of(interrupted), out_dir if record else None) from None
    if not record:
        return None

    del world  # the simulators and their state: not needed for the report
    gc.collect()
    recorded = Records(parquet)  # the per-step kinds whole, the others a window of days at a time
    tables: dict[str, pd.DataFrame] = {}
    summary = summaries.summarize(recorded, run, wall_time_s=time.perf_counter() - wall_start, run_wall_s=run_wall_s,
                                  tables=tables)
    summary["versions"] = versions()
    used = data_files(scenario)
    if used:  # the user's own series: which files, exactly
        summary["data_files"] = used
    if scenario.grid.feeder != "ieee33":  # the net's own bus names beside the numbers
        summary["feeder"] = {"spec": scenario.grid.feeder, "title": grid.title, "buses": grid.n_bus,
                             "radial": grid.radial, "slack_buses": list(grid.slack_numbers)}
        for end in ("min", "max"):
            if summary["voltage"].get(f"{end}_bus") is not None:
                summary["voltage"][f"{end}_bus_name"] = grid.name_of(summary["voltage"][f"{end}_bus"])
    if "contract" in summary and scenario.contract is not None and scenario.contract.engine == "evm":
        summary["contract"]["evm"] = summaries.evm_figures(recorded, out_dir / "contract_gas.json")
    if realtime is not None:
        steps = realtime.table()
        summary["realtime"] = realtime.summary(steps)
        steps.to_parquet(out_dir / "realtime.parquet", index=False)
        if len(steps):
            pacing.plot_lateness(steps, realtime.deadline_ms, out_dir / "realtime_lateness.png")
    if record_from_s:  # the wall time covers the warm-up too: per simulated step
        summary["ms_per_step"] = round(1000.0 * run_wall_s / max(summary["steps"] + record_from_s // step_s, 1), 3)
        summary["window"] = {"start": str(times[0] + pd.Timedelta(seconds=record_from_s)),
                             "warm_up_s": record_from_s, "simulated_from": str(times[0]),
                             "note": "the steps before the window were simulated, not recorded: the window's "
                                     "numbers are the whole run's"}
    if interrupted is not None:
        reason = (lost if lost is not None else realtime.aborted if realtime is not None and realtime.aborted
                  else _signal_of(interrupted))
        summary["interrupted"] = {"signal": reason, "steps_recorded": summary["steps"], "steps_planned": n_steps}
    write_text_atomically(out_dir / "summary.json", strict_json(summary))
    plot_module.write_tables(tables, out_dir)
    if plots:
        plot_module.plot_all(recorded, scenario, out_dir, tables)
    if interrupted is not None:
        raise RunInterrupted(summary["interrupted"]["signal"], out_dir) from None
    return Result(out_dir, summary)


def _progress_bar(n_steps: int, step_s: int) -> Any:
    """A progress bar over simulated steps (mosaik's own counts simulated seconds as "steps")."""
    from tqdm import tqdm

    return tqdm(total=n_steps, unit="step", desc=f"simulating {step_s}-s steps", dynamic_ncols=True)


def _placement(scenario: Scenario, kind: str) -> str:
    """Where ``kind`` runs: its ``[processes]`` key (the kind in lower case), or in-process if it cannot move."""
    return getattr(scenario.processes, kind.lower()) if kind in MOVABLE else "inprocess"


def _placements(scenario: Scenario) -> str:
    return ", ".join(f"{k.lower()} = {_placement(scenario, k)!r}" for k in MOVABLE
                     if _placement(scenario, k) != "inprocess")


def sim_config(scenario: Scenario) -> dict[str, Any]:
    """mosaik's sim config for this scenario: :data:`SIM_CONFIG` with ``[processes]`` applied."""
    import sys

    config = {k: dict(v) for k, v in SIM_CONFIG.items()}
    for kind in MOVABLE:
        placement = _placement(scenario, kind)
        if placement == "subprocess":
            config[kind] = {"cmd": f"{sys.executable} -m dercosim.sims.serve {kind} %(addr)s"}
        elif placement.startswith("connect:"):
            config[kind] = {"connect": placement.removeprefix("connect:")}
    return config


def jsonable(value: Any) -> Any:
    """``value`` with numpy arrays and scalars as lists and Python numbers (mosaik's protocol is JSON)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _start(world: "_Wiring", scenario: Scenario, kind: str, **params: Any) -> Any:
    """``world.start``; for a simulator outside this process its init arguments go as JSON. A simulator that
    cannot be started or reached there is a :class:`RemoteSimulatorError` naming its ``[processes]`` key."""
    placement = _placement(scenario, kind)
    try:
        factory = world.start(kind, **(params if placement == "inprocess" else jsonable(params)))
    except SimulationError as exc:
        if placement == "inprocess":
            raise
        hint = (f" (is `dercosim serve {kind.lower()} --addr {placement.removeprefix('connect:')}` running there?)"
                if placement.startswith("connect:") else "")
        raise RemoteSimulatorError(f"processes.{kind.lower()} = {placement!r}: {exc}{hint}") from None
    world.factories[factory._sid] = factory  # for its Table (sims/tables.py)
    return factory


#: entity connections between simulators travel as whole columns (False: one mosaik connection per entity, the
#: slow way; the numbers are the same, which a test checks)
TABLE_LINKS = True


class _Wiring:
    """The world while it is built: a connection between entities of two simulators that have a ``Table``
    (sims/tables.py) is collected, and :meth:`finish` makes one connection per pair of simulators that carries
    whole columns; any other call goes to the mosaik world. What arrives is what the entity connections would
    have delivered (the receiving Table unpacks it into the same per-entity inputs)."""

    def __init__(self, world: mosaik.World) -> None:
        self.world = world
        self.factories: dict[str, Any] = {}  # simulator id -> its mosaik ModelFactory
        #: (source sid, destination sid) -> time-shifted?, and (source, destination, attrs, initial value) each
        self.links: dict[tuple[str, str], dict[str, Any]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.world, name)

    def connect(self, src: Any, dst: Any, *attr_pairs: str | tuple[str, str], time_shifted: bool = False,
                initial_data: dict[str, Any] | None = None, weak: bool = False) -> None:
        group = self.links.get((src.sid, dst.sid))
        if (not TABLE_LINKS or weak or src.sid == dst.sid or src.sid not in self.factories or dst.sid not in self.factories
                or (group is not None and group["shifted"] != bool(time_shifted))):
            self.world.connect(src, dst, *attr_pairs, time_shifted=time_shifted, initial_data=initial_data or {},
                               weak=weak)
            return
        group = self.links.setdefault((src.sid, dst.sid), {"shifted": bool(time_shifted), "pairs": []})
        for pair in attr_pairs:
            a, b = (pair, pair) if isinstance(pair, str) else pair
            if a not in src.model_mock.output_attrs or b not in dst.model_mock.input_attrs:
                raise ValueError(f"cannot connect {src.full_id}.{a} to {dst.full_id}.{b}")
            if time_shifted and a not in (initial_data or {}):
                raise ValueError(f"time-shifted {src.full_id}.{a} -> {dst.full_id}.{b} needs initial data")
            group["pairs"].append((src, dst, a, b, (initial_data or {}).get(a)))

    def finish(self, recorded: dict[str, dict[str, list[Any]]]) -> tuple[dict[str, Any],
                                                                         dict[str, dict[str, list[str | None]]]]:
        """Create every simulator's Table (columns for the collected connections and for ``recorded``: simulator
        id -> attribute -> its entities) and connect the Tables to each other. Returns the Tables by simulator
        id, and for the recorder, per Table full id, {attribute: the full id of the entity at each position,
        None where not recorded}."""
        columns: dict[str, dict[str, list[str]]] = {}  # sid -> attr -> eids, in order: what its Table gives
        where: dict[tuple[str, str], dict[str, int]] = {}  # (sid, attr) -> eid -> its position

        def position(sid: str, attr: str, eid: str) -> int:
            index = where.setdefault((sid, attr), {})
            if eid not in index:
                index[eid] = len(index)
                columns.setdefault(sid, {}).setdefault(attr, []).append(eid)
            return index[eid]

        for sid, cols in recorded.items():
            for attr, ents in cols.items():
                for ent in ents:
                    position(sid, attr, ent.eid)
        unpack: dict[str, dict[str, list[tuple[str, int, str, str, str]]]] = {}  # dst sid -> src sid -> rows
        for (src_sid, dst_sid), group in self.links.items():
            rows = unpack.setdefault(dst_sid, {}).setdefault(src_sid, [])
            for src, dst, a, b, _ in group["pairs"]:
                rows.append((a, position(src_sid, a, src.eid), dst.eid, b, src.full_id))
        sids = list(dict.fromkeys([*columns, *unpack]))
        full_id = {sid: f"{sid}.{TABLE_EID}" for sid in sids}
        tables = {sid: self.factories[sid].Table(
            columns=columns.get(sid, {}),
            inputs={full_id[src]: [list(r) for r in rows] for src, rows in unpack.get(sid, {}).items()})
            for sid in sids}
        # the initial value of a source's Table for its time-shifted links: one per source, holding every link's
        # initial values (mosaik keeps one initial value per source attribute, so a second link's would replace
        # the first's; each destination unpacks only its own positions)
        initial: dict[str, dict[str, list[Any]]] = {}
        for (src_sid, _), group in self.links.items():
            if group["shifted"]:
                values = initial.setdefault(src_sid, {a: [None] * len(eids) for a, eids in columns[src_sid].items()})
                for src, _, a, _, value in group["pairs"]:
                    values[a][where[(src_sid, a)][src.eid]] = value
        for (src_sid, dst_sid), group in self.links.items():
            self.world.connect(tables[src_sid], tables[dst_sid], TABLE_ATTR, time_shifted=group["shifted"],
                               initial_data={TABLE_ATTR: initial[src_sid]} if group["shifted"] else {})
        out = {}
        for sid, cols in recorded.items():
            kept = {attr: {e.eid for e in ents} for attr, ents in cols.items()}
            out[tables[sid].full_id] = {attr: [f"{sid}.{eid}" if eid in kept.get(attr, ()) else None for eid in eids]
                                        for attr, eids in columns[sid].items()}
        return tables, out


def _stop_for(reason: str) -> None:
    """Ask the running world to stop cleanly (the recorder raises at its next step), giving ``reason``."""
    STOP_REASON["signal"] = reason
    STOP.set()


def _signal_of(exc: BaseException) -> str:
    if isinstance(exc, StopRequested):
        return STOP_REASON["signal"]
    return getattr(exc, "signal_name", "SIGINT")


def _shutdown_quietly(world: mosaik.World) -> None:
    """After an error: stop mosaik's simulator tasks, then shut down (the recorder joins what it has)."""
    try:
        pending = [t for t in asyncio.all_tasks(world.loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            world.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        world.shutdown()
    except (Exception, asyncio.CancelledError):  # noqa: BLE001 - the original error matters more
        pass
    finally:
        # shutdown was attempted: no "never shut down" warning at exit on top of the real error
        inner = getattr(world, "_async_world", None)
        if inner is not None:
            inner._shutdown_performed = True


def _build(mosaik_world: mosaik.World, run: RunInputs, out_dir: Path,
           log: Callable[[str], None] = lambda msg: None, record_from_s: int = 0, agent: AgentHook | None = None,
           recording: bool = True) -> Path:
    world = _Wiring(mosaik_world)  # entity connections between simulators travel as whole columns (sims/tables.py)
    scenario, site, times = run.scenario, run.site, run.times
    table, hvac, batteries = run.fleet.households, run.fleet.hvac, run.fleet.batteries
    load_kw, pv_kw, base_shape = run.load_kw, run.pv_kw, run.base_shape
    step_s = scenario.clock.step_s

    grid_sim = _start(world, scenario, "Grid", step_s=step_s)
    replaced = sorted({int(b) for g in scenario.households.groups if g.replaces_case_loads for b in g.buses})
    feeder = grid_sim.Feeder(feeder=scenario.grid.feeder, engine=scenario.grid.engine,
                             base_shape=base_shape.tolist(), line_max_i_ka=scenario.grid.line_max_i_ka,
                             **({"no_base_at": replaced} if replaced else {}))
    buses = {int(child.eid.removeprefix("bus_")): child for child in feeder.children if child.type == "Bus"}
    lines = [child for child in feeder.children if child.type == "Line"]
    entities: dict[str, dict[str, Any]] = {feeder.full_id: {"entity": "feeder", "kind": "feeder", "bus": None}}
    entities.update({b.full_id: {"entity": b.eid, "kind": "bus", "bus": n} for n, b in buses.items()})
    if lines:  # the from-bus of each in-service line, in the engine's order
        net = load_feeder(scenario.grid.feeder).net
        from_bus = (net.line.from_bus[net.line.in_service.astype(bool)].to_numpy(int) + 1).tolist()
        entities.update({ln.full_id: {"entity": ln.eid, "kind": "line", "bus": b} for ln, b in zip(lines, from_bus)})

    households: dict[str, Any] = {}
    # PV inverters that act: on the voltage ([inverters] mode) or on a controller's setpoints
    acting = len(table) > 0 and (scenario.inverters.mode != "unity" or _sets_inverters(scenario, agent))
    if len(table):
        hh_sim = _start(world, scenario, "Households", step_s=step_s, names=table["name"].tolist(),
                             bus=table["bus"].tolist(), load_kw=load_kw, pv_kw=pv_kw,
                             power_factor=table["power_factor"].tolist(),
                             t_outdoor_c=run.outdoor_temperature_c,
                             hvac={k: v.tolist() for k, v in hvac.items()}, wind_kw=run.wind_kw,
                             **({"inverter": _inverter(scenario, table)} if acting else {}))
        households = {e.eid: e for e in hh_sim.Household.create(len(table))}
    has_hvac = dict(zip(table["name"], hvac["p_max_kw"] > 0))
    hh_bus = dict(zip(table["name"], table["bus"].astype(int)))

    battery_of: dict[str, Any] = {}  # household name -> battery entity
    battery_entities = []
    if len(batteries):
        params = {f: batteries[f].astype(float).tolist() for f in BatteryParams.__dataclass_fields__}
        sigma = np.where(batteries["household"] != "", scenario.batteries.subminute_sigma_kw, 0.0)
        bat_sim = _start(world, scenario, "Batteries", step_s=step_s, pms_cycle_s=scenario.batteries.pms_cycle_s,
                              names=batteries["name"].tolist(), params=params,
                              soc_init_kwh=batteries["soc_init_kwh"].tolist(),
                              default_follow=batteries["default_follow"].tolist(),
                              subminute_sigma_kw=sigma.tolist(), subminute_tau_s=scenario.batteries.subminute_tau_s,
                              seed=scenario.seed)
        battery_entities = bat_sim.Battery.create(len(batteries))
        for ent, (_, row) in zip(battery_entities, batteries.iterrows()):
            world.connect(ent, buses[int(row["bus"])], ("meter_kw", "p_kw"))
            entities[ent.full_id] = {"entity": ent.eid, "kind": "battery", "bus": int(row["bus"])}
            if row["household"]:
                battery_of[row["household"]] = ent
                world.connect(households[row["household"]], ent, ("net_kw", "residual_kw"))

    for name, hh in households.items():
        bus = buses[hh_bus[name]]
        if acting:  # the inverter reads its bus's voltage of the previous power flow
            world.connect(bus, hh, "vm_pu", time_shifted=True, initial_data={"vm_pu": 1.0})
        if name in battery_of:
            world.connect(hh, bus, "q_kvar")
        else:
            world.connect(hh, bus, ("net_kw", "p_kw"), "q_kvar")
        entities[hh.full_id] = {"entity": name, "kind": "household", "bus": hh_bus[name]}

    market_entities: list[Any] = []
    contract_entities: list[Any] = []
    members: dict[str, Any] = {}
    if scenario.market is not None:
        market_entities = [_connect_market(world, run, battery_entities)]
        entities[market_entities[0].full_id] = {"entity": "aggregator", "kind": "market", "bus": None}
        if scenario.contract is not None:
            contract, members = _connect_contract(world, run, market_entities[0], battery_of, households,
                                                  out_dir / "contract_gas.json")
            contract_entities = [contract, *members.values()]
            entities[contract.full_id] = {"entity": "contract", "kind": "contract", "bus": None}
            for name, ent in members.items():
                entities[ent.full_id] = {"entity": ent.eid, "kind": "member", "bus": hh_bus[name]}

    ctrls: list[Any] = []
    diagnostics: list[str] = []
    taken = set(agent.households) if agent is not None else set()
    groups: list[_ControllerGroup] = []
    hems = scenario.hems
    if hems.controller is not None and any(n not in taken for n in run.fleet.controlled):
        params = dict(hems.params)
        groups.append(_ControllerGroup(hems.controller, [n for n in run.fleet.controlled if n not in taken],
                                       lambda name: params, hems.on_fault, hems.step_timeout_s,
                                       hems.threads or (os.cpu_count() or 1), hems.batch,
                                       scenario.processes.controllers != "inprocess"))
    if agent is not None and agent.households:  # in this process: it talks to the environment
        groups.append(_ControllerGroup(agent.spec, list(agent.households), agent.params_of, "stop", None, 1, True,
                                       False))
    if groups:
        # profiles and prices from the run's start to a day past its last whole day: what a controller looks
        # ahead at does not depend on where the run stops
        outlook = run.outlook
        import_price, export_price = run.outlook_prices()
        shared = {"names": list(table["name"]), "seed": scenario.seed, "step_s": step_s, "start": times[0].isoformat(),
                  "start_s_of_day": int((times[0] - times[0].normalize()).total_seconds()),
                  "load_kw": run.day_load_kw[outlook], "pv_kw": run.day_pv_kw[outlook],
                  "import_price": import_price, "export_price": export_price, "members": members}
        for group in groups:
            made, named = _connect_controllers(world, run, households, has_hvac, battery_of, buses, hh_bus, shared,
                                               group)
            ctrls += made
            diagnostics += [d for d in named if d not in diagnostics]
        for ctrl in ctrls:
            entities[ctrl.full_id] = {"entity": ctrl.eid, "kind": "controller",
                                      "bus": hh_bus[ctrl.eid.removeprefix("ctrl_")]}

    plan_entities: list[Any] = []
    if scenario.planner is not None:
        plan_entities = _connect_planner(world, run, households, battery_entities, ctrls, log)
        for ent in plan_entities:
            entities[ent.full_id] = {"entity": ent.eid, "kind": "planner" if ent.eid == "operator" else "plan",
                                     "bus": None if ent.eid == "operator" else hh_bus[ent.eid]}

    columns = {a: ("bool" if a == "converged" else "float64") for a in FEEDER_ATTRS + BUS_RECORDED
               + (LINE_ATTRS if lines else [])}
    columns.update({a: "float64" for a in COMMUNITY_OUT + OPERATOR_OUT})
    columns.update({a: "float64" for a in MARKET_OUTPUTS + CONTRACT_OUT + MEMBER_OUT})
    if scenario.contract is not None and scenario.contract.engine == "evm":
        columns.update({a: "float64" for a in EVM_OUT})
    columns.update({a: "float64" for a in HOUSEHOLD_RECORDED + BATTERY_RECORDED + diagnostics
                    + (INVERTER_RECORDED if acting else [])})
    # what is recorded, per simulator: {attribute: its entities}; each simulator hands it over as one Table
    # entity (whole columns, sims/tables.py) instead of one mosaik value per entity and attribute
    recorded: dict[str, dict[str, list[Any]]] = {}

    def record(ent: Any, attrs: list[str]) -> None:
        for attr in attrs:
            recorded.setdefault(ent.sid, {}).setdefault(attr, []).append(ent)

    record(feeder, FEEDER_ATTRS)
    for bus in buses.values():
        record(bus, BUS_RECORDED)
    for line in lines:
        record(line, LINE_ATTRS)
    for hh in households.values():
        record(hh, HOUSEHOLD_RECORDED + (INVERTER_RECORDED if acting else []))
    for ent in battery_entities:
        record(ent, BATTERY_RECORDED)
    for ctrl in ctrls:
        record(ctrl, ctrl.extra_info["diagnostics"])
    for ent in plan_entities:
        record(ent, OPERATOR_OUT if ent.eid == "operator" else COMMUNITY_OUT)
    for ent in market_entities:
        record(ent, MARKET_OUTPUTS)
    for ent in contract_entities:
        evm_out = EVM_OUT if scenario.contract is not None and scenario.contract.engine == "evm" else []
        record(ent, CONTRACT_OUT + evm_out if ent.eid == "contract" else MEMBER_OUT)
    if not recording:
        recorded = {}
    tables, to_record = world.finish(recorded)
    parquet = out_dir / "timeseries.parquet"
    if not recording:
        return parquet
    rec_sim = world.start("Recorder", step_s=step_s)
    recorder = rec_sim.Recorder(path=str(parquet), entities=entities, columns=columns,
                                start=times[0].tz_localize(None).isoformat(), tz=site.tz,
                                flush_every_s=scenario.recorder.flush_every_s, tables=to_record,
                                record_from_s=record_from_s,
                                record_until_s=agent.record_until_s if agent is not None else None)
    for sid in recorded:
        world.connect(tables[sid], recorder, TABLE_ATTR)  # the recorder has no Table: a plain connection
    return parquet


def _sets_inverters(scenario: Scenario, agent: AgentHook | None = None) -> bool:
    """Whether the scenario's controller (or the agent's, for one of its households) declares an inverter setpoint
    (then the households' inverters act)."""
    if agent is not None and any(a in INVERTER_SETPOINTS for n in agent.households
                                 for a in agent.params_of(n).get("outputs", ())):
        return True
    if scenario.hems.controller is None:
        return False
    cls = load_controller_class(scenario.hems.controller, scenario.source_dir)
    return any(a in INVERTER_SETPOINTS for a in getattr(cls, "outputs", ()))


def _inverter(scenario: Scenario, table: pd.DataFrame) -> dict[str, Any]:
    """The households' inverter settings for the household simulator (JSON-serialisable): the mode and curves,
    and each household's rating (kVA per kWp of its array)."""
    inv = scenario.inverters
    return {"mode": inv.mode, "pf": inv.pf, "pf_absorbing": inv.pf_absorbing,
            "volt_var_v_pu": list(inv.volt_var_v_pu), "volt_var_q_frac": list(inv.volt_var_q_frac),
            "volt_watt_v_pu": list(inv.volt_watt_v_pu), "volt_watt_p_frac": list(inv.volt_watt_p_frac),
            "delta_factor": inv.delta_factor,
            "s_rated_kva": (table["pv_kwp"].to_numpy(float) * inv.s_per_kwp).tolist()}


def _connect_contract(world: _Wiring, run: RunInputs, aggregator: Any, battery_of: dict[str, Any],
                      households: dict[str, Any], gas_log_path: Path) -> tuple[Any, dict[str, Any]]:
    """Start the smart contract: every battery household of the portfolio is a member; every other meter of
    the portfolio (the plants, households without a battery) reports its exports."""
    scenario = run.scenario
    c, m = scenario.contract, scenario.market
    assert c is not None and m is not None
    names, meters = run.fleet.contract_members, run.fleet.contract_meters
    times = run.times
    sim = _start(world, scenario, "Contract", step_s=scenario.clock.step_s, round_s=c.interval_s, window_s=c.window_s,
                      interval_s=m.interval_s,
                      start_s_of_day=int((times[0] - times[0].normalize()).total_seconds()), households=names,
                      latency=c.latency.model_dump(), loss_prob=c.loss_prob, seed=scenario.seed, engine=c.engine,
                      evm_fork=c.evm_fork, evm_mode=c.evm_mode, gas_log_path=str(gas_log_path), meters=meters,
                      w_export_rule=c.w_export_rule, anticipate_meters=c.anticipate_meters,
                      target_without_commitment=c.target_without_commitment)
    contract = sim.Contract()
    world.connect(aggregator, contract, "committed_kwh", "soc_target_frac", "mode_s")
    members = dict(zip(names + meters, sim.Member.create(len(names) + len(meters))))
    for name, ent in members.items():
        if name in battery_of:
            world.connect(battery_of[name], ent, "meter_kw", "soc_frac")
        else:  # no battery: the meter is the household's (or plant's) net power
            world.connect(households[name], ent, ("net_kw", "meter_kw"))
    return contract, members


def _connect_market(world: _Wiring, run: RunInputs, battery_entities: list[Any]) -> Any:
    """Start the aggregator and market simulator; every battery reports its stored energy (time-shifted)."""
    from dercosim.markets.aggregator import VirtualBattery

    scenario, bats = run.scenario, run.fleet.batteries
    m = scenario.market
    assert m is not None
    vb = VirtualBattery.of_fleet(bats["capacity_kwh"], bats["p_charge_max_kw"], bats["p_discharge_max_kw"],
                                 bats["eta_charge"], bats["eta_discharge"], bats["soc_min_frac"], bats["soc_max_frac"])
    soc0 = dict(zip(bats["name"], bats["soc_init_kwh"]))
    # summed as the first step sums the batteries' reports (in connection order), so set-up's plan of the first
    # day is the one that step would make
    soc_init_kwh = float(sum(float(soc0[ent.eid]) for ent in battery_entities))
    sim = _start(world, scenario, "Market", step_s=scenario.clock.step_s, interval_s=m.interval_s,
                      battery=vb.__dict__, soc_init_kwh=soc_init_kwh,
                      bid_limit_per_kwh=m.bid_limit_per_kwh, clearing_limit_per_kwh=m.clearing_limit_per_kwh,
                      residual_demand_slope=m.residual_demand_slope if m.clearing == "price_maker" else 0.0,
                      **(run.market_inputs or {}))
    aggregator = sim.Aggregator()
    for ent in battery_entities:
        world.connect(ent, aggregator, "soc_kwh", time_shifted=True, initial_data={"soc_kwh": float(soc0[ent.eid])})
    return aggregator


def _connect_planner(world: _Wiring, run: RunInputs, households: dict[str, Any], battery_entities: list[Any],
                     ctrls: list[Any], log: Callable[[str], None]) -> list[Any]:
    """Start the value-stacking planner: it sets the community batteries and HVAC (Jiang & Wang 2024)."""
    from dercosim.planning.valuestack import Streams
    from dercosim.scenarios.planner_case import admm_settings, build_case

    scenario, batteries = run.scenario, run.fleet.batteries
    p = scenario.planner
    assert p is not None
    case = build_case(run)
    controlled = {c.eid.removeprefix("ctrl_") for c in ctrls}
    clash = sorted(controlled & set(case.names))
    if clash:
        raise ScenarioError(f"planner: households {clash} are communities of the planner and also have a HEMS "
                            f"controller; restrict hems.applies_to or use another household group")
    sim = _start(world, scenario, "Planner", step_s=scenario.clock.step_s, case=case, settings=admm_settings(scenario),
                 replan=p.replan, binaries=p.binaries, central=p.central,
                 streams=Streams(p.streams.b2b, p.streams.b2g, p.streams.trading), log=log)
    plans = sim.Community.create(len(case.names))
    operator = sim.Operator()
    bat_by_name = {e.eid: e for e in battery_entities}
    soc0 = dict(zip(batteries["name"], batteries["soc_init_kwh"]))
    for ent, name, bat_name, t0 in zip(plans, case.names, case.batteries, case.hvac["t0_c"]):
        battery = bat_by_name[bat_name]
        world.connect(ent, battery, "p_set_kw")
        world.connect(battery, ent, "soc_kwh", time_shifted=True, initial_data={"soc_kwh": float(soc0[bat_name])})
        world.connect(ent, households[name], "hvac_set_kw")
        world.connect(households[name], ent, "t_indoor_c", time_shifted=True, initial_data={"t_indoor_c": float(t0)})
    return [*plans, operator]


@dataclass
class _ControllerGroup:
    """Households stepped by one controller class on one controller simulator (see :func:`_connect_controllers`)."""

    spec: str
    names: list[str]
    params_of: Callable[[str], dict[str, Any]]
    on_fault: str
    step_timeout_s: float | None
    threads: int
    batch: bool
    as_json: bool  #: the simulator is in another process: contexts travel as JSON


def _connect_controllers(world: _Wiring, run: RunInputs, households: dict[str, Any], has_hvac: dict[str, bool],
                         battery_of: dict[str, Any], buses: dict[int, Any], hh_bus: dict[str, int],
                         context: dict[str, Any], group: _ControllerGroup) -> tuple[list[Any], list[str]]:
    scenario, batteries = run.scenario, run.fleet.batteries
    names = group.names  # not empty: check_scenario (or the agent's caller) saw to it
    members = context.get("members", {})
    has_pv = dict(zip(run.fleet.households["name"], run.fleet.households["pv_kwp"] > 0))
    io = [household_io(n in battery_of, bool(has_hvac[n]), n in members, bool(has_pv[n])) for n in names]
    available, writable = [a for a, _ in io], [w for _, w in io]
    cls = load_controller_class(group.spec, scenario.source_dir)
    diagnostics = [str(d) for d in getattr(cls, "diagnostics", ())]
    ctrl_sim = _start(world, scenario, "Controllers", step_s=scenario.clock.step_s, diagnostics=diagnostics,
                      on_fault=group.on_fault, step_timeout_s=group.step_timeout_s, threads=group.threads,
                      batch=group.batch)
    diagnostics = diagnostics + HOST_DIAGNOSTICS
    column = {n: j for j, n in enumerate(context["names"])}
    fields = ("capacity_kwh", "p_charge_max_kw", "p_discharge_max_kw", "eta_charge", "eta_discharge", "soc_min_frac",
              "soc_max_frac")
    battery_rows: dict[str, dict[str, float]] = {}
    for row in batteries.to_dict("records"):  # a household's first battery, as before
        if row["household"] and row["household"] not in battery_rows:
            battery_rows[row["household"]] = {k: float(row[k]) for k in fields}
    contexts = [_context(context, n, hh_bus[n], column[n], battery_rows.get(n)) for n in names]
    if group.as_json:  # mosaik's protocol is JSON: arrays travel as lists
        contexts = jsonable(contexts)
    # one create per distinct parameter table (the scenario's controller: one; an agent's: one per kind of household)
    by_params: dict[str, list[int]] = {}
    for j, n in enumerate(names):
        by_params.setdefault(json.dumps(group.params_of(n), sort_keys=True, default=str), []).append(j)
    made: dict[int, Any] = {}
    for rows in by_params.values():
        created = ctrl_sim.Controller.create(len(rows), spec=group.spec, params=dict(group.params_of(names[rows[0]])),
                                             labels=[names[j] for j in rows], available=[available[j] for j in rows],
                                             writable=[writable[j] for j in rows],
                                             base_dir=str(scenario.source_dir), contexts=[contexts[j] for j in rows])
        made.update(zip(rows, created))
    ctrls = [made[j] for j in range(len(names))]
    soc0 = dict(zip(batteries["household"], batteries["soc_init_kwh"]))
    statics = {n: row for n, row in zip(batteries["household"], batteries.to_dict("records"))}
    for name, ctrl in zip(names, ctrls):
        wants = set(ctrl.extra_info["inputs"])
        gives = set(ctrl.extra_info["outputs"])
        hh = households[name]
        same_time = [a for a in HOUSEHOLD_OBS + HVAC_OBS if a in wants]
        if same_time:
            world.connect(hh, ctrl, *same_time)
        if "vm_pu" in wants:
            world.connect(buses[hh_bus[name]], ctrl, "vm_pu", time_shifted=True, initial_data={"vm_pu": 1.0})
        if name in battery_of:
            pairs = [(src, dst) for src, dst in BATTERY_OBS.items() if dst in wants]
            if pairs:
                row = statics[name]
                initial = {"soc_kwh": soc0[name], "soc_frac": soc0[name] / row["capacity_kwh"], "p_kw": 0.0,
                           "meter_kw": math.nan,
                           **{k: row[k] for k in BATTERY_OBS if k in row}}
                world.connect(battery_of[name], ctrl, *pairs, time_shifted=True,
                              initial_data={src: float(initial[src]) for src, _ in pairs})
            to_battery = [a for a in ("p_set_kw", "follow_residual") if a in gives]
            if to_battery:
                world.connect(ctrl, battery_of[name], *to_battery)
        if "hvac_set_kw" in gives:
            world.connect(ctrl, hh, "hvac_set_kw", time_shifted=True, initial_data={"hvac_set_kw": math.nan})
        to_inverter = [a for a in INVERTER_SETPOINTS if a in gives]
        if to_inverter:
            world.connect(ctrl, hh, *to_inverter, time_shifted=True, initial_data={a: math.nan for a in to_inverter})
        contract_obs = [a for a in ("re_kwh", "s_mode", "soc_target_frac") if a in wants]
        if contract_obs:
            world.connect(members[name], ctrl, *contract_obs, time_shifted=True,
                          initial_data={"re_kwh": 0.0, "s_mode": 0.0, "soc_target_frac": math.nan})
    return ctrls, diagnostics


def _context(shared: dict[str, Any], household: str, bus: int, j: int,
             battery: dict[str, float] | None) -> dict[str, Any]:
    """What a controller's optional ``bind(context)`` receives for one household (column ``j`` of the profiles;
    ``battery``: its parameters, None without one)."""
    return {"household": household, "bus": int(bus), "seed": shared["seed"], "step_s": shared["step_s"],
            "start": shared["start"], "start_s_of_day": shared["start_s_of_day"],
            "load_kw": shared["load_kw"][:, j], "pv_kw": shared["pv_kw"][:, j],
            "import_price": shared["import_price"], "export_price": shared["export_price"], "battery": battery}
