"""``dercosim validate``: hold linear grid models and the controllers' beliefs against the recorded AC power flow.

Works on any finished run folder. It replays the recorded per-bus injections
(``p_net_kw``, ``q_net_kvar`` of every bus and minute, base load included)
through each linear model, vectorised over all minutes, and compares with
the recorded AC voltages:

1. errors per bus and minute (model − AC, pu): max / mean / p95 per bus,
   error against the feeder-head power, and whether the model is
   conservative for undervoltage (never above AC) and where not;
2. violations against the scenario's limits: missed (model inside, AC
   outside), false alarms, both and neither, in minutes and bus-minutes;
3. the controllers' beliefs where the run has them: the planner's hourly
   voltages vs AC, its battery schedule vs what the PMS did, and for
   market runs the commitments vs the delivery;
4. an engine cross-check: a sample of minutes re-solved with
   ``pandapower.runpp``, the largest difference from the recorded voltages.

Models: ``lindistflow_squared`` and ``lindistflow_magnitude`` (Baran & Wu
1989, branch form; see :mod:`dercosim.grids.lindistflow`), or a user's class
(``file.py:Class``, ``module:Class`` or a registered name, as controllers)
with ``voltages(p_kw: ndarray[n], q_kvar: ndarray[n])`` returning the n bus voltages (pu) in bus-number order, or
a mapping from the feeder's bus names to voltages (load convention; a constructor that takes ``bus_names`` gets
the feeder's). The linear models need a radial feeder: on a meshed one they are refused with the reason, and the
engine cross-check and the beliefs still run.

Writes ``validation/`` in the run folder: ``validation.json``, a report
``validation.md`` and plots.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import pandas as pd

from dercosim.scenarios.config import Scenario, ScenarioError

from dercosim.scenarios.load import load_scenario
BUILTIN = ("lindistflow_squared", "lindistflow_magnitude")
#: the radial branches of IEEE-33 (1-based buses, from the substation outwards), for profile plots
BRANCHES = {"main feeder 1–18": list(range(1, 19)), "lateral 2, 19–22": [2, 19, 20, 21, 22],
            "lateral 3, 23–25": [3, 23, 24, 25], "lateral 6, 26–33": [6] + list(range(26, 34))}
NEEDED = ("vm_pu", "p_net_kw", "q_net_kvar")


class ValidationError(ScenarioError):
    """The folder cannot be validated; the message says why."""


@dataclass
class Recorded:
    """What validation needs from a run folder."""

    run_dir: Path
    scenario: Scenario
    time_s: np.ndarray  #: (T,) minutes with a converged power flow
    stamps: pd.Series
    vm_pu: np.ndarray  #: (T, n) AC voltages, bus-number order
    p_kw: np.ndarray  #: (T, n) net injections per bus, load convention
    q_kvar: np.ndarray
    p_head_kw: np.ndarray  #: (T,)
    failed_minutes: int
    df: pd.DataFrame


def load_run(run_dir: str | Path) -> Recorded:
    """Read a finished run folder; :class:`ValidationError` if it is not one or is of an older layout."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValidationError(f"{run_dir}: no such folder (give a run folder or a scenario)")
    parquet = run_dir / "timeseries.parquet"
    if not parquet.exists() and (run_dir / "timeseries.parquet.parts").is_dir():
        parquet = run_dir / "timeseries.parquet.parts"  # an interrupted run: what was recorded
    if not (run_dir / "scenario.toml").exists() or not parquet.exists():
        raise ValidationError(f"{run_dir}: not a dercosim run folder (needs scenario.toml and timeseries.parquet)")
    try:
        scenario = load_scenario(run_dir / "scenario.toml")
    except ScenarioError as exc:
        raise ValidationError(f"{run_dir}: its scenario.toml does not load with this dercosim ({exc})") from None
    try:
        df = pd.read_parquet(parquet)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError: a truncated or damaged file
        raise ValidationError(f"{parquet}: cannot be read as Parquet ({str(exc).splitlines()[0][:200]}); a run "
                              f"killed before it joined its parts keeps them in timeseries.parquet.parts") from None
    missing = [c for c in NEEDED + ("kind", "bus", "time_s") if c not in df.columns]
    if missing:
        raise ValidationError(f"{run_dir}: recorded by an older dercosim (no {', '.join(missing)} per bus); "
                              f"re-run its scenario.toml")
    bus = df[df.kind == "bus"]
    vm = bus.pivot(index="time_s", columns="bus", values="vm_pu").sort_index(axis=1)
    feeder = _feeder(scenario)
    if vm.shape[1] != feeder.n_bus:
        raise ValidationError(f"{run_dir}: {vm.shape[1]} buses recorded; {feeder.title} has {feeder.n_bus}")
    p = bus.pivot(index="time_s", columns="bus", values="p_net_kw").sort_index(axis=1)
    q = bus.pivot(index="time_s", columns="bus", values="q_net_kvar").sort_index(axis=1)
    feeder = df[df.kind == "feeder"].set_index("time_s").sort_index()
    ok = vm.notna().all(axis=1).to_numpy()
    return Recorded(run_dir, scenario, vm.index.to_numpy()[ok], feeder["time"].loc[vm.index[ok]],
                    vm.to_numpy()[ok], p.to_numpy()[ok], q.to_numpy()[ok],
                    feeder["p_head_kw"].loc[vm.index[ok]].to_numpy(), int((~ok).sum()), df)


def _feeder(scenario: Scenario) -> Any:
    from dercosim.grids.feeders import FeederError, load_feeder

    try:
        return load_feeder(scenario.grid.feeder)
    except FeederError as exc:
        raise ValidationError(str(exc)) from None


def model_voltages(spec: str, p_kw: np.ndarray, q_kvar: np.ndarray, base_dir: Path,
                   feeder: Any = None) -> np.ndarray:
    """(T, n) voltages of model ``spec`` for every minute; built-ins vectorised, a user's class minute by minute.
    ``feeder``: the run's (:class:`dercosim.grids.feeders.Feeder`; IEEE-33 if None)."""
    from dercosim.grids.feeders import load_feeder
    from dercosim.grids.lindistflow import LinDistFlow

    feeder = feeder if feeder is not None else load_feeder("ieee33")
    n = feeder.n_bus
    if spec in BUILTIN:
        try:
            ldf = LinDistFlow.from_pandapower(feeder.make_net())
        except ValueError as exc:
            raise ValidationError(f"--model {spec}: {feeder.title}: {exc} (the AC run itself is unaffected)") from None
        form: Literal["squared", "magnitude"] = "squared" if spec == "lindistflow_squared" else "magnitude"
        return ldf.voltages_pu_many(p_kw, q_kvar, form)
    import inspect

    from dercosim.controllers.registry import ControllerError, load_controller_class

    try:
        cls = load_controller_class(spec, base_dir)
        takes_names = "bus_names" in inspect.signature(cls).parameters
        model = cls(bus_names=list(feeder.names)) if takes_names else cls()
    except (ControllerError, Exception) as exc:  # noqa: BLE001 - a user's class may fail any way
        raise ValidationError(f"--model {spec!r}: {exc}") from None
    if not callable(getattr(model, "voltages", None)):
        raise ValidationError(f"--model {spec!r}: the class needs voltages(p_kw, q_kvar) -> {n} voltages (pu)")
    out = np.empty_like(np.asarray(p_kw, float))
    for t in range(len(out)):
        got = model.voltages(p_kw[t].copy(), q_kvar[t].copy())
        if isinstance(got, dict) or hasattr(got, "index"):  # by bus name
            missing = [b for b in feeder.names if b not in got]
            if missing:
                raise ValidationError(f"--model {spec!r}: voltages() gave no voltage for bus {missing[0]!r} "
                                      f"({len(missing)} of {n} missing)")
            v = np.array([float(got[b]) for b in feeder.names])
        else:
            v = np.asarray(got, float)
        if v.shape != (n,):
            raise ValidationError(f"--model {spec!r}: voltages() returned shape {v.shape}, expected ({n},)")
        out[t] = v
    return out


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def compare(rec: Recorded, v_model: np.ndarray, v_min_pu: float, v_max_pu: float,
            tol_pu: float = 1e-6) -> tuple[dict[str, Any], np.ndarray]:
    """Errors, conservativeness and the violation confusion table of one model against AC."""
    err = v_model - rec.vm_pu
    abs_err = np.abs(err)
    t_worst, b_worst = np.unravel_index(np.argmax(abs_err), abs_err.shape) if err.size else (0, 0)
    stamp = lambda t: str(rec.stamps.iloc[int(t)]) if len(rec.stamps) else None  # noqa: E731
    above = err > tol_pu  # the model says higher than AC: not conservative for undervoltage
    ac_out = (rec.vm_pu < v_min_pu) | (rec.vm_pu > v_max_pu)
    model_out = (v_model < v_min_pu) | (v_model > v_max_pu)
    missed = ac_out & ~model_out
    false = ~ac_out & model_out
    minute = lambda m: m.any(axis=1)  # noqa: E731
    step_min = rec.scenario.clock.step_s / 60.0

    def per_step(count: Any) -> float | int:
        """A count of steps as minutes (whole minutes as an int; the clock's step may be shorter)."""
        minutes = float(count) * step_min
        return int(minutes) if minutes == int(minutes) else minutes

    missed_cells = [{"bus": int(b) + 1, "time_s": int(rec.time_s[t]), "time": stamp(t),
                     "ac_pu": float(rec.vm_pu[t, b]), "model_pu": float(v_model[t, b])}
                    for t, b in zip(*np.nonzero(missed))][:50]
    head = rec.p_head_kw
    bins = np.quantile(head, np.linspace(0, 1, 6)) if len(head) else np.array([0.0])
    by_load = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = (head >= lo) & (head <= hi)
        if sel.any():
            by_load.append({"p_head_kw_from": float(lo), "p_head_kw_to": float(hi),
                            "max_abs_error_pu": float(abs_err[sel].max()), "mean_error_pu": float(err[sel].mean())})
    return {
        "max_abs_error_pu": _num(abs_err.max()) if err.size else None,
        "at_bus": int(b_worst) + 1, "at": stamp(t_worst),
        "mean_error_pu": _num(err.mean()) if err.size else None,
        "p95_abs_error_pu": _num(np.quantile(abs_err, 0.95)) if err.size else None,
        "per_bus": {int(b) + 1: {"max_abs_error_pu": float(abs_err[:, b].max()), "mean_error_pu": float(err[:, b].mean()),
                                 "p95_abs_error_pu": float(np.quantile(abs_err[:, b], 0.95))}
                    for b in range(err.shape[1])} if err.size else {},
        "conservative_for_undervoltage": bool(not above.any()),
        "above_ac": {"bus_minutes": per_step(above.sum()), "minutes": per_step(minute(above).sum()),
                     "buses": sorted(int(b) + 1 for b in np.flatnonzero(above.any(axis=0)))},
        "error_vs_head_power": by_load,
        "violations": {
            "limits_pu": [v_min_pu, v_max_pu],
            "minutes": {"ac_outside": per_step(minute(ac_out).sum()), "model_outside": per_step(minute(model_out).sum()),
                        "missed": per_step((minute(ac_out) & ~minute(model_out)).sum()),
                        "false_alarm": per_step((~minute(ac_out) & minute(model_out)).sum()),
                        "both": per_step((minute(ac_out) & minute(model_out)).sum()),
                        "neither": per_step((~minute(ac_out) & ~minute(model_out)).sum())},
            "bus_minutes": {"missed": per_step(missed.sum()), "false_alarm": per_step(false.sum()),
                            "both": per_step((ac_out & model_out).sum()), "neither": per_step((~ac_out & ~model_out).sum())},
            "missed_examples": missed_cells,
        },
    }, err


def engine_check(rec: Recorded, n: int) -> dict[str, Any]:
    """Re-solve ``n`` evenly spaced minutes with ``pandapower.runpp``; largest difference from the record."""
    from dercosim.grids.powerflow import PandapowerEngine

    if n <= 0 or not len(rec.time_s):
        return {"minutes": 0}
    engine = PandapowerEngine(_feeder(rec.scenario).make_net(rec.scenario.grid.line_max_i_ka))
    picks = np.unique(np.linspace(0, len(rec.time_s) - 1, min(n, len(rec.time_s))).round().astype(int))
    worst, where = 0.0, None
    for t in picks:
        v = engine.solve(rec.p_kw[t], rec.q_kvar[t]).vm_pu
        d = np.abs(v - rec.vm_pu[t])
        if d.max() > worst:
            worst, where = float(d.max()), {"bus": int(np.argmax(d)) + 1, "time_s": int(rec.time_s[t])}
    return {"engine": "pandapower.runpp", "minutes": int(len(picks)), "max_abs_diff_pu": worst, "at": where,
            "agrees": bool(worst <= 1e-6), "note": "recorded voltages re-solved from the recorded injections"}


def beliefs(rec: Recorded) -> dict[str, Any]:
    """The controllers' beliefs the run recorded, against what happened."""
    df, out = rec.df, {}
    plan = df[df.kind == "plan"] if "plan_vm_pu" in df.columns else df.iloc[:0]
    if len(plan):
        planned = plan.pivot(index="time_s", columns="bus", values="plan_vm_pu")
        ac = df[df.kind == "bus"].pivot(index="time_s", columns="bus", values="vm_pu")[planned.columns]
        hourly = ac.groupby(ac.index // 3600).transform("mean")
        diff = (hourly - planned).where(planned.notna())
        bat = df[df.kind == "battery"].pivot(index="time_s", columns="bus", values="p_kw")
        set_kw = plan.pivot(index="time_s", columns="bus", values="p_set_kw")
        out["planner"] = {"form": "LinDistFlow squared-voltage form, hourly plan vs hourly mean of AC",
                          "max_abs_diff_pu": _num(diff.abs().max().max()), "mean_diff_pu": _num(diff.stack().mean()),
                          "battery_schedule_vs_executed_max_kw": _num((bat[set_kw.columns] - set_kw).abs().max().max())}
    ctrl = df[df.kind == "controller"] if "forecast_h1_kw" in df.columns else df.iloc[:0]
    if len(ctrl):
        net = df[df.kind == "household"].pivot(index="time_s", columns="entity", values="net_kw")
        step_s = rec.scenario.clock.step_s
        by_step: dict[str, Any] = {}
        for steps in (1, 5, 15):
            col = f"forecast_h{steps}_kw"
            made = ctrl.dropna(subset=[col])
            if not len(made):
                continue
            target_t = made["time_s"].to_numpy() + steps * step_s
            house = made["entity"].str.removeprefix("ctrl_").to_numpy()
            ok = np.isin(target_t, net.index) & np.isin(house, net.columns)
            actual = np.array([net.at[t, h] for t, h in zip(target_t[ok], house[ok])])
            err = made[col].to_numpy()[ok] - actual
            if len(err):
                by_step[f"{steps}_min"] = {"forecasts": int(len(err)), "mae_kw": float(np.mean(np.abs(err))),
                                           "bias_kw": float(np.mean(err)),
                                           "rmse_kw": float(np.sqrt(np.mean(err ** 2)))}
        if by_step:
            out["mpc_forecasts"] = {"what": "household residual forecast (net_kw before the battery) vs what "
                                            "happened, by minutes ahead", **by_step}
    market_csv = rec.run_dir / "market.csv"
    if market_csv.exists():
        table = pd.read_csv(market_csv)
        committed = table.committed_kwh > 1e-9
        out["market"] = {"committed_kwh": float(table.committed_kwh.sum()),
                         "delivered_kwh": float(table.delivered_kwh.sum()),
                         "mean_abs_deviation_of_committed": _num(
                             (table.imbalance_kwh.abs()[committed] / table.committed_kwh[committed]).mean())
                         if committed.any() else None}
    return out


def validate(target: str | Path, models: list[str] | None = None, engine_minutes: int = 60,
             log: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """Validate a run folder (see the module doc); writes ``validation/`` there and returns the figures."""
    rec = load_run(target)
    models = list(models or BUILTIN)
    limits = (rec.scenario.grid.v_min_pu, rec.scenario.grid.v_max_pu)
    out_dir = rec.run_dir / "validation"
    out_dir.mkdir(exist_ok=True)
    result: dict[str, Any] = {"run": str(rec.run_dir), "scenario": rec.scenario.name,
                              "minutes": len(rec.time_s) * rec.scenario.clock.step_s // 60, "minutes_without_ac": rec.failed_minutes,
                              "models": {}}
    errors = {}
    feeder = _feeder(rec.scenario)
    refused = {}
    for spec in models:
        log(f"model {spec}")
        try:
            v = model_voltages(spec, rec.p_kw, rec.q_kvar, rec.run_dir, feeder)
        except ValidationError as exc:
            if spec not in BUILTIN or feeder.radial:
                raise
            refused[spec] = str(exc)  # a meshed feeder: the linear models do not apply; the rest goes on
            continue
        result["models"][spec], errors[spec] = compare(rec, v, *limits)
    if refused:
        result["models_refused"] = refused
    result["beliefs"] = beliefs(rec)
    log(f"engine cross-check on {engine_minutes} minutes")
    result["engine_check"] = engine_check(rec, engine_minutes)
    (out_dir / "validation.json").write_text(json.dumps(result, indent=2, allow_nan=False), encoding="utf-8")
    (out_dir / "validation.md").write_text(report_markdown(result), encoding="utf-8")
    plot(rec, errors, result, out_dir)
    return result


def report_markdown(r: dict[str, Any]) -> str:
    lines = [f"# Validation of `{r['scenario']}` against AC power flow", "",
             f"Run: `{r['run']}` — {r['minutes']} minutes with a converged AC power flow"
             f" ({r['minutes_without_ac']} without).", "", "## Linear grid models vs AC", "",
             "| model | max abs error (pu) | at bus | mean error (pu) | p95 abs (pu) | conservative for undervoltage |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, m in r["models"].items():
        lines.append(f"| {name} | {m['max_abs_error_pu']:.5f} | {m['at_bus']} | {m['mean_error_pu']:+.5f} | "
                     f"{m['p95_abs_error_pu']:.5f} | {'yes' if m['conservative_for_undervoltage'] else 'no: above AC in ' + str(m['above_ac']['minutes']) + ' minutes at buses ' + str(m['above_ac']['buses'][:8])} |")
    for name, why in r.get("models_refused", {}).items():
        lines.append(f"| {name} | refused: {why} | | | | |")
    lines += ["", "Error = model − AC. A positive error at low voltage means the model would see a violation later than "
              "the feeder does.", "", "## Voltage limits: what each model would have told a planner", ""]
    for name, m in r["models"].items():
        c = m["violations"]["minutes"]
        lo, hi = m["violations"]["limits_pu"]
        lines += [f"**{name}** (limits {lo}–{hi} pu), minutes:", "",
                  "| | AC outside | AC inside |", "| --- | --- | --- |",
                  f"| model outside | {c['both']} | {c['false_alarm']} (false alarms) |",
                  f"| model inside | {c['missed']} (missed) | {c['neither']} |", ""]
        if m["violations"]["missed_examples"]:
            ex = m["violations"]["missed_examples"][0]
            lines.append(f"First missed: bus {ex['bus']} at {ex['time']}: AC {visibly(ex['ac_pu'], lo, hi)} pu, "
                         f"model {visibly(ex['model_pu'], lo, hi)} pu.")
            lines.append("")
    if r["beliefs"]:
        lines += ["## The controllers' beliefs", ""]
        for k, v in r["beliefs"].items():
            flat = {a: b for a, b in v.items() if not isinstance(b, dict)}
            lines.append(f"- **{k}**: " + ", ".join(f"{a} = {b}" for a, b in flat.items()))
            nested = {a: b for a, b in v.items() if isinstance(b, dict)}
            if nested:
                cols = list(next(iter(nested.values())))
                lines += ["", "  | ahead | " + " | ".join(cols) + " |", "  | --- |" + " --- |" * len(cols)]
                lines += [f"  | {a} | " + " | ".join(f"{b[c]:.4g}" for c in cols) + " |" for a, b in nested.items()]
        lines.append("")
    e = r["engine_check"]
    if e.get("minutes"):
        lines += ["## Engine cross-check", "",
                  f"{e['minutes']} minutes re-solved with {e['engine']}: largest difference from the recorded "
                  f"voltages {e['max_abs_diff_pu']:.2e} pu" + (f" (bus {e['at']['bus']}, t = {e['at']['time_s']} s)"
                                                                if e["at"] else "")
                  + (" — agrees." if e["agrees"] else " — DOES NOT AGREE: the record or the engine is wrong."), ""]
    lines += ["Plots: `error_heatmap_<model>.png`, `error_vs_head_power.png`, `profile_worst_minute.png`, "
              "`violations.png`.", ""]
    return "\n".join(lines)


def plot(rec: Recorded, errors: dict[str, np.ndarray], r: dict[str, Any], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = (rec.time_s - rec.time_s[0]) / 3600.0 if len(rec.time_s) else np.zeros(0)
    for name, err in errors.items():
        fig, ax = plt.subplots(figsize=(10, 4.5))
        lim = max(float(np.abs(err).max()), 1e-6) if err.size else 1e-6
        im = ax.imshow(err.T, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim,
                       extent=(float(hours[0]) if len(hours) else 0.0, float(hours[-1]) if len(hours) else 1.0,
                               0.5, rec.vm_pu.shape[1] + 0.5))
        fig.colorbar(im, ax=ax, label="model − AC (pu)")
        ax.set_xlabel("hours since start")
        ax.set_ylabel("bus")
        ax.set_title(f"{rec.scenario.name}: {name} error per bus and minute")
        _save(fig, out_dir / f"error_heatmap_{name.replace(':', '_').replace('/', '_')}.png")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, err in errors.items():
        ax.scatter(rec.p_head_kw, np.abs(err).max(axis=1), s=4, label=name, alpha=0.6)
    ax.set_xlabel("feeder-head power (kW)")
    ax.set_ylabel("max |model − AC| over buses (pu)")
    ax.legend(fontsize=8)
    ax.set_title(f"{rec.scenario.name}: linear-model error against feeder loading")
    _save(fig, out_dir / "error_vs_head_power.png")
    if len(rec.time_s):
        t = int(np.argmin(rec.vm_pu.min(axis=1)))
        curves = {"AC": rec.vm_pu[t]}
        curves.update({name: rec.vm_pu[t] + err[t] for name, err in errors.items()})
        fig = branch_profiles(curves, (rec.scenario.grid.v_min_pu, rec.scenario.grid.v_max_pu),
                              f"{rec.scenario.name}: voltage along each radial branch at the lowest minute, "
                              f"{rec.stamps.iloc[t]}", _feeder(rec.scenario))
        _save(fig, out_dir / "profile_worst_minute.png")
    rows = [(n, m["violations"]["minutes"]) for n, m in r["models"].items()]
    if not rows:  # every linear model refused (a meshed feeder)
        return
    fig, ax = plt.subplots(figsize=(6, 1 + 0.6 * max(len(r["models"]), 1)))
    cells = [[c["both"], c["missed"], c["false_alarm"], c["neither"]] for _, c in rows]
    ax.axis("off")
    ax.table(cellText=cells, rowLabels=[n for n, _ in rows],
             colLabels=["both outside", "missed", "false alarm", "both inside"], loc="center")
    ax.set_title("minutes: model vs AC against the voltage limits", fontsize=9)
    _save(fig, out_dir / "violations.png")


def visibly(value: float, lo: float, hi: float) -> str:
    """``value`` (pu) with the fewest digits (at least 4) that leave it on the same side of both limits as it is:
    0.899996 pu prints as 0.899996, never as 0.9000, which would read as inside [0.9, 1.1]."""
    for digits in range(4, 13):
        text = f"{value:.{digits}f}"
        shown = float(text)
        if (shown < lo) == (value < lo) and (shown > hi) == (value > hi) and (shown == lo) == (value == lo) \
                and (shown == hi) == (value == hi):
            return text
    return repr(value)


def branch_profiles(curves: dict[str, np.ndarray], limits: tuple[float, float], title: str,
                    feeder: Any = None) -> Any:
    """Voltage along each radial path of the feeder, from the slack outwards (one panel per path, never a line
    between buses on different paths); on IEEE-33 its four named branches. A meshed feeder: every bus against
    its electrical distance from the slack (the smallest sum of branch impedances, pu on 1 MVA). ``curves``: name → the n bus voltages (pu), bus-number order."""
    import matplotlib.pyplot as plt

    if feeder is None or feeder.spec == "ieee33":
        paths = dict(BRANCHES)
    elif feeder.radial:
        found = feeder.paths()
        longest = sorted(found, key=len, reverse=True)[:6]  # the six longest paths: a readable figure
        paths = {f"to {feeder.name_of(p[-1])}": p for p in found if p in longest}
    else:
        paths = {}
    if not paths:  # meshed: one panel, buses by electrical distance from the slack
        distance = electrical_distance(feeder)
        fig, ax = plt.subplots(figsize=(10, 4))
        for k, (name, v) in enumerate(curves.items()):
            ax.plot(distance, np.asarray(v), "o" if k == 0 else ".", ms=3, label=name,
                    color="k" if k == 0 else None)
        for limit in limits:
            ax.axhline(limit, color="tab:red", ls=":", lw=1)
        ax.set_xlabel("electrical distance from the slack, |Z| (pu on 1 MVA; a meshed feeder)")
        ax.set_ylabel("voltage (pu)")
        ax.legend(fontsize=7)
        fig.suptitle(title, fontsize=10)
        return fig
    fig, axes = plt.subplots(1, len(paths), figsize=(14, 4), sharey=True, squeeze=False,
                             gridspec_kw={"width_ratios": [len(b) for b in paths.values()]})
    for ax, (branch, buses) in zip(axes[0], paths.items()):
        idx = [b - 1 for b in buses]
        x = np.arange(len(buses))
        for k, (name, v) in enumerate(curves.items()):
            ax.plot(x, np.asarray(v)[idx], "o-" if k == 0 else ".--", ms=3, label=name,
                    color="k" if k == 0 else None)
        for limit in limits:
            ax.axhline(limit, color="tab:red", ls=":", lw=1)
        step = 1 if len(buses) <= 20 else len(buses) // 8
        ax.set_xticks(x[::step], [str(b) for b in buses][::step], fontsize=7)
        ax.set_title(branch, fontsize=8, wrap=True)
        ax.set_xlabel("bus number")
    axes[0][0].set_ylabel("voltage (pu)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


def electrical_distance(feeder: Any) -> np.ndarray:
    """Each bus's smallest sum of branch impedance magnitudes to a slack bus (pu on 1 MVA, lines on their buses'
    nominal voltage, transformers by ``vk_percent``), over in-service lines and transformers."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    net = feeder.net
    n = feeder.n_bus
    vn = np.asarray(feeder.vn_kv, float)
    rows, cols, weights = [], [], []
    line = net.line[net.line.in_service.astype(bool)]
    if len(line):
        f = line.from_bus.to_numpy(int)
        z_ohm = np.hypot(line.r_ohm_per_km, line.x_ohm_per_km).to_numpy() * line.length_km.to_numpy() \
            / line.parallel.to_numpy()
        rows += f.tolist()
        cols += line.to_bus.to_numpy(int).tolist()
        weights += (z_ohm / vn[f] ** 2).tolist()
    trafo = net.trafo[net.trafo.in_service.astype(bool)] if len(net.trafo) else net.trafo
    if len(trafo):
        rows += trafo.hv_bus.to_numpy(int).tolist()
        cols += trafo.lv_bus.to_numpy(int).tolist()
        weights += (trafo.vk_percent.to_numpy(float) / 100.0 / trafo.sn_mva.to_numpy(float)).tolist()
    graph = coo_matrix((np.maximum(weights, 1e-12), (rows, cols)), shape=(n, n)).tocsr()
    found = dijkstra(graph, directed=False, indices=[s - 1 for s in feeder.slack_numbers], min_only=True)
    return np.asarray(found, float)


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
