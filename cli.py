"""dercosim's command line: run, show and list scenarios; the papers' studies; sweeps; served simulators; validation.

    dercosim run SCENARIO [--until 6h] [--start 10:00] [--out runs/] [-q | -v] [--set KEY=VALUE] [--seed N]
                          [--realtime [FACTOR] [--deadline-ms MS] [--realtime-abort-after N]] [--baseline RUN_DIR]
    dercosim show SCENARIO
    dercosim list
    dercosim study modes SCENARIO [--max-iter N] [--out runs/]
    dercosim study streams SCENARIO [SCENARIO ...] [--central-only] [--milp] [--out runs/]
    dercosim study shared-storage | cluster-sizing | price-maker [--seed N] [--out runs/]
    dercosim serve controllers|grid|households|batteries|market|contract [--addr HOST:PORT] [--controller file.py:Class]
    dercosim sweep SCENARIO --set KEY=V1,V2 [--set ...] [--seeds N] [--workers N | --scheduler ADDR] [--resume DIR]
    dercosim validate RUN_DIR|SCENARIO [--model NAME] [--engine-check N]

SCENARIO is a path to a TOML file or the name of a bundled scenario.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from typing import Any, Callable
import tomllib
from datetime import datetime
from pathlib import Path

from dercosim.controllers.registry import ControllerError
from dercosim.scenarios.bundled import bundled_scenarios, resolve_path
from dercosim.scenarios.config import ScenarioError, Scenario, parse_duration_s, scenario_to_toml
from dercosim.scenarios.load import checked, load_scenario
from dercosim.sims import MOVABLE

#: dercosim's messages (progress, details); configured by main() from -q / -v
LOG = logging.getLogger("dercosim")


def _load(arg: str) -> tuple[Path, Scenario]:
    path = resolve_path(arg)
    return path, load_scenario(path)


def make_run_dir(parent: Path, name: str, when: datetime | None = None) -> Path:
    """Create ``parent/<name>-<timestamp>`` exclusively (``-2``, ``-3``, … on collision) and return it.

    Two runs started in the same second into the same folder get two folders;
    a bad ``parent`` (a file, read-only, no space) is a :class:`ScenarioError`.
    """
    stamp = f"{name}-{(when or datetime.now()):%Y%m%d-%H%M%S}"
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ScenarioError(f"--out: {parent} is a file, not a folder") from None
    except OSError as exc:
        raise ScenarioError(f"--out: cannot create {parent} ({exc.strerror or exc})") from None
    if not parent.is_dir():
        raise ScenarioError(f"--out: {parent} is not a folder")
    for k in range(1, 10_000):
        candidate = parent / (stamp if k == 1 else f"{stamp}-{k}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
        except OSError as exc:
            raise ScenarioError(f"--out: cannot create a run folder in {parent} ({exc.strerror or exc})") from None
    raise ScenarioError(f"--out: {parent} already has 9,999 runs named {stamp}")


class _StopOnSignals:
    """While active, SIGTERM and SIGINT stop the run cleanly at the next step: what was recorded is joined.

    A second signal stops at once (what the recorder flushed so far stays readable in its parts).
    """

    def __enter__(self) -> _StopOnSignals:
        import signal
        import threading

        from dercosim.sims.recorder import STOP

        STOP.clear()
        self.previous = {}
        self.late_signal: str | None = None
        if threading.current_thread() is not threading.main_thread():
            return self

        def stop(signum: int, frame: object) -> None:
            from dercosim.scenarios.world import RunInterrupted
            from dercosim.sims.recorder import STOP, STOP_REASON

            if STOP.is_set():  # asked twice: now
                raise RunInterrupted(signal.Signals(signum).name)
            STOP_REASON["signal"] = signal.Signals(signum).name
            STOP.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            self.previous[sig] = signal.signal(sig, stop)
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        from dercosim.sims.recorder import STOP, STOP_REASON

        #: a signal that came after the last step (while the results were joined and reported): still a stop
        self.late_signal = STOP_REASON.get("signal") if STOP.is_set() else None
        STOP.clear()
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _with_overrides(path: Path, overrides: list[str]) -> Scenario:
    """The scenario file at ``path`` with each ``KEY=VALUE`` of ``run --set`` (the syntax of ``sweep --set``, one
    value) applied to its TOML, validated again as a whole: a wrong key or value names its key path."""
    import tomllib

    from dercosim.studies.sweep import parse_set, set_path, validate_data

    data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    for text in overrides:
        key, values = parse_set(text)
        if len(values) != 1:
            raise ScenarioError(f"--set {text!r}: run takes one value per key (several are a sweep: dercosim sweep)")
        data = set_path(data, key, values[0])
    return validate_data(data, path)


def cmd_run(args: argparse.Namespace) -> int:
    from dercosim.scenarios.world import RunInterrupted, run_scenario, with_duration

    path, scenario = _load(args.scenario)
    overrides = list(args.set or []) + ([f"seed={args.seed}"] if args.seed is not None else [])
    if overrides:
        scenario = _with_overrides(path, overrides)
    if args.until is not None:
        try:
            until_s = parse_duration_s(args.until)
        except ValueError as exc:
            raise ScenarioError(f"--until: {exc}") from None
        if until_s % scenario.clock.step_s:
            raise ScenarioError(f"--until: {until_s} s is not a whole number of {scenario.clock.step_s}-s steps")
    record_from_s = 0
    if args.start is not None:
        from dercosim.api import window

        scenario, record_from_s = window(scenario, args.start, args.until, f"{path} (--start {args.start})")
    elif args.until is not None:
        scenario = checked(with_duration(scenario, until_s), f"{path} (--until {args.until})")
    baseline = _baseline_bills(args.baseline, scenario) if args.baseline else None
    pacer = None
    if not math.isfinite(args.deadline_ms) or args.deadline_ms < 0:
        raise ScenarioError(f"--deadline-ms: expected a number of milliseconds >= 0, got {args.deadline_ms}")
    if args.realtime is not None:
        from dercosim.sims.pacing import Pacer

        try:
            pacer = Pacer(factor=args.realtime, step_s=scenario.clock.step_s, deadline_ms=args.deadline_ms,
                          abort_after=args.realtime_abort_after,
                          say=lambda msg: print(msg, file=sys.stderr, flush=True))
        except ValueError as exc:
            raise ScenarioError(f"--realtime: {exc}") from None
    elif args.realtime_abort_after is not None or args.deadline_ms != 0.0:
        raise ScenarioError("--deadline-ms and --realtime-abort-after need --realtime")
    out_dir = make_run_dir(Path(args.out), scenario.name)
    say = LOG.info
    say(f"dercosim: {path} -> {out_dir}")
    if LOG.isEnabledFor(logging.DEBUG):
        from dercosim.environment import versions
        from dercosim.scenarios.world import _placements

        LOG.debug("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items() if v is not None))
        LOG.debug(f"simulators: {_placements(scenario)}")
        if record_from_s:
            LOG.debug(f"window: {record_from_s} s simulated before recording starts")

    def kept() -> str:
        if (out_dir / "timeseries.parquet").exists() or (out_dir / "timeseries.parquet.parts").exists():
            return f"; what ran before it is kept in {out_dir}"
        return ""

    stopper = _StopOnSignals()
    try:
        with stopper:
            result = run_scenario(scenario, out_dir, progress=not args.quiet, log=say, realtime=pacer,
                                  record_from_s=record_from_s)
    except RunInterrupted as exc:
        summary = out_dir / "summary.json"
        print(f"stopped by {exc.signal_name}" + (f"; what was recorded is joined in {out_dir / 'timeseries.parquet'}"
                                                  f" and summarised in {summary}" if summary.exists() else kept()),
              file=sys.stderr)
        if exc.signal_name.startswith("realtime"):
            return 4
        if exc.signal_name.startswith("connection lost"):
            return 1
        return 130 if exc.signal_name == "SIGINT" else 143
    except ControllerError as exc:
        raise ControllerError(f"{exc}{kept()}") from None
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise RunError(f"writing the results failed: {exc.strerror or exc}{where}{kept()}") from None
    s = result.summary
    if baseline is not None:
        s["bill_reduction"] = bill_reduction(s, baseline)
        from dercosim.scenarios.world import strict_json, write_text_atomically

        write_text_atomically(out_dir / "summary.json", strict_json(s))
        r = s["bill_reduction"]
        print(f"bills {r['bill_total']:.2f} against {r['baseline_bill_total']:.2f} in {r['baseline']}: "
              f"reduction {r['reduction']:.2f} ({r['reduction_pct']:.1f} %) for {r['households']} households")
    v = s["voltage"]
    setup_s = s["wall_time_s"] - s["run_wall_time_s"]
    simulated = (f" recorded of {s['steps'] + s['window']['warm_up_s'] // s['step_s']} simulated" if "window" in s
                 else "")
    print(f"{s['steps']} steps{simulated} in {s['run_wall_time_s']:.1f} s ({s['ms_per_step']:.2f} ms/step), after "
          f"{setup_s:.1f} s of set-up (the report follows); power flow failures: {s['powerflow']['failures']}")
    if v["min_pu"] is None:
        print("voltage: no power flow converged")
    else:
        names = {end: f" {v[end + '_bus_name']!r}" if f"{end}_bus_name" in v else "" for end in ("min", "max")}
        print(f"voltage {v['min_pu']:.4f} pu (bus {v['min_bus']}{names['min']}) .. {v['max_pu']:.4f} pu "
              f"(bus {v['max_bus']}{names['max']}); "
              f"{v['minutes_outside_limits']:.0f} min outside {v['limits_pu']}")
    losses = s["energy_kwh"]["line_losses"]
    print(f"line losses {'unknown' if losses is None else f'{losses:.1f} kWh'}")
    m = s.get("market")
    if m is not None and m.get("intervals"):
        print(f"market: {m['intervals']} intervals, revenue {m['wholesale_revenue']:.2f} {m['currency']}, imbalance "
              f"cost {m['imbalance_cost']:.2f}, net {m['market_revenue_net']:.2f}; household bills "
              f"{m['bill_total']:.2f} {m['currency']} in total")
    elif s.get("households", {}).get("bill_total") is not None:
        h = s["households"]
        print(f"household bills {h['bill_total']:.2f} {h['currency']} in total ({h['count']} households)")
    if "window" in s:
        print(f"the window from {s['window']['start']}: {s['window']['warm_up_s']} s before it were simulated, "
              f"not recorded")
    print(f"results in {result.out_dir}")
    late = stopper.late_signal
    if late is not None:  # the run had finished: its results are whole, but the process was asked to stop
        print(f"stopped by {late} after the last step; the results are complete", file=sys.stderr)
        return 130 if late == "SIGINT" else 143
    return 0


def _baseline_bills(run_dir: str, scenario: Scenario) -> dict:
    """The per-household bills of a finished run folder (``--baseline``), checked before anything is written: the
    baseline must cover the same period at the same step, bill with the same tariff and share households with
    ``scenario``; otherwise one line says what differs."""
    import json

    import pandas as pd

    from dercosim.scenarios.fleet import Fleet

    folder = Path(run_dir)
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        per = summary["households"]["per_household"]
        bills = {name: float(v["bill"]) for name, v in per.items()}
        theirs = tomllib.loads((folder / "scenario.toml").read_text(encoding="utf-8"))
        start, steps, step_s = pd.Timestamp(summary["start"]), int(summary["steps"]), int(summary["step_s"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ScenarioError(f"--baseline: {run_dir} is not a finished run folder with household bills "
                            f"({type(exc).__name__}: {exc})") from None
    differs = []
    ours_start = pd.Timestamp(scenario.clock.start)
    if start.tz_localize(None) != ours_start:
        differs.append(f"start {start.tz_localize(None)} vs {ours_start}")
    if steps * step_s != scenario.n_steps * scenario.clock.step_s:
        differs.append(f"length {steps * step_s} s vs {scenario.n_steps * scenario.clock.step_s} s")
    if step_s != scenario.clock.step_s:
        differs.append(f"step {step_s} s vs {scenario.clock.step_s} s")
    ours_tariff = scenario.tariff.model_dump(mode="json")
    try:
        their_config = Scenario.model_validate({"name": "baseline", "tariff": theirs.get("tariff", {})}).tariff
    except ValueError as exc:
        raise ScenarioError(f"--baseline: {folder / 'scenario.toml'}: not a dercosim scenario's tariff "
                            f"({str(exc).splitlines()[0]})") from None
    their_tariff = their_config.model_dump(mode="json")
    changed = sorted(k for k in ours_tariff if ours_tariff[k] != their_tariff.get(k))
    if changed:
        differs.append(f"tariff ({', '.join(f'tariff.{k}' for k in changed)})")
    if bills and not any(bills.values()):
        differs.append("every baseline bill is 0 (nothing to reduce)")
    if not set(bills) & set(Fleet.draw(scenario).households["name"]):
        differs.append("no household in common")
    if differs:
        raise ScenarioError(f"--baseline {run_dir}: not comparable with {scenario.name}: " + "; ".join(differs))
    return {"run": str(run_dir), "bills": bills, "currency": summary["households"].get("currency")}


def bill_reduction(summary: dict, baseline: dict) -> dict:
    """Bill reduction against a baseline run (e.g. fleet_market_s0), over the households both runs have."""
    per = summary["households"]["per_household"]
    common = [n for n in per if n in baseline["bills"]]
    ours = sum(float(per[n]["bill"]) for n in common)
    theirs = sum(baseline["bills"][n] for n in common)
    return {"baseline": baseline["run"], "households": len(common), "bill_total": ours,
            "baseline_bill_total": theirs, "reduction": theirs - ours,
            "reduction_pct": 100.0 * (theirs - ours) / theirs if theirs else None,
            "per_household": {n: baseline["bills"][n] - float(per[n]["bill"]) for n in common}}


class RunError(Exception):
    """A run could not finish for a reason outside the scenario (e.g. the disk); the message says where."""


def cmd_show(args: argparse.Namespace) -> int:
    path, scenario = _load(args.scenario)
    print(f"# resolved scenario from {path}")
    print(scenario_to_toml(scenario), end="")
    if scenario.hems.controller is not None:
        from dercosim.controllers.registry import load_controller_class
        from dercosim.scenarios.reference import parameter_table

        cls = load_controller_class(scenario.hems.controller, scenario.source_dir)
        table = parameter_table(cls, dict(scenario.hems.params))
        print(f"\n# controller {scenario.hems.controller!r} ({cls.__module__}.{cls.__qualname__}): its parameters "
              f"(hems.params), as this scenario runs them; * = set by the scenario, else the default")
        width = max((len(f"{n} = {_toml_value(v)}") for n, v, _, _ in table), default=0)
        for name, value, default, what in table:
            mark = "*" if name in scenario.hems.params else " "
            shown = f"{name} = {_toml_value(value)}"
            note = f"default {_toml_value(default)}" + (f"; {what}" if what else "")
            print(f"# {mark} {shown:<{width}}  # {note}")
    return 0


def _toml_value(value: Any) -> str:
    """A parameter value as TOML writes it (inf as inf, strings quoted); ``...`` (required) as "required"."""
    if value is ...:
        return "required"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def cmd_list(args: argparse.Namespace) -> int:
    for name, path in sorted(bundled_scenarios().items()):
        try:
            with path.open("rb") as fh:
                description = tomllib.load(fh).get("description", "")
        except (OSError, tomllib.TOMLDecodeError) as exc:
            description = f"(unreadable: {exc})"
        print(f"{name:32s} {description}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    import json

    from dercosim.studies import value_stacking as studies

    say = LOG.info
    if args.what == "fleet":
        return _study_fleet(args, say)
    if args.what in ("contract-interval", "forecast"):
        return _study_sensitivity(args, say)
    if args.what in ("shared-storage", "cluster-sizing", "price-maker"):
        return _study_sharing(args, say)
    if not args.scenario:
        raise ScenarioError(f"study {args.what}: give a value-stacking scenario (e.g. value_stacking_tou)")
    loaded = [_load(arg) for arg in args.scenario]
    for path, scenario in loaded:
        if scenario.planner is None:
            raise ScenarioError(f"{path}: no [planner] table; the studies need a value-stacking scenario "
                                f"(e.g. value_stacking_tou)")
    stem = "-".join(s.name for _, s in loaded)
    out_dir = make_run_dir(Path(args.out), f"{stem}-{args.what}")
    if args.what == "modes":
        if len(loaded) != 1:
            raise ScenarioError("study modes: give one scenario")
        path, scenario = loaded[0]
        say(f"dercosim: ADMM modes on the first day of {path} -> {out_dir}")
        study = studies.compare_modes(scenario, max_iter=args.max_iter, log=say)
        study.table.to_csv(out_dir / "admm_modes.csv", index=False)
        study.history.to_csv(out_dir / "admm_history.csv", index=False)
        studies.plot_convergence(study, f"{scenario.name}: ADMM residuals per iteration (first day)",
                                 out_dir / "admm_convergence.png")
        (out_dir / "admm_modes.json").write_text(json.dumps({
            "scenario": scenario.name, "currency": study.currency, "central_cost": study.central_cost,
            "central_objective": study.central_objective,
            "modes": json.loads(study.table.to_json(orient="records"))}, indent=2), encoding="utf-8")
        cols = ["mode", "iterations", "converged", "time_to_decision_s", "wall_s", "cost", "gap_pct", "rho_final"]
        print(f"centralised optimum: {study.central_cost:.2f} {study.currency}")
        print(studies.format_table(study.table[cols]))
    else:
        tables = {}
        for path, scenario in loaded:
            say(f"dercosim: value streams on the first day of {path}")
            tables[scenario.name] = studies.value_streams(scenario, admm=not args.central_only, log=say,
                                                          milp=args.milp)
        frame = pd_concat({name: st.table for name, st in tables.items()})
        frame.to_csv(out_dir / "value_streams.csv", index=False)
        studies.plot_streams(tables, out_dir / "value_streams.png")
        shown = [c for c in ("scenario", "variant", "central_relaxed_cost", "central_cost", "central_milp_cost",
                             "admm_cost",
                             "admm_iterations", "central_relaxed_contribution_pct", "central_contribution_pct",
                             "central_milp_contribution_pct", "admm_contribution_pct", "network_limits")
                 if c in frame]
        print(studies.format_table(frame[shown]))
    print(f"results in {out_dir}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from dercosim.studies import sweep

    from dercosim.environment import MissingExtra, require_extra

    try:
        require_extra("sweep")
    except MissingExtra as exc:
        raise ScenarioError(f"sweep: {exc}") from None
    say = LOG.info
    path, scenario = _load(args.scenario)
    if not args.set:
        raise ScenarioError("sweep: give at least one --set KEY=V1,V2 (e.g. --set contract.interval_s=60,300)")
    sets = [sweep.parse_set(text) for text in args.set]
    until_s = _until_s(args.until, scenario) if args.until is not None else None
    if args.workers is not None and args.workers < 1:
        raise ScenarioError(f"--workers must be at least 1, got {args.workers}")
    cases = sweep.plan_cases(path, sets, seeds=args.seeds, until_s=until_s)
    if all(c.error is not None for c in cases):
        raise ScenarioError("sweep: no valid case; nothing was run or written:\n" + "\n".join(
            f"  {c.case}: {c.error}" for c in cases))
    if args.resume:
        out_dir = Path(args.resume)
        if not (out_dir / "sweep.parquet").exists():
            raise ScenarioError(f"--resume {out_dir}: no sweep.parquet there (not a sweep folder)")
    else:
        out_dir = make_run_dir(Path(args.out), f"{scenario.name}-sweep")
    table = sweep.run_sweep(path, cases, out_dir, workers=args.workers, scheduler=args.scheduler, log=say)
    counts = table.status.value_counts().to_dict()
    print(f"{len(table)} cases: " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    print(f"results in {out_dir} (sweep.parquet, sweep.md)")
    return 0 if counts.get("failed", 0) == 0 and counts.get("invalid", 0) == 0 else 1


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve a simulator (controllers or grid) for runs whose ``[processes]`` say ``connect:HOST:PORT``."""
    from dercosim.sims.serve import parse_addr, serve

    kind = {k.lower(): k for k in MOVABLE}[args.kind]
    try:
        parse_addr(args.addr)
    except ValueError as exc:
        raise ScenarioError(f"--addr: {exc}") from None
    if args.controller is not None:
        if kind != "Controllers":
            raise ScenarioError("--controller is for `dercosim serve controllers`")
        from dercosim.controllers.registry import load_controller_class

        load_controller_class(args.controller, Path.cwd())  # a wrong file or class is said now, not mid-run
    def ready() -> None:
        print(f"dercosim: serving {args.kind} at {args.addr}"
              + (f" with {args.controller}" if args.controller else "") + "; waiting for a run to connect",
              file=sys.stderr, flush=True)

    try:
        serve(kind, args.addr, server=True, controller=args.controller, start_timeout_s=args.timeout_s, ready=ready,
              say=lambda msg: print(msg, file=sys.stderr, flush=True))
    except OSError as exc:
        raise RunError(f"cannot serve at {args.addr}: {exc.strerror or exc}") from None
    except RuntimeError as exc:
        raise RunError(f"{args.addr}: {exc}") from None
    print(f"dercosim: the run at {args.addr} has ended", file=sys.stderr)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from dercosim.analysis.validate import validate

    say = LOG.info
    target = Path(args.target)
    if not target.is_dir():  # a scenario: run it first
        path, scenario = _load(args.target)
        from dercosim.scenarios.world import run_scenario, with_duration

        if args.until is not None:
            scenario = with_duration(scenario, _until_s(args.until, scenario))
        target = make_run_dir(Path(args.out), scenario.name)
        say(f"dercosim: running {path} -> {target}")
        with _StopOnSignals():
            run_scenario(scenario, target, progress=not args.quiet, log=say)
    r = validate(target, args.model, args.engine_check, log=say)
    for name, m in r["models"].items():
        c = m["violations"]["minutes"]
        print(f"{name:24s} max |error| {m['max_abs_error_pu']:.5f} pu (bus {m['at_bus']}), mean {m['mean_error_pu']:+.5f}; "
              f"{'conservative' if m['conservative_for_undervoltage'] else 'NOT conservative'} for undervoltage; "
              f"violation minutes missed {c['missed']}, false alarms {c['false_alarm']}")
    for name, why in r.get("models_refused", {}).items():
        print(f"{name:24s} refused: {why}")
    e = r["engine_check"]
    if e.get("minutes"):
        print(f"engine cross-check: {e['minutes']} minutes, max |dV| {e['max_abs_diff_pu']:.2e} pu "
              f"({'agrees' if e['agrees'] else 'DOES NOT AGREE'})")
    print(f"report in {target / 'validation' / 'validation.md'}")
    return 0 if e.get("agrees", True) else 1


def _until_s(until: str, scenario: Scenario) -> int:
    try:
        until_s = parse_duration_s(until)
    except ValueError as exc:
        raise ScenarioError(f"--until: {exc}") from None
    if until_s % scenario.clock.step_s:
        raise ScenarioError(f"--until: {until_s} s is not a whole number of {scenario.clock.step_s}-s steps")
    return until_s


def _study_sharing(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    """Shared storage (Zhao et al. 2024), the microgrid cluster (Feng et al. 2025), price-maker storage
    (Solà Vilalta et al. 2022): ADMM against centralised solves, no co-simulation."""
    import json

    from dercosim.studies import sharing as ss
    from dercosim.studies.value_stacking import format_table

    if args.scenario:
        raise ScenarioError(f"study {args.what} takes no scenario: its case is built from the seed (--seed)")
    if args.what == "price-maker":  # checked before the study folder is made
        try:
            units = tuple(int(u) for u in args.units.split(","))
        except ValueError:
            raise ScenarioError(f"--units: expected comma-separated whole numbers, got {args.units!r}") from None
        if any(u < 1 for u in units):
            raise ScenarioError(f"--units: every fleet needs at least 1 unit, got {args.units!r}")
        try:
            ss.gb_prices(args.days)
        except ValueError as exc:
            raise ScenarioError(f"--days: {exc}") from None
    out_dir = make_run_dir(Path(args.out), args.what)
    say(f"dercosim: {args.what} study (seed {args.seed}) -> {out_dir}")
    if args.what == "shared-storage":
        st = ss.shared_storage_study(seed=args.seed)
        st.runs.to_csv(out_dir / "iterations.csv", index=False)
        ss.plot_iterations(st, out_dir / "iterations.png")
        cases = {"alone": st.alone, "shared (centralised)": st.central, "shared, E = 0.3 P (literal)": st.literal_gamma}
        summary = {name: {"cost_cny": o.total_cost, "self_sufficiency": o.self_sufficiency, "station_kwh": o.e_kwh,
                          "station_kw": o.p_kw} for name, o in cases.items()}
        (out_dir / "shared_storage.json").write_text(json.dumps(
            {"cases": summary, "paper": {k: v for k, v in ss.PAPER_PROSUMERS.items() if k != "iterations"},
             "runs": json.loads(st.runs.to_json(orient="records"))}, indent=2), encoding="utf-8")
        for name, v in summary.items():
            print(f"{name:28s} cost {v['cost_cny']:9.2f} CNY  self-sufficiency {100 * v['self_sufficiency']:5.1f} %  "
                  f"station {v['station_kwh']:7.1f} kWh / {v['station_kw']:6.1f} kW")
        print(f"{'paper (Zhao et al. 2024)':28s} cost {1090.78:9.2f} -> {1042.82:.2f} CNY  self-sufficiency "
              f"71.05 -> 92.91 %  station 333.50 kWh")
        table = st.runs.pivot(index="rho0", columns="variant", values="iterations")[list(ss.VARIANTS)].reset_index()
        table["paper_admm"] = [ss.PAPER_PROSUMERS["iterations"].get(r, (None, None))[0] for r in table.rho0]
        table["paper_aadmm"] = [ss.PAPER_PROSUMERS["iterations"].get(r, (None, None))[1] for r in table.rho0]
        print("iterations (fixed ρ; adaptive, engine defaults; adaptive, factor 3 / ratio 1.25):")
        print(format_table(table))
        print(f"largest |gap| to the centralised optimum: {st.runs.gap.abs().max():.2e}")
    elif args.what == "cluster-sizing":
        cl = ss.cluster_sizing_study(seed=args.seed)
        admm = cl.admm.admm
        assert admm is not None
        cl.table.to_csv(out_dir / "cluster.csv", index=False)
        admm.history.to_csv(out_dir / "admm_history.csv", index=False)
        ss.plot_cluster(cl, out_dir / "cluster.png")
        gap = (cl.admm.total_cost - cl.central.total_cost) / cl.central.total_cost
        (out_dir / "cluster.json").write_text(json.dumps({
            "station_kwh": cl.admm.e_kwh, "station_kw": cl.admm.p_kw, "central_station_kwh": cl.central.e_kwh,
            "central_station_kw": cl.central.p_kw, "cost_alone_cny": cl.alone.total_cost,
            "cost_shared_cny": cl.admm.total_cost, "central_cost_cny": cl.central.total_cost, "gap": gap,
            "iterations": admm.iterations, "converged": admm.converged,
            "paper": ss.PAPER_CLUSTER, "table": json.loads(cl.table.to_json(orient="records"))}, indent=2),
            encoding="utf-8")
        print(f"station {cl.admm.e_kwh:,.1f} kWh, {cl.admm.p_kw:,.1f} kW (centralised {cl.central.e_kwh:,.1f} kWh, "
              f"{cl.central.p_kw:,.1f} kW; paper 13,898.72 kWh, 2,869.35 kW)")
        print(format_table(cl.table, "{:,.2f}"))
        print(f"ADMM: {admm.iterations} iterations, converged {admm.converged}, gap to the "
              f"centralised optimum {gap:+.2e}; self-sufficiency {100 * cl.alone.self_sufficiency:.1f} % alone, "
              f"{100 * cl.admm.self_sufficiency:.1f} % shared")
    else:
        table = ss.price_maker_study(units=units, days=args.days, seed=args.seed, log=say)
        table.to_csv(out_dir / "price_maker.csv", index=False)
        ss.plot_price_maker(table, out_dir / "price_maker.png")
        shown = [c for c in ("units", "central_cost", "admm_cost", "admm_gap", "admm_iterations", "central_s",
                             "admm_s", "rolling_gap", "rolling_s", "traded_mwh", "price_taker_traded_mwh")
                 if c in table]
        print(format_table(table[shown]))
    print(f"results in {out_dir}")
    return 0


def _study_sensitivity(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    """contract-interval and forecast studies (Couraud et al. 2022, Figs. 7 and 8) on a contract scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dercosim.studies.fleet import sensitivity, sensitivity_cases

    path, scenario = _load(args.scenario[0] if args.scenario else "fleet_market_s4")
    if scenario.contract is None or scenario.market is None:
        raise ScenarioError(f"{path}: study {args.what} needs a scenario with [market] and [contract] "
                            f"(e.g. fleet_market_s4)")
    if not args.until and args.days < 1:
        raise ScenarioError(f"--days: expected at least 1 day, got {args.days}")
    duration_s = _until_s(args.until, scenario) if args.until else int(args.days) * 86400

    def numbers(text: str, key: str, kind: type) -> list:
        try:
            return [kind(v) for v in text.split(",")]
        except ValueError:
            raise ScenarioError(f"--{key}: expected comma-separated numbers, got {text!r}") from None

    if args.what == "contract-interval":
        minutes = numbers(args.intervals, "intervals", int)
        variants = [(f"t_sc={m}min", {"contract": {"interval_s": 60 * m}}) for m in minutes]
    else:
        acc, steps = numbers(args.accuracy, "accuracy", float), numbers(args.steps, "steps", int)
        variants = [(f"acc={a:g}_step={st}min", {"market": {"forecast": {"kind": "noisy", "accuracy": a,
                                                                          "step_min": st}}})
                    for a in acc for st in steps]
    cases = sensitivity_cases(path, scenario, variants, duration_s)  # every variant is checked before anything runs
    out_dir = make_run_dir(Path(args.out), f"{scenario.name}-{args.what}")
    say(f"dercosim: {args.what} study of {path}: {len(variants)} runs of {duration_s / 3600:g} h -> {out_dir}")
    table = sensitivity(path, cases, out_dir, args.workers, log=say)
    table.to_csv(out_dir / f"{args.what}.csv", index=False)
    fig, ax = plt.subplots(figsize=(8, 4))
    if args.what == "contract-interval":
        ax.plot(minutes, table["revenue_minus_bills"], "o-")
        ax.set_xlabel("contract interval t_sc (min)")
    else:
        for a in acc:
            sel = table["case"].str.startswith(f"acc={a:g}_")
            ax.plot(steps, table.loc[sel, "revenue_minus_bills"], "o-", label=f"accuracy {a:g}")
        ax.set_xlabel("minutes between forecast points")
        ax.legend(fontsize=8)
    ax.set_ylabel("market − imbalance − bills (GBP)")
    ax.set_title(f"{scenario.name}: total revenue (up to the s0 bills) by {args.what}")
    fig.tight_layout()
    fig.savefig(out_dir / f"{args.what}.png", dpi=110)
    plt.close(fig)
    print(table.drop(columns=["error"]).to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    for _, r in table[table.status != "ok"].iterrows():
        print(f"{r['case']}: {r['status']}: {r['error']}", file=sys.stderr)
    print(f"results in {out_dir}")
    return 0 if (table.status == "ok").all() else 1


def _study_fleet(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    from dercosim.studies.fleet import CASES, fleet_study

    if args.until is not None:
        try:
            duration_s = parse_duration_s(args.until)
        except ValueError as exc:
            raise ScenarioError(f"--until: {exc}") from None
    else:
        duration_s = int(args.days) * 86400
    if duration_s % 60 or not 0 < duration_s <= 31 * 86400:
        raise ScenarioError("study fleet: the period must be whole minutes, at most 31 days (the bundled GB prices "
                            "cover June-July 2016)")
    cases = tuple(c.strip() for c in args.cases.split(",")) if args.cases is not None else CASES
    bad = [c for c in cases if c not in CASES]
    if bad:
        raise ScenarioError(f"--cases: unknown {bad}; expected some of {', '.join(CASES)}")
    out_dir = make_run_dir(Path(args.out), "fleet-study")
    say(f"dercosim: fleet study {', '.join(cases)} over {duration_s / 86400:g} days, "
        f"{args.workers or os.cpu_count()} processes -> {out_dir}")
    table = fleet_study(out_dir, duration_s, cases, args.workers, log=say)
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"results in {out_dir}")
    return 0


def pd_concat(tables: dict) -> Any:
    """Stack per-scenario tables with a leading ``scenario`` column."""
    import pandas as pd

    return pd.concat([t.assign(scenario=name)[["scenario", *t.columns]] for name, t in tables.items()],
                     ignore_index=True)


def _configure_logging(verbosity: int) -> None:
    """dercosim's messages through :mod:`logging` (logger ``dercosim``) on stderr: ``-q`` warnings only, default
    progress (INFO), ``-v`` details (DEBUG). Errors are printed whatever the level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    LOG.handlers[:] = [handler]
    LOG.propagate = False
    LOG.setLevel(logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dercosim", description=__doc__.split("\n\n")[0])
    # every subcommand takes -q and -v (after its name: dercosim run -q ...)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="warnings and results only: no progress")
    common.add_argument("-v", "--verbose", action="count", default=0, help="more detail (versions, placements)")
    from dercosim import __version__

    parser.add_argument("--version", action="version", version=f"dercosim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", parents=[common], help="run a scenario and write runs/<name>-<timestamp>/")
    run.add_argument("scenario", help="scenario TOML file or bundled scenario name")
    run.add_argument("--until", help="run length from the start, e.g. 6h, 90min, 3600 (replaces clock.duration)")
    run.add_argument("--start", metavar="TIME", help="record from TIME on: 10:00 (on the scenario's start date), "
                     "'2016-06-21 10:00' or an offset such as 10h; the steps before it are simulated, not recorded, "
                     "so the window's numbers are the whole run's (--until then counts from TIME)")
    run.add_argument("--out", default="runs", help="parent folder of the run folder (default: runs)")
    run.add_argument("--realtime", nargs="?", type=float, const=1.0, default=None, metavar="FACTOR",
                     help="pace every step to the wall clock: FACTOR simulated seconds per wall second (default 1; "
                          "60 = a simulated minute per second); deadline report in summary.json -> realtime")
    run.add_argument("--deadline-ms", type=float, default=0.0,
                     help="real time: lateness tolerated before a step counts as late (default 0 ms)")
    run.add_argument("--realtime-abort-after", type=int, default=None, metavar="N",
                     help="real time: stop cleanly after N late slots in a row of one simulator (exit code 4)")
    run.add_argument("--baseline", help="a finished run folder (e.g. of fleet_market_s0): report the bill "
                                        "reduction against its household bills")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override one key of the scenario, as sweep's --set with one value (repeatable), e.g. "
                          "--set contract.interval_s=60 or --set 'households.groups[0].per_bus=1'")
    run.add_argument("--seed", type=int, help="the scenario's seed (the same as --set seed=N)")
    run.set_defaults(func=cmd_run)
    show = sub.add_parser("show", parents=[common], help="print the resolved scenario (all defaults filled in)")
    show.add_argument("scenario")
    show.set_defaults(func=cmd_show)
    lst = sub.add_parser("list", parents=[common], help="list the bundled scenarios")
    lst.set_defaults(func=cmd_list)
    study = sub.add_parser("study", parents=[common], help="studies: ADMM modes and value streams of a value-stacking scenario; "
                                         "the fleet scenarios 0-5 (Table II)",
                           description="modes: ADMM in each mode (sync, sync with latency, sync_naive, async, "
                                       "async + adaptive rho) against the centralised optimum; convergence figure "
                                       "and table. streams: cost without B2B, B2G, local trading, and without "
                                       "the battery; marginal contribution of each stream. fleet: the fleet_market scenarios 0-5 of "
                                       "Couraud et al. 2022 in parallel processes, as their Table II. "
                                       "shared-storage, cluster-sizing, price-maker: shared and price-maker "
                                       "storage by ADMM against centralised solves (no co-simulation).")
    study.add_argument("what", choices=["modes", "streams", "fleet", "contract-interval", "forecast",
                                        "shared-storage", "cluster-sizing", "price-maker"])
    study.add_argument("scenario", nargs="*", help="modes/streams: value-stacking scenario(s), file or bundled name")
    study.add_argument("--days", type=int, default=7, help="fleet and price-maker: days from 1 June 2016 "
                                                           "(default 7; 30 = the papers' month)")
    study.add_argument("--seed", type=int, default=0, help="shared-storage, cluster-sizing, price-maker: the "
                                                           "seed of the generated case (default 0)")
    study.add_argument("--units", default="2,10,100", help="price-maker: fleet sizes (default 2,10,100)")
    study.add_argument("--until", help="fleet: a period shorter than a day instead, e.g. 6h")
    study.add_argument("--cases", help="fleet: comma-separated subset of s0,s1,s2,s3,s4,s5 (default all)")
    study.add_argument("--workers", type=int, default=None, help="fleet and sensitivity studies: processes "
                                                                   "(default: one per core)")
    study.add_argument("--intervals", default="1,2,5,10,15", help="contract-interval: minutes (default 1,2,5,10,15)")
    study.add_argument("--accuracy", default="0,0.1,0.25,0.5", help="forecast: relative errors")
    study.add_argument("--steps", default="30,60,120,240", help="forecast: minutes between forecast points")
    study.add_argument("--max-iter", type=int, default=None, help="modes: iteration cap (default: the scenario's)")
    study.add_argument("--central-only", action="store_true", help="streams: centralised costs only (no ADMM)")
    study.add_argument("--milp", action="store_true",
                       help="streams: also solve each variant with its binaries as a MILP (slow without B2B)")
    study.add_argument("--out", default="runs", help="parent folder of the study folder (default: runs)")
    study.set_defaults(func=cmd_study)
    sw = sub.add_parser("sweep", parents=[common], help="the cross product of scenario values (and seeds) on dask.distributed",
                        description="Each --set KEY=V1,V2 names a key path of the scenario (as in its error "
                                    "messages, e.g. households.groups[0].per_bus) and the values to try (read as "
                                    "TOML). One mosaik world per case on a LocalCluster (one worker per core) or "
                                    "an existing scheduler. Writes sweep.parquet, sweep.md, a plot per swept "
                                    "parameter and each case's run folder under cases/.")
    sw.add_argument("scenario", help="scenario TOML file or bundled scenario name")
    sw.add_argument("--set", action="append", metavar="KEY=V1,V2", help="a swept key and its values (repeatable)")
    sw.add_argument("--seeds", type=int, default=1, help="run each combination with this many seeds, from the "
                                                        "scenario's (default 1)")
    sw.add_argument("--until", help="run length of every case from the start, e.g. 6h")
    sw.add_argument("--workers", type=int, default=None, help="LocalCluster worker processes (default: one per core)")
    sw.add_argument("--scheduler", help="address of an existing dask scheduler, e.g. tcp://10.0.0.5:8786")
    sw.add_argument("--resume", metavar="DIR", help="an earlier sweep folder: cases finished there are not re-run")
    sw.add_argument("--out", default="runs", help="parent folder of the sweep folder (default: runs)")
    sw.set_defaults(func=cmd_sweep)
    srv = sub.add_parser("serve", parents=[common], help="serve controllers (or the grid) for a run in another process or machine",
                         description="Waits at --addr for one run whose scenario says [processes] controllers = "
                                     "\"connect:HOST:PORT\", serves it with mosaik's protocol, and exits when "
                                     "the run ends.")
    srv.add_argument("kind", choices=[k.lower() for k in MOVABLE])
    srv.add_argument("--addr", default="127.0.0.1:5678", help="HOST:PORT to listen at (default 127.0.0.1:5678)")
    srv.add_argument("--controller", help="controllers: the controller this host runs, from its own folder "
                                          "(file.py:Class or module:Class); the run's [hems] controller must name "
                                          "the same class")
    srv.add_argument("--timeout-s", type=int, default=3600, help="give up if no run connects within this long")
    srv.set_defaults(func=cmd_serve)
    val = sub.add_parser("validate", parents=[common], help="hold linear grid models and the controllers' beliefs against AC power flow",
                         description="TARGET: a finished run folder, or a scenario (run first). Writes "
                                     "TARGET/validation/: validation.json, validation.md and plots.")
    val.add_argument("target", help="run folder, scenario TOML file or bundled scenario name")
    val.add_argument("--model", action="append", default=None,
                     help="lindistflow_squared, lindistflow_magnitude, or a class with voltages(p_kw, q_kvar) "
                          "('file.py:Class', 'module:Class'); repeat for several (default: both LinDistFlow forms)")
    val.add_argument("--engine-check", type=int, default=60, metavar="N",
                     help="re-solve N evenly spaced minutes with pandapower.runpp (default 60; 0 = off)")
    val.add_argument("--until", help="when running a scenario first: its run length")
    val.add_argument("--out", default="runs", help="when running a scenario first: parent of the run folder")
    val.set_defaults(func=cmd_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    import os

    args = build_parser().parse_args(argv)
    _configure_logging(-1 if getattr(args, "quiet", False) else getattr(args, "verbose", 0))
    try:
        return args.func(args)
    except (ScenarioError, ControllerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (Exception, RecursionError) as exc:  # noqa: BLE001 - a bug of ours: one line, the traceback on request
        if type(exc).__name__ == "RemoteSimulatorError":  # a simulator in another process failed (not our bug)
            print(f"error: {exc}", file=sys.stderr)
            return 1
        if os.environ.get("DERCOSIM_DEBUG"):
            raise
        print(f"error: {type(exc).__name__}: {str(exc)[:500]} (a dercosim bug: set DERCOSIM_DEBUG=1 for the "
              f"traceback and report it)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
