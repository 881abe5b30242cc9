"""Reading a run's ``timeseries.parquet``: by kind of entity, each kind with only its own columns.

``pd.read_parquet`` of the whole long table gives every kind every column (mostly empty); :func:`read_recorded`
reads one kind at a time with pyarrow filters, which is what the summary, the plots and ``validate`` use.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

#: parquet schema metadata key: the attributes recorded for each kind of entity (JSON)
KIND_COLUMNS_KEY = b"dercosim.kind_columns"

BASE_COLUMNS = ["time_s", "time", "entity", "kind", "bus"]

class Recorded(dict):
    """A run's recorded rows split by kind (``"household"`` → its rows), each with only the columns recorded for
    that kind: what the report reads instead of the whole long table, whose other kinds' columns are all NaN
    (at 2,000 households for a day, 8.6 M rows × 85 columns, mostly empty). Row order within a kind is the
    file's."""

    columns: list[str]

def read_recorded(path: str | Path) -> Recorded:
    """``timeseries.parquet`` as :class:`Recorded`, one kind at a time (the file is never read whole)."""
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    meta = (schema.metadata or {}).get(KIND_COLUMNS_KEY)
    kinds = pq.read_table(path, columns=["kind"], read_dictionary=["kind"]).column("kind").unique().to_pylist()
    per_kind = json.loads(meta) if meta else {}
    recorded = Recorded()
    recorded.columns = list(schema.names)
    for kind in kinds:
        wanted = per_kind.get(kind)
        columns = (BASE_COLUMNS + [c for c in schema.names if c in set(wanted) and c not in BASE_COLUMNS]
                   if wanted is not None else None)  # a file without the metadata: every column
        recorded[kind] = pq.read_table(path, columns=columns, filters=[("kind", "==", kind)]).to_pandas()
    return recorded

def rows_of(df: pd.DataFrame | Recorded, kind: str) -> pd.DataFrame:
    """The rows of ``kind`` (an empty frame with every column if there are none)."""
    if isinstance(df, pd.DataFrame):
        return df[df.kind == kind]
    found = df.get(kind)
    return found if found is not None else pd.DataFrame(columns=df.columns)

def has_rows(df: pd.DataFrame | Recorded, kind: str) -> bool:
    return bool((df.kind == kind).any()) if isinstance(df, pd.DataFrame) else len(df.get(kind, ())) > 0

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

def plan_vs_ac(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per community bus: planned voltage (hourly, LinDistFlow) and AC voltage (minute), on the minute index."""
    plan = rows_of(df, "plan")
    planned = plan.pivot(index="time_s", columns="bus", values="plan_vm_pu")
    ac = bus_voltages(df)[planned.columns]
    ac_hourly = ac.groupby(ac.index // 3600).transform("mean")
    return planned, ac, ac_hourly
