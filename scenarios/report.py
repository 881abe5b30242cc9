"""Summary figures and plots of a run, computed from its ``timeseries.parquet``.

Everything in ``summary.json`` except wall times is derived from the
recorded rows, so the summary and the parquet file cannot disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scenarios.config import Scenario


def _voltages(df: pd.DataFrame) -> pd.DataFrame:
    """vm_pu per step (rows, ``time_s``) and bus (columns, 1-based)."""
    return df[df.kind == "bus"].pivot(index="time_s", columns="bus", values="vm_pu").sort_index(axis=1)


def _at(times: pd.Series, time_s: int) -> str:
    return str(times.loc[time_s])


def summarize(parquet: str | Path, scenario: Scenario, households: pd.DataFrame, wall_time_s: float,
              run_wall_s: float) -> dict[str, Any]:
    df = pd.read_parquet(parquet)
    step_h = scenario.clock.step_s / 3600.0
    feeder = df[df.kind == "feeder"].set_index("time_s").sort_index()
    stamps = feeder["time"]
    vm = _voltages(df)
    lo, hi = scenario.grid.v_min_pu, scenario.grid.v_max_pu

    converged = feeder["converged"].astype(bool)
    below = (vm < lo).any(axis=1)
    above = (vm > hi).any(axis=1)
    step_min = scenario.clock.step_s / 60.0
    t_min, b_min = vm.stack().idxmin()
    t_max, b_max = vm.stack().idxmax()

    hh = df[df.kind == "household"]
    p_head = feeder["p_head_kw"]
    summary: dict[str, Any] = {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "start": str(stamps.iloc[0]),
        "end": str(stamps.iloc[-1] + pd.Timedelta(seconds=scenario.clock.step_s)),
        "step_s": scenario.clock.step_s,
        "steps": int(len(feeder)),
        "wall_time_s": round(wall_time_s, 3),
        "run_wall_time_s": round(run_wall_s, 3),
        "ms_per_step": round(1000.0 * run_wall_s / max(len(feeder), 1), 3),
        "powerflow": {
            "engine": scenario.grid.engine,
            "solves": int(len(feeder)),
            "failures": int((~converged).sum()),
            "failed_at": [_at(stamps, t) for t in feeder.index[~converged][:20]],
        },
        "voltage": {
            "limits_pu": [lo, hi],
            "min_pu": float(vm.min().min()), "min_bus": int(b_min), "min_at": _at(stamps, t_min),
            "max_pu": float(vm.max().max()), "max_bus": int(b_max), "max_at": _at(stamps, t_max),
            "minutes_outside_limits": float(((below | above) & converged).sum() * step_min),
            "minutes_below_min": float((below & converged).sum() * step_min),
            "minutes_above_max": float((above & converged).sum() * step_min),
            "per_bus": {int(b): {"min_pu": float(vm[b].min()), "max_pu": float(vm[b].max())} for b in vm.columns},
        },
        "energy_kwh": {
            "line_losses": float(feeder["losses_kw"].sum() * step_h),
            "feeder_head_import": float(p_head.clip(lower=0).sum() * step_h),
            "feeder_head_export": float((-p_head).clip(lower=0).sum() * step_h),
            "feeder_head_net": float(p_head.sum() * step_h),
            "base_load": float(feeder["base_p_kw"].sum() * step_h),
            "note": "sums over converged steps; a failed power flow contributes nothing",
        },
        "households": {
            "count": int(len(households)),
            "with_pv": int((households["pv_kwp"] > 0).sum()) if len(households) else 0,
            "pv_kwp_total": float(households["pv_kwp"].sum()) if len(households) else 0.0,
            "load_kwh": float(hh["load_kw"].sum() * step_h),
            "pv_kwh": float(hh["pv_kw"].sum() * step_h),
            "import_kwh": float(hh["net_kw"].clip(lower=0).sum() * step_h),
            "export_kwh": float((-hh["net_kw"]).clip(lower=0).sum() * step_h),
        },
    }
    if scenario.grid.line_max_i_ka is not None:
        summary["lines"] = {"rating_ka": scenario.grid.line_max_i_ka,
                            "max_loading_pct": float(feeder["line_loading_max_pct"].max())}
    return summary


def plot_all(parquet: str | Path, scenario: Scenario, out_dir: str | Path) -> list[Path]:
    """Write the run's PNG plots to ``out_dir``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    df = pd.read_parquet(parquet)
    feeder = df[df.kind == "feeder"].set_index("time_s").sort_index()
    t = feeder["time"].dt.tz_localize(None)
    vm = _voltages(df)
    lo, hi = scenario.grid.v_min_pu, scenario.grid.v_max_pu
    paths = []

    fig, ax = plt.subplots(figsize=(10, 4))
    ax.fill_between(t, vm.min(axis=1), vm.max(axis=1), color="tab:blue", alpha=0.25, label="range over buses")
    ax.plot(t, vm.min(axis=1), color="tab:blue", lw=1, label="min over buses")
    ax.plot(t, vm.max(axis=1), color="tab:orange", lw=1, label="max over buses")
    for limit in (lo, hi):
        ax.axhline(limit, color="tab:red", ls="--", lw=1)
    failed = ~feeder["converged"].astype(bool)
    if failed.any():
        ax.plot(t[failed.values], np.full(failed.sum(), lo), "kx", label="power flow failed")
    ax.set_ylabel("voltage (pu)")
    ax.set_title(f"{scenario.name}: voltage envelope (limits {lo}–{hi} pu)")
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    paths.append(_save(fig, out_dir / "voltage_envelope.png"))

    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(t, feeder["p_head_kw"], label="feeder head P")
    ax.plot(t, feeder["base_p_kw"], lw=1, ls=":", label="base load P")
    ax.plot(t, feeder["losses_kw"], lw=1, label="line losses")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("kW (positive = drawn from upstream)")
    ax.set_title(f"{scenario.name}: feeder-head active power")
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    paths.append(_save(fig, out_dir / "feeder_head_power.png"))

    deviation = np.maximum(lo - vm, vm - hi).max(axis=1).where(feeder["converged"].astype(bool).values)
    worst = deviation.idxmax() if deviation.notna().any() else vm.index[0]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(vm.columns, vm.loc[worst], "o-", ms=3)
    for limit in (lo, hi):
        ax.axhline(limit, color="tab:red", ls="--", lw=1)
    ax.set_xlabel("bus (1-based)")
    ax.set_ylabel("voltage (pu)")
    ax.set_title(f"{scenario.name}: voltage profile at the worst minute, {feeder['time'].loc[worst]:%Y-%m-%d %H:%M}")
    ax.set_xticks(list(vm.columns)[::2])
    paths.append(_save(fig, out_dir / "voltage_profile_worst.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
