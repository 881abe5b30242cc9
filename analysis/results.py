"""Reading a run's ``timeseries.parquet``: by kind of entity, each kind with only its own columns.

``pd.read_parquet`` of the whole long table gives every kind every column (mostly empty); :func:`read_recorded`
reads one kind at a time with pyarrow filters, and :class:`Records`, what the summary and the figures read, the
kinds with a row per entity a window of hours at a time.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

#: parquet schema metadata key: the attributes recorded for each kind of entity (JSON)
KIND_COLUMNS_KEY = b"dercosim.kind_columns"
#: parquet schema metadata key: dercosim's version and commit, Python's, the solvers' and engines' (JSON;
#: :func:`dercosim.environment.versions`)
VERSIONS_KEY = b"dercosim.versions"

BASE_COLUMNS = ["time_s", "time", "entity", "kind", "bus"]

class Recorded(dict):
    """A run's recorded rows split by kind (``"household"`` → its rows), each with only the columns recorded for
    that kind: what the report reads instead of the whole long table, whose other kinds' columns are all NaN
    (at 2,000 households for a day, 8.6 M rows × 85 columns, mostly empty). Row order within a kind is the
    file's."""

    columns: list[str]

def read_recorded(path: str | Path) -> Recorded:
    """``timeseries.parquet`` as :class:`Recorded`, every kind whole with its own columns (one pyarrow read per
    kind); what the report reads of a long run instead is :class:`Records`."""
    records = Records(path)
    recorded = Recorded({kind: records._read(kind) for kind in records.kinds})
    recorded.columns = records.columns
    return recorded

#: rows the report holds at once: a run with more is reported a window of whole hours at a time (a month of 2,000
#: households records ~260 M rows; a day of them ~9 M)
REPORT_CHUNK_ROWS = 2_000_000
#: the kinds with one row per step (or per planned hour): read whole; the others are read a window at a time
SMALL_KINDS = ("feeder", "market", "contract", "planner", "plan")
#: the columns the summary and the figures read of the kinds read a window at a time (beside the base columns)
REPORT_COLUMNS = {
    "bus": ["vm_pu"],
    "household": ["load_kw", "pv_kw", "hvac_kw", "wind_kw", "net_kw", "pv_curtailed_kw", "pv_q_kvar"],
    "battery": ["p_kw", "meter_kw", "soc_kwh", "soc_frac", "e_charge_kwh", "e_discharge_kwh", "e_self_discharge_kwh",
                "e_clipped_kwh"],
    "controller": ["fault", "overrun", "step_ms", "solve_ms", "fallback", "retried"],
}


class Records:
    """A run's ``timeseries.parquet`` as the report reads it: the kinds with a row per step (:data:`SMALL_KINDS`)
    whole, the kinds with a row per step and entity (buses, households, batteries, controllers) a window of whole
    hours at a time (:meth:`chunks`), so a long run is summarised and drawn without holding its rows.

    A run of at most ``chunk_rows`` rows is one window: every figure is computed from the whole rows at once,
    as :func:`read_recorded` reads them. Longer runs are cut between market intervals, or at local midnights
    with a daily peak-demand charge (:meth:`windows`); the figures — energies, bills, the market's intervals,
    counts, extremes — are sums or extremes over the windows, and sums differ from a whole read only by the
    order of floating-point additions.

    While :meth:`chunks` is walked it keeps what the figures need step by step and nothing more: the bus
    voltages (``vm``, steps × buses), the batteries' state-of-charge band and fleet power per step
    (``battery_steps``), the state of charge of up to three batteries (``battery_soc``, those of
    ``soc_picks``) and the battery power at the buses of ``bus_power_at`` (``battery_p_by_bus``).
    """

    def __init__(self, path: str | Path, chunk_rows: int = REPORT_CHUNK_ROWS) -> None:
        import pyarrow.parquet as pq

        self.path = Path(path)
        self.chunk_rows = int(chunk_rows)
        schema = pq.read_schema(self.path)
        self.columns = list(schema.names)
        meta = (schema.metadata or {}).get(KIND_COLUMNS_KEY)
        self._per_kind: dict[str, list[str]] | None = json.loads(meta) if meta else None
        if self._per_kind is not None:
            self.kinds = sorted(self._per_kind)
        else:  # a file without the metadata: the kinds from the rows
            kinds = pq.read_table(self.path, columns=["kind"], read_dictionary=["kind"]).column("kind").unique()
            self.kinds = sorted(kinds.to_pylist())
        self.num_rows = pq.ParquetFile(self.path).metadata.num_rows
        self._whole: dict[str, pd.DataFrame] = {}
        self._walked: dict[str, Any] | None = None
        #: three battery households (:func:`three_households`): their batteries' state of charge is kept step by step
        self.soc_picks = three_households(self.path.parent)
        #: the buses whose battery power is kept step by step: the planner's community buses
        self.bus_power_at: list[int] = []
        #: windows hold whole intervals of this many seconds from the first step (the market's); None: hours
        self.interval_s: int | None = None
        #: windows end at local midnights (a tariff's daily peak-demand charge)
        self.midnights = False

    def _columns_of(self, kind: str, only: list[str] | None = None) -> list[str] | None:
        if self._per_kind is None:
            return None if only is None else BASE_COLUMNS + [c for c in only if c in self.columns]
        wanted = set(self._per_kind.get(kind, ())) & (set(only) if only is not None else set(self.columns))
        return BASE_COLUMNS + [c for c in self.columns if c in wanted and c not in BASE_COLUMNS]

    def _read(self, kind: str, window: tuple[int, int] | None = None, only: list[str] | None = None) -> pd.DataFrame:
        import pyarrow.parquet as pq

        if kind not in self.kinds:
            return pd.DataFrame(columns=self.columns)
        filters: list[tuple[str, str, Any]] = [("kind", "==", kind)]
        if window is not None:
            filters += [("time_s", ">=", window[0]), ("time_s", "<", window[1])]
        return pq.read_table(self.path, columns=self._columns_of(kind, only), filters=filters).to_pandas()

    def whole(self, kind: str) -> pd.DataFrame:
        """Every row of ``kind`` (file order); for the big kinds, prefer :meth:`chunks`."""
        if kind not in self._whole:
            if kind in SMALL_KINDS:
                self._read_small()
            else:
                self._whole[kind] = self._read(kind)
        return self._whole[kind]

    def _read_small(self) -> None:
        """Every kind of :data:`SMALL_KINDS` in one pass, a row group at a time: a filter on ``kind`` over the
        whole file would decode every row's columns at once (a month of 2,000 households: 260 M rows)."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        kinds = [k for k in SMALL_KINDS if k in self.kinds]
        columns = {k: self._columns_of(k) or self.columns for k in kinds}
        union = [c for c in self.columns if any(c in cols for cols in columns.values())]
        parts: dict[str, list[Any]] = {k: [] for k in kinds}
        if kinds:
            file = pq.ParquetFile(self.path)
            for group in range(file.num_row_groups):
                table = file.read_row_group(group, columns=union)
                for k in kinds:
                    parts[k].append(table.filter(pc.equal(table["kind"], k)).select(columns[k]))
        for k in SMALL_KINDS:
            if k in kinds:
                self._whole[k] = pa.concat_tables(parts[k]).to_pandas()
            else:
                self._whole[k] = pd.DataFrame(columns=self.columns)

    def has(self, kind: str) -> bool:
        """Whether the run recorded any row of ``kind``."""
        if kind in SMALL_KINDS:
            return len(self.whole(kind)) > 0
        return kind in self.kinds and self.walked["rows"].get(kind, 0) > 0

    def windows(self) -> list[tuple[int, int] | None]:
        """The ``time_s`` windows [start, end) of :meth:`chunks`: ``[None]`` (everything at once) when the run has
        at most ``chunk_rows`` rows, else as many whole hours from the first step (whole market intervals,
        ``interval_s``) as keep a window within ``chunk_rows``; with a daily peak-demand charge
        (``midnights``), whole local days cut at midnight instead (one window if the market's intervals do not
        start at midnight)."""
        feeder = self.whole("feeder")
        if self.num_rows <= self.chunk_rows or len(feeder) < 2:
            return [None]
        first_s, last_s = int(feeder["time_s"].min()), int(feeder["time_s"].max())
        if self.midnights:
            t0 = pd.Timestamp(feeder.loc[feeder["time_s"].idxmin(), "time"])
            origin, unit = first_s - (t0.hour * 3600 + t0.minute * 60 + t0.second), 86400  # the first local midnight
            if self.interval_s and (first_s - origin) % self.interval_s:
                return [None]  # no edge is both a midnight and an interval's start
        else:
            origin, unit = first_s, math.lcm(3600, self.interval_s or 3600)
        units = -(-(last_s + 1 - origin) // unit)
        per_window = max(1, int(self.chunk_rows // max(self.num_rows / units, 1)))
        edges = [origin + unit * k for k in range(per_window, units, per_window)]
        bounds = [first_s] + [e for e in edges if first_s < e <= last_s] + [last_s + 1]
        return list(zip(bounds[:-1], bounds[1:]))

    def chunks(self, kinds: tuple[str, ...] = ("bus", "household", "battery", "controller")) -> Iterator[Recorded]:
        """The rows of ``kinds`` a window at a time (:meth:`windows`), each as :class:`Recorded` with the columns
        the report reads (:data:`REPORT_COLUMNS`); the per-step figures of the class's doc are kept on the way
        (a walk over every window)."""
        windows = self.windows()
        if self.has("plan"):
            self.bus_power_at = sorted(int(b) for b in self.whole("plan")["bus"].unique())
        kept: dict[str, Any] = {"vm": [], "battery_steps": [], "battery_soc": [], "battery_p_by_bus": [],
                                "rows": {}}
        for window in windows:
            chunk = Recorded()
            chunk.columns = self.columns
            for kind in kinds:
                if kind in self.kinds:
                    chunk[kind] = self._read(kind, window, REPORT_COLUMNS.get(kind))
                    kept["rows"][kind] = kept["rows"].get(kind, 0) + len(chunk[kind])
            self._keep(chunk, kept)
            yield chunk
        if set(kinds) >= {"bus", "battery"}:
            self._walked = kept

    def _keep(self, chunk: Recorded, kept: dict[str, Any]) -> None:
        if "bus" in chunk:
            kept["vm"].append(bus_voltages(chunk))
        bat = chunk.get("battery")
        if bat is not None and len(bat):
            soc = bat.pivot(index="time_s", columns="entity", values="soc_frac")
            kept["battery_steps"].append(pd.DataFrame({
                "soc_min": soc.min(axis=1), "soc_max": soc.max(axis=1), "soc_mean": soc.mean(axis=1),
                "p_kw": bat.pivot(index="time_s", columns="entity", values="p_kw").sum(axis=1),
                "batteries": soc.shape[1]}))
            picked = [e for e in self.soc_picks.values() if e in soc.columns]
            kept["battery_soc"].append(soc[picked])
            if self.bus_power_at:
                mine = bat[bat["bus"].isin(self.bus_power_at)]
                kept["battery_p_by_bus"].append(mine.pivot(index="time_s", columns="bus", values="p_kw"))

    @property
    def walked(self) -> dict[str, Any]:
        """What a walk over the windows kept (walks them if no walk has yet)."""
        if self._walked is None:
            for _ in self.chunks(("bus", "battery")):
                pass
        assert self._walked is not None
        return self._walked

    def _joined(self, name: str) -> pd.DataFrame:
        parts = self.walked[name]
        return pd.concat(parts) if len(parts) > 1 else parts[0] if parts else pd.DataFrame()

    @property
    def vm(self) -> pd.DataFrame:
        """vm_pu per step (rows, ``time_s``) and bus (columns, 1-based), as :func:`bus_voltages`."""
        return self._joined("vm")

    @property
    def battery_steps(self) -> pd.DataFrame:
        """Per step (``time_s``): the batteries' state of charge ``soc_min``, ``soc_max``, ``soc_mean`` (0..1),
        their summed power ``p_kw`` (+ = charging) and how many there were."""
        return self._joined("battery_steps")

    @property
    def battery_soc(self) -> pd.DataFrame:
        """State of charge (0..1) of the batteries of ``soc_picks``, per step."""
        return self._joined("battery_soc")

    @property
    def battery_p_by_bus(self) -> pd.DataFrame:
        """Battery power (kW, + = charging) per step at each bus of ``bus_power_at``."""
        return self._joined("battery_p_by_bus")


def three_households(out_dir: Path) -> dict[str, str]:
    """Three battery households with different assets (Couraud et al. 2022, Fig. 6), by what picked them
    (``"largest PV"``, ``"largest wind"``, ``"largest demand"``) → their battery's name; from the run folder's
    ``households.csv`` and ``batteries.csv`` (empty without them)."""
    if not ((out_dir / "households.csv").exists() and (out_dir / "batteries.csv").exists()):
        return {}
    households = pd.read_csv(out_dir / "households.csv")
    fleet = pd.read_csv(out_dir / "batteries.csv", keep_default_na=False)
    if "household" not in fleet or not len(fleet):
        return {}
    owned = households[households["name"].isin(set(fleet["household"]))]
    by_household = dict(zip(fleet["household"], fleet["name"]))
    picks: dict[str, str] = {}
    for label, col in (("largest PV", "pv_kwp"), ("largest wind", "wind_kw"), ("largest demand", "annual_kwh")):
        pool = owned[~owned["name"].isin(picks.values())]
        if col in pool and len(pool) and pool[col].max() > 0:
            picks[label] = str(pool.loc[pool[col].idxmax(), "name"])
    return {f"{name} ({label})": str(by_household[name]) for label, name in picks.items()}


def rows_of(df: pd.DataFrame | Recorded, kind: str) -> pd.DataFrame:
    """The rows of ``kind`` (an empty frame with every column if there are none)."""
    if isinstance(df, pd.DataFrame):
        return df[df.kind == kind]
    found = df.get(kind)
    return found if found is not None else pd.DataFrame(columns=df.columns)

def bus_voltages(df: pd.DataFrame) -> pd.DataFrame:
    """vm_pu per step (rows, ``time_s``) and bus (columns, 1-based)."""
    return rows_of(df, "bus").pivot(index="time_s", columns="bus", values="vm_pu").sort_index(axis=1)

def json_number(x: float) -> float | None:
    """JSON-safe number: NaN becomes null."""
    return None if pd.isna(x) else float(x)

def meter_kw(df: pd.DataFrame, batteries: pd.DataFrame) -> pd.DataFrame:
    """Net power at each household's meter (rows ``time_s``, columns household), after its battery if any."""
    hh = rows_of(df, "household").pivot(index="time_s", columns="entity", values="net_kw")
    linked = batteries[batteries["household"] != ""] if len(batteries) else batteries
    if len(linked):
        bat = rows_of(df, "battery").pivot(index="time_s", columns="entity", values="meter_kw").reindex(hh.index)
        # one array, not a column at a time: a frame assigned 2,000 columns one by one keeps 2,000 blocks and
        # every later operation on it walks them (seconds at fleet scale)
        values = np.array(hh.to_numpy(dtype=float), order="F")  # column-major, as before: bills (matrix products) to the bit
        values[:, hh.columns.get_indexer(linked["household"])] = bat[list(linked["name"])].to_numpy(dtype=float)
        hh = pd.DataFrame(values, index=hh.index, columns=hh.columns)
    return hh

def plan_vs_ac(plan: pd.DataFrame, vm: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per community bus: planned voltage (hourly, LinDistFlow; the ``plan`` rows) and AC voltage (per step, of
    ``vm``: :func:`bus_voltages`), on the step index."""
    planned = plan.pivot(index="time_s", columns="bus", values="plan_vm_pu")
    ac = vm[planned.columns]
    ac_hourly = ac.groupby(ac.index // 3600).transform("mean")
    return planned, ac, ac_hourly


#: the kinds of entity a run records, by the name a :class:`Result` reads them under
KINDS = {"feeder": "feeder", "buses": "bus", "lines": "line", "households": "household", "batteries": "battery",
         "controllers": "controller", "plans": "plan", "planner": "planner", "market": "market",
         "contract": "contract", "members": "member"}


class Result:
    """A run folder, read lazily: nothing is read until asked for, and then only the rows and columns asked for.

    ``res.households`` (and ``feeder``, ``buses``, ``batteries``, ``controllers``, ``plans``, ``planner``,
    ``market``, ``contract``, ``members``): that kind's rows as a tidy frame, with only the columns recorded for
    it. :meth:`frame` filters by time and entity (pyarrow filters: the rest is never read) and :meth:`wide` gives
    one column as a time × entity frame. ``res.summary`` is ``summary.json``; ``res.plot.<name>()`` draws one
    of the run's figures (:data:`dercosim.analysis.plots.PLOTS`).

    Open an existing folder with ``Result.open(run_dir)``; :func:`dercosim.run` returns one.
    """

    def __init__(self, out_dir: str | Path, summary: dict | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.parquet = self.out_dir / "timeseries.parquet"
        self._summary = summary

    @classmethod
    def open(cls, run_dir: str | Path) -> Result:
        """The run in ``run_dir``; FileNotFoundError names what is missing if it is not a run folder."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"{run_dir}: no such folder")
        missing = [f for f in ("timeseries.parquet", "summary.json") if not (run_dir / f).exists()]
        if missing:
            raise FileNotFoundError(f"{run_dir}: not a finished run folder ({' and '.join(missing)} missing)")
        return cls(run_dir)

    def __repr__(self) -> str:
        return f"Result({str(self.out_dir)!r})"

    @property
    def summary(self) -> dict:
        """``summary.json`` as a dict."""
        if self._summary is None:
            self._summary = json.loads((self.out_dir / "summary.json").read_text(encoding="utf-8"))
        return self._summary

    @property
    def scenario(self) -> Any:
        """The resolved scenario that ran (``scenario.toml``)."""
        from dercosim.scenarios.load import load_scenario

        return load_scenario(self.out_dir / "scenario.toml")

    @property
    def kinds(self) -> list[str]:
        """The kinds of entity recorded (``"feeder"``, ``"bus"``, ``"household"``, ...)."""
        import pyarrow.parquet as pq

        kinds = pq.read_table(self.parquet, columns=["kind"], read_dictionary=["kind"]).column("kind").unique()
        return sorted(kinds.to_pylist())

    def columns(self, kind: str) -> list[str]:
        """The columns recorded for ``kind`` (the base columns first)."""
        import pyarrow.parquet as pq

        schema = pq.read_schema(self.parquet)
        meta = (schema.metadata or {}).get(KIND_COLUMNS_KEY)
        wanted = json.loads(meta).get(kind, []) if meta else list(schema.names)
        return BASE_COLUMNS + [c for c in schema.names if c in set(wanted) and c not in BASE_COLUMNS]

    @property
    def versions(self) -> dict:
        """The software that produced the run (parquet metadata; :func:`dercosim.environment.versions`)."""
        import pyarrow.parquet as pq

        meta = (pq.read_schema(self.parquet).metadata or {}).get(VERSIONS_KEY)
        return json.loads(meta) if meta else {}

    def frame(self, kind: str, columns: list[str] | None = None, start_s: int | None = None,
              end_s: int | None = None, entities: list[str] | None = None) -> pd.DataFrame:
        """The rows of ``kind`` (tidy: one row per step and entity), reading only what is asked for.

        ``columns``: recorded columns to read beside ``time_s``, ``time``, ``entity`` and ``bus`` (default: all of
        the kind's); ``start_s`` ≤ ``time_s`` < ``end_s``: seconds since the run's start; ``entities``: names.
        """
        import pyarrow.parquet as pq

        if kind in KINDS:
            kind = KINDS[kind]
        known = self.columns(kind)
        if columns is not None:
            unknown = [c for c in columns if c not in known]
            if unknown:
                raise KeyError(f"{self.out_dir}: {kind} has no column {unknown[0]!r}; it has "
                               f"{', '.join(c for c in known if c not in BASE_COLUMNS)}")
            known = [c for c in BASE_COLUMNS if c != "kind"] + [c for c in columns if c not in BASE_COLUMNS]
        filters: list[tuple[str, str, Any]] = [("kind", "==", kind)]
        if start_s is not None:
            filters.append(("time_s", ">=", int(start_s)))
        if end_s is not None:
            filters.append(("time_s", "<", int(end_s)))
        if entities is not None:
            filters.append(("entity", "in", list(entities)))
        read = [c for c in known if c != "kind"]
        return pq.read_table(self.parquet, columns=read, filters=filters).to_pandas()

    def wide(self, kind: str, column: str, names: bool = False, **filters: Any) -> pd.DataFrame:
        """One column of ``kind`` as a frame: rows the local time of each step, columns the entities (for buses,
        the bus number; ``names=True``: the feeder's bus names, from ``buses.csv``). ``filters``: as
        :meth:`frame`."""
        rows = self.frame(kind, [column], **filters)
        by = "bus" if KINDS.get(kind, kind) == "bus" else "entity"
        wide = rows.pivot(index="time", columns=by, values=column).sort_index(axis=1)
        if names and by == "bus":
            table = pd.read_csv(self.out_dir / "buses.csv", dtype={"name": str})
            wide.columns = table.set_index("bus").loc[wide.columns, "name"].to_numpy()
        return wide

    def __getattr__(self, name: str) -> pd.DataFrame:
        if name in KINDS:
            return self.frame(KINDS[name])
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(KINDS))

    @property
    def plot(self) -> _Plots:
        """``res.plot.voltage_envelope()`` (and every name of :data:`dercosim.analysis.plots.PLOTS`): the figure,
        drawn from the run's records; ``save=True`` also writes it as PNG into the run folder."""
        return _Plots(self)


class _Plots:
    def __init__(self, result: Result) -> None:
        self._result = result
        self._drawn: Any = None

    def __dir__(self) -> list[str]:
        from dercosim.analysis.plots import PLOTS

        return sorted(PLOTS)

    def __getattr__(self, name: str) -> Any:
        from dercosim.analysis import plots

        if name not in plots.PLOTS:
            raise AttributeError(f"no figure {name!r}; the figures are {', '.join(plots.PLOTS)}")

        def draw(save: bool = False) -> Any:
            fig = plots.PLOTS[name](self._context())
            if fig is None:
                raise ValueError(f"{self._result.out_dir}: the run has nothing to draw in {name!r}")
            if save:
                fig.tight_layout()
                fig.savefig(self._result.out_dir / f"{name}.png", dpi=110)
            return fig

        draw.__doc__ = plots.PLOTS[name].__doc__
        return draw

    def _context(self) -> Any:
        from dercosim.analysis.plots import Drawn

        if self._drawn is None:
            res = self._result
            tables = {}
            if (res.out_dir / "market.csv").exists():
                tables["market"] = pd.read_csv(res.out_dir / "market.csv")
            self._drawn = Drawn(Records(res.parquet), res.scenario, res.out_dir, tables)
        return self._drawn
