"""mosaik simulator that records attributes and streams them to Parquet.

Rows are long-format: one row per step per recorded entity, with columns
``time_s``, ``time``, ``entity``, ``kind``, ``bus`` and one column per
recorded attribute (NaN where an entity has no such attribute). Every
``flush_every_s`` simulated seconds the buffered rows are written as one
complete Parquet file in ``<path>.parts/``, so a crash or kill loses at most
the rows since the last flush (``pandas.read_parquet`` reads the folder).
At the end the parts are joined into ``<path>``, one row group per part.

Both writes are atomic: a part is written under a hidden temporary name
(``.part-*.tmp``, which pyarrow's dataset reader skips) and renamed when
complete; the join writes ``.<name>.tmp`` beside ``<path>``, renames it, and
only then removes the parts. A kill at any instant leaves either the complete
parts or the complete joined file readable, never a truncated file under a
name a reader would open.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import Any

import mosaik_api_v3
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

#: Set (e.g. by a signal handler) to stop the run cleanly at the next step boundary: the recorder raises
#: :class:`StopRequested` there, mosaik shuts the world down, and :meth:`RecorderSim.finalize` joins what
#: was recorded. Stopping at a boundary, not wherever a signal lands, keeps mosaik's tasks consistent.
STOP = threading.Event()
STOP_REASON = {"signal": "SIGINT"}


class StopRequested(Exception):
    """The run was asked to stop (see :data:`STOP`)."""


META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {"Recorder": {"public": True, "any_inputs": True,
                            "params": ["path", "entities", "columns", "start", "tz", "flush_every_s"],
                            "attrs": []}},
}


def write_atomically(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` through a hidden temporary file and a rename (never a truncated ``path``)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def join_parts(parts_dir: Path, path: Path) -> int:
    """Join the part files of ``parts_dir`` into ``path`` (one row group each); return the row count.

    Atomic: ``path`` appears complete or not at all, and the parts are removed
    only after it has.
    """
    files = sorted(parts_dir.glob("part-*.parquet"))
    rows = 0
    if not files:
        return 0
    tmp = path.with_name(f".{path.name}.tmp")
    writer = None
    try:
        for f in files:
            table = pq.read_table(f)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table, row_group_size=max(len(table), 1))
            rows += len(table)
        writer.close()
        writer = None
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - the original error matters more
                pass
        tmp.unlink(missing_ok=True)
        raise
    shutil.rmtree(parts_dir)
    return rows


class RecorderSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.eid = None

    def init(self, sid: str, time_resolution: float = 1.0, step_s: int = 60) -> dict:
        self.step_s = int(step_s)
        return self.meta

    def create(self, num: int, model: str, path: str, entities: dict[str, dict[str, Any]],
               columns: dict[str, str], start: str, tz: str, flush_every_s: int = 3600) -> list[dict]:
        """``entities``: mosaik full id -> {entity, kind, bus}; ``columns``: attribute -> "float64"|"bool"."""
        if num != 1 or self.eid is not None:
            raise ValueError("RecorderSim holds exactly one Recorder")
        self.eid = "recorder"
        self.path = Path(path)
        self.parts = self.path.with_name(self.path.name + ".parts")
        if self.parts.exists():
            shutil.rmtree(self.parts)
        self.parts.mkdir(parents=True)
        self.entities = entities
        self.columns = dict(columns)
        self.start = pd.Timestamp(start).tz_localize(tz) if pd.Timestamp(start).tzinfo is None \
            else pd.Timestamp(start)
        self.start_epoch_s = int(self.start.timestamp())
        self.flush_every_s = int(flush_every_s)
        types = {"float64": pa.float64(), "bool": pa.bool_()}
        self.schema = pa.schema(
            [("time_s", pa.int64()), ("time", pa.timestamp("s", tz=str(self.start.tz))), ("entity", pa.string()),
             ("kind", pa.string()), ("bus", pa.int16())]
            + [(name, types[kind]) for name, kind in self.columns.items()]
        )
        self._reset_buffer()
        self.n_parts = 0
        self.last_flush_s = 0
        self.rows_written = 0
        return [{"eid": self.eid, "type": model}]

    def _reset_buffer(self) -> None:
        self.buffer: dict[str, list] = {name: [] for name in self.schema.names}

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        if STOP.is_set():
            raise StopRequested(f"stop requested ({STOP_REASON['signal']}) at t = {time} s")
        by_source: dict[str, dict[str, Any]] = {}
        for attr, sources in inputs.get(self.eid, {}).items():
            for src, value in sources.items():
                by_source.setdefault(src, {})[attr] = value
        stamp = self.start_epoch_s + time  # stored as a tz-aware timestamp column
        buf = self.buffer
        for src, info in self.entities.items():  # rows in the order the world registered them
            values = by_source.get(src)
            if values is None:
                continue
            buf["time_s"].append(time)
            buf["time"].append(stamp)
            buf["entity"].append(info["entity"])
            buf["kind"].append(info["kind"])
            buf["bus"].append(info.get("bus"))
            for name, kind in self.columns.items():
                v = values.get(name)
                buf[name].append(None if v is None else (bool(v) if kind == "bool" else float(v)))
        if time + self.step_s - self.last_flush_s >= self.flush_every_s:
            self.flush()
            self.last_flush_s = time + self.step_s
        return time + self.step_s

    def flush(self) -> None:
        """Write the buffered rows as one part file (a no-op when empty)."""
        if not self.buffer["time_s"]:
            return
        table = pa.Table.from_pydict(self.buffer, schema=self.schema)
        write_atomically(table, self.parts / f"part-{self.n_parts:05d}.parquet")
        self.n_parts += 1
        self.rows_written += len(table)
        self._reset_buffer()

    def get_data(self, outputs: dict) -> dict:
        return {}

    def finalize(self) -> None:
        if self.eid is None:
            return
        self.flush()
        join_parts(self.parts, self.path)
