"""dercosim's real-time mode: every simulator step paced to the wall clock, with a deadline report per simulator.

mosaik's own real-time mode does not serve (``rt_strict=True`` fails at
step 0; ``rt_factor`` prints an unnamed "too slow" warning per step and adds
nothing up), so dercosim paces its simulators itself. With a factor f
(simulated seconds per wall second), the step of simulator S at simulated
time t owns the wall-clock slot [t/f, t_next/f) from the start of the run,
t_next being the time S asks to be stepped next. Each step:

- waits until its slot begins (pacing: nothing happens early);
- is timed: ``wait_ms`` (from the slot's start until the step could begin:
  inputs from other simulators, mosaik's own work), ``compute_ms`` (the
  step itself) and ``lateness_ms`` (its end against the slot's end; > 0:
  late);
- is late when ``lateness_ms`` exceeds the tolerance ``deadline_ms``; each
  late step prints one line naming the simulator, and after ``abort_after``
  late slots in a row of one simulator the run is stopped cleanly (as on
  SIGINT: what was recorded is kept, the summary says why).

:data:`PACER` is the active pacer of this process (None: no pacing, the
wrapped ``step`` is called directly). Simulators opt in with :func:`paced`.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import numpy as np
import pandas as pd

#: the pacer of the running world in this process (set and cleared by ``run_scenario``)
PACER: "Pacer | None" = None


@dataclass
class Pacer:
    """Paces and times the steps of the ``paced`` simulators of one run; see the module doc."""

    factor: float  #: simulated seconds per wall second
    step_s: int  #: the clock's step, s: the slot of a step whose simulator does not say when it steps next
    deadline_ms: float = 0.0  #: lateness tolerated before a step counts as late, ms
    abort_after: int | None = None  #: stop after this many late slots in a row of one simulator (None: never)
    say: Callable[[str], None] = print
    stop: Callable[[str], None] | None = None  #: asks the run to stop cleanly, with a reason
    epoch: float | None = None  #: wall clock (perf_counter) of simulated t = 0
    rows: list[tuple[str, int, float, float, float]] = field(default_factory=list)  #: see :meth:`table`
    in_a_row: dict[str, int] = field(default_factory=dict)
    aborted: str | None = None

    def __post_init__(self) -> None:
        if not (self.factor > 0 and math.isfinite(self.factor)):
            raise ValueError(f"the real-time factor must be a positive number, got {self.factor}")
        if self.deadline_ms < 0:
            raise ValueError(f"deadline_ms must be ≥ 0, got {self.deadline_ms}")
        if self.abort_after is not None and self.abort_after < 1:
            raise ValueError(f"abort_after must be ≥ 1, got {self.abort_after}")

    def call(self, name: str, step: Callable[..., Any], sim: Any, t: int, inputs: dict, max_advance: int) -> Any:
        from dercosim.sims.recorder import STOP  # (the recorder module imports this one)

        now = time.perf_counter()
        if self.epoch is None:
            self.epoch = now - t / self.factor
        slot_start = self.epoch + t / self.factor
        if now < slot_start and STOP.wait(slot_start - now):
            # asked to stop while waiting for the slot (a minute at --realtime 1): step now, unpaced and untimed,
            # so the stop is seen at once (the recorder ends the run at its next step)
            return step(sim, t, inputs, max_advance)
        began = time.perf_counter()
        nxt = step(sim, t, inputs, max_advance)
        ended = time.perf_counter()
        t_next = nxt if isinstance(nxt, (int, float)) and nxt > t else t + self.step_s
        slot_end = self.epoch + t_next / self.factor
        lateness_ms = 1000.0 * (ended - slot_end)
        self.rows.append((name, int(t), 1000.0 * (began - slot_start), 1000.0 * (ended - began), lateness_ms))
        if lateness_ms > self.deadline_ms:
            n = self.in_a_row[name] = self.in_a_row.get(name, 0) + 1
            self.say(f"realtime: {name} late by {lateness_ms:.1f} ms at t = {t} s (slot of "
                     f"{1000.0 * (t_next - t) / self.factor:.1f} ms; step took {1000.0 * (ended - began):.1f} ms)")
            if self.abort_after is not None and n >= self.abort_after and self.aborted is None:
                self.aborted = f"realtime: {name} late in {n} slots in a row (tolerance {self.deadline_ms:g} ms)"
                self.say(self.aborted + "; stopping, keeping what was recorded")
                if self.stop is not None:
                    self.stop(self.aborted)
        else:
            self.in_a_row[name] = 0
        return nxt

    def table(self) -> pd.DataFrame:
        """One row per simulator step: simulator, t_s, start_offset_ms (begin − slot start; < 0 never),
        wait_ms, compute_ms, lateness_ms."""
        df = pd.DataFrame(self.rows, columns=["simulator", "t_s", "start_offset_ms", "compute_ms", "lateness_ms"])
        df.insert(3, "wait_ms", df.start_offset_ms.clip(lower=0.0))  # before the slot began it was pacing
        return df

    def summary(self, df: pd.DataFrame | None = None) -> dict[str, Any]:
        """Per simulator: steps, late steps, lateness p50/p99/max, mean compute and wait; and the totals
        (``df``: :meth:`table`, if the caller has it already)."""
        df = self.table() if df is None else df
        per: dict[str, Any] = {}
        for name, g in df.groupby("simulator", sort=True):
            lat = g.lateness_ms.to_numpy()
            per[str(name)] = {"steps": int(len(g)), "late": int((lat > self.deadline_ms).sum()),
                              "lateness_p50_ms": float(np.percentile(lat, 50)),
                              "lateness_p99_ms": float(np.percentile(lat, 99)), "lateness_max_ms": float(lat.max()),
                              "compute_ms_mean": float(g.compute_ms.mean()), "wait_ms_mean": float(g.wait_ms.mean())}
        return {"factor": self.factor, "deadline_ms": self.deadline_ms, "abort_after": self.abort_after,
                "steps_late": int(sum(p["late"] for p in per.values())), "aborted": self.aborted,
                "per_simulator": per,
                "definitions": "slot of a step at t: [t/factor, t_next/factor) wall seconds from the start; "
                               "lateness = end of the step − end of its slot; late: lateness > deadline_ms; "
                               "wait = start of the step − start of its slot (inputs, mosaik)"}


#: a simulator class
S = TypeVar("S")


def paced(cls: type[S]) -> type[S]:
    """Class decorator: the simulator's ``step`` goes through :data:`PACER` when one is active."""
    sim: Any = cls
    step = sim.step
    name = cls.__name__.removesuffix("Sim")

    @functools.wraps(step)
    def wrapper(self: Any, t: int, inputs: dict, max_advance: int) -> Any:
        pacer = PACER
        if pacer is None:
            return step(self, t, inputs, max_advance)
        return pacer.call(name, step, self, t, inputs, max_advance)

    sim.step = wrapper
    return cls


def plot_lateness(table: pd.DataFrame, deadline_ms: float, path: Any) -> Any:
    """Lateness of each simulator's steps over simulated time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.8))
    for name, g in table.groupby("simulator", sort=True):
        ax.plot(g.t_s / 3600.0, g.lateness_ms, ".", ms=3, label=str(name))
    ax.axhline(deadline_ms, color="r", lw=0.8, ls="--", label=f"tolerance {deadline_ms:g} ms")
    ax.set_xlabel("simulated time (h)")
    ax.set_ylabel("lateness (ms; < 0: early)")
    ax.set_title("real-time mode: end of each step against the end of its slot")
    ax.legend(fontsize=7, ncol=4)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
