"""Build the mosaik world from a validated scenario and run it.

``run_scenario`` draws the households, generates their profiles, starts one
simulator per kind (grid, households, recorder), connects them, runs, and
writes the run folder: ``scenario.toml`` (resolved), ``households.csv``,
``timeseries.parquet``, ``summary.json`` and the plots.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import mosaik

from scenarios import fleet, report
from scenarios.config import Scenario, scenario_to_toml
from sims.grid import FEEDER_ATTRS
from timeseries import weather

SIM_CONFIG = {
    "Grid": {"python": "sims.grid:GridSim"},
    "Households": {"python": "sims.household:HouseholdSim"},
    "Recorder": {"python": "sims.recorder:RecorderSim"},
}
BUS_RECORDED = ["vm_pu", "va_degree", "p_net_kw", "q_net_kvar"]
HOUSEHOLD_RECORDED = ["load_kw", "pv_kw", "net_kw", "q_kvar"]


@dataclass
class RunResult:
    out_dir: Path
    parquet: Path
    summary: dict[str, Any]


def with_duration(scenario: Scenario, duration_s: int) -> Scenario:
    """The scenario with its run length replaced (``--until``)."""
    clock = scenario.clock.model_copy(update={"duration": duration_s})
    return Scenario.model_validate({**scenario.model_dump(), "clock": clock.model_dump()})


def run_scenario(scenario: Scenario, out_dir: str | Path, progress: bool = True,
                 log: Callable[[str], None] = lambda msg: None) -> RunResult:
    """Run ``scenario`` and write its results to ``out_dir`` (created)."""
    wall_start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    step_s = scenario.clock.step_s
    n_steps = scenario.n_steps
    site = weather.get_site(scenario.site.weather)
    times = weather.time_index(scenario.clock.start, n_steps, step_s, site.tz)

    table = fleet.draw_households(scenario)
    log(f"{len(table)} households ({int((table.pv_kwp > 0).sum())} with PV); generating profiles")
    load_kw, pv_kw = fleet.household_profiles(scenario, table, times)
    base_shape = fleet.base_load_shape(scenario, times)
    (out_dir / "scenario.toml").write_text(scenario_to_toml(scenario), encoding="utf-8")
    table.to_csv(out_dir / "households.csv", index=False)

    world = mosaik.World(SIM_CONFIG, time_resolution=1.0, skip_greetings=True, configure_logging=False)
    grid_sim = world.start("Grid", step_s=step_s)
    feeder = grid_sim.Feeder(feeder=scenario.grid.feeder, engine=scenario.grid.engine,
                             base_shape=base_shape.tolist(), line_max_i_ka=scenario.grid.line_max_i_ka)
    buses = {int(child.eid.removeprefix("bus_")): child for child in feeder.children}
    entities: dict[str, dict[str, Any]] = {feeder.full_id: {"entity": "feeder", "kind": "feeder", "bus": None}}
    entities.update({b.full_id: {"entity": b.eid, "kind": "bus", "bus": n} for n, b in buses.items()})

    households = []
    if len(table):
        hh_sim = world.start("Households", step_s=step_s, names=table["name"].tolist(),
                             bus=table["bus"].tolist(), load_kw=load_kw, pv_kw=pv_kw,
                             power_factor=table["power_factor"].tolist())
        households = hh_sim.Household.create(len(table))
        for hh, bus in zip(households, table["bus"]):
            world.connect(hh, buses[int(bus)], ("net_kw", "p_kw"), "q_kvar")
            entities[hh.full_id] = {"entity": hh.eid, "kind": "household", "bus": int(bus)}

    columns = {a: ("bool" if a == "converged" else "float64") for a in FEEDER_ATTRS + BUS_RECORDED}
    columns.update({a: "float64" for a in HOUSEHOLD_RECORDED})
    parquet = out_dir / "timeseries.parquet"
    rec_sim = world.start("Recorder", step_s=step_s)
    recorder = rec_sim.Recorder(path=str(parquet), entities=entities, columns=columns,
                                start=times[0].tz_localize(None).isoformat(), tz=site.tz,
                                flush_every_s=scenario.recorder.flush_every_s)
    world.connect(feeder, recorder, *FEEDER_ATTRS)
    for bus in buses.values():
        world.connect(bus, recorder, *BUS_RECORDED)
    for hh in households:
        world.connect(hh, recorder, *HOUSEHOLD_RECORDED)

    log(f"running {n_steps} steps of {step_s} s from {times[0]:%Y-%m-%d %H:%M} ({site.tz})")
    run_start = time.perf_counter()
    world.run(until=n_steps * step_s, print_progress=progress)
    run_wall_s = time.perf_counter() - run_start

    summary = report.summarize(parquet, scenario, table, wall_time_s=time.perf_counter() - wall_start,
                               run_wall_s=run_wall_s)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    report.plot_all(parquet, scenario, out_dir)
    return RunResult(out_dir=out_dir, parquet=parquet, summary=summary)
