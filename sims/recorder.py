"""mosaik simulator that records attributes and streams them to Parquet.

Rows are long-format: one row per step per recorded entity, with columns
``time_s``, ``time``, ``entity``, ``kind``, ``bus`` and one column per
recorded attribute (NaN where an entity has no such attribute). Every
``flush_every_s`` simulated seconds the buffered rows are written as one
complete Parquet file in ``<path>.parts/`` (by a writer thread, one part at a
time, while the simulation goes on), so a crash or kill loses at most the rows
since the last part that reached the disk (``pandas.read_parquet`` reads the
folder).
The writer thread also appends each part, as one row group, to the whole
file, ``.<name>.tmp`` beside ``<path>``; at the end that file is closed and
renamed to ``<path>`` (nothing is read back), and only then are the parts
removed. Had that file failed, the parts are joined into ``<path>`` instead.
A run that ends before its first part was written (shorter than
``flush_every_s``) writes its rows straight to ``<path>``.

Every write is atomic: a part is written under a hidden temporary name
(``.part-*.tmp``, which pyarrow's dataset reader skips) and renamed when
complete; the whole file is renamed only once closed. A kill at any instant
leaves either the complete parts or the complete file readable, never a
truncated file under a name a reader would open.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Any

import mosaik_api_v3
from mosaik_api_v3.types import Meta
from dercosim.analysis.results import KIND_COLUMNS_KEY, VERSIONS_KEY
from dercosim.environment import versions
from dercosim.sims.pacing import paced
from dercosim.sims.tables import TABLE_ATTR
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


#: Called with 1 each simulated step the recorder records (the run's progress bar, in steps); None: no progress
PROGRESS: Callable[[int], None] | None = None

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
                            "params": ["path", "entities", "columns", "start", "tz", "flush_every_s", "tables", "record_from_s",
                                       "record_until_s"],
                            "attrs": []}},
}


def _into_place(tmp: Path, path: Path) -> None:
    """The complete file ``tmp`` synced to disk and renamed to ``path``."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_atomically(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` through a hidden temporary file and a rename (never a truncated ``path``)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(table, tmp, row_group_size=max(len(table), 1))
        _into_place(tmp, path)
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
        if writer is not None:
            writer.close()
        writer = None
        _into_place(tmp, path)
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


@paced
class RecorderSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.eid: str | None = None

    def init(self, sid: str, time_resolution: float = 1.0, step_s: int = 60) -> Meta:
        self.step_s = int(step_s)
        return self.meta

    def create(self, num: int, model: str, path: str, entities: dict[str, dict[str, Any]],
               columns: dict[str, str], start: str, tz: str, flush_every_s: int = 3600,
               tables: dict[str, dict[str, list[str]]] | None = None, record_from_s: int = 0,
               record_until_s: int | None = None) -> list[dict]:
        """``entities``: mosaik full id -> {entity, kind, bus}; ``columns``: attribute -> "float64"|"bool";
        ``tables``: full id of a simulator's ``Table`` entity (:mod:`dercosim.sims.tables`) -> {attribute: the
        full id of the entity each of its values belongs to, in order; None for a value not to record (the
        Table also carries columns for other simulators)}; ``record_from_s``: steps before this time (the warm-up
        of ``dercosim run --start``) are simulated but not recorded; ``record_until_s``: nor are the steps from
        this time on (a learning environment's last step, simulated only for its final observation)."""
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
        self.record_from_s = int(record_from_s)
        self.record_until_s = None if record_until_s is None else int(record_until_s)
        types = {"float64": pa.float64(), "bool": pa.bool_()}
        self.tables = {tid: {attr: list(srcs) for attr, srcs in cols.items()} for tid, cols in (tables or {}).items()}
        kind_columns: dict[str, set[str]] = {}  # what is recorded for each kind (for readers: schema metadata)
        for cols in self.tables.values():
            for attr, srcs in cols.items():
                for src in srcs:
                    if src in entities:
                        kind_columns.setdefault(entities[src]["kind"], set()).add(attr)
        self.schema = pa.schema(
            [("time_s", pa.int64()), ("time", pa.timestamp("s", tz=str(self.start.tz))), ("entity", pa.string()),
             ("kind", pa.string()), ("bus", pa.int16())]
            + [(name, types[kind]) for name, kind in self.columns.items()],
            metadata={KIND_COLUMNS_KEY: json.dumps({k: sorted(v) for k, v in sorted(kind_columns.items())}),
                      VERSIONS_KEY: json.dumps(versions())},
        )
        self._order = list(entities)  # rows in the order the world registered the entities
        self._known = set(self._order)
        self._entity = np.array([entities[src]["entity"] for src in self._order], dtype=object)
        self._kind = np.array([entities[src]["kind"] for src in self._order], dtype=object)
        bus = [entities[src].get("bus") for src in self._order]
        self._bus = np.array([0 if b is None else int(b) for b in bus], dtype=np.int16)
        self._bus_missing = np.array([b is None for b in bus])
        self._table_entities = {tid: set().union(*cols.values()) & self._known for tid, cols in self.tables.items()}
        self._row_cache: dict[frozenset[str], tuple[np.ndarray, dict[str, int], dict[tuple[str, str], Any]]] = {}
        self._reset_buffer()
        self.n_parts = 0
        self._writer: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None
        self._whole: pq.ParquetWriter | None = None  # the whole file, a row group per part (None: none yet)
        self._whole_tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._whole_failed = False  # then the parts are joined at the end
        self.last_flush_s = 0
        return [{"eid": self.eid, "type": model}]

    def _reset_buffer(self) -> None:
        #: one chunk per step: (time_s, row positions in ``self._order``, {column: float64 values})
        self.buffer: list[tuple[int, np.ndarray, dict[str, np.ndarray]]] = []
        self.buffered_rows = 0

    def _rows(self, present: set[str]) -> tuple[np.ndarray, dict[str, int], dict[tuple[str, str], Any]]:
        """Positions (in registration order) of the entities that sent data, each one's row, and a memo of
        the rows of each table column (filled by :meth:`_table_rows`); cached."""
        key = frozenset(present)
        cached = self._row_cache.get(key)
        if cached is None:
            positions = np.array([i for i, src in enumerate(self._order) if src in key], dtype=np.int64)
            cached = (positions, {self._order[i]: row for row, i in enumerate(positions)}, {})
            self._row_cache[key] = cached
        return cached

    def _table_rows(self, tid: str, attr: str, row_of: dict[str, int],
                    memo: dict[tuple[str, str], Any]) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows of a table column's values, and which of its values to keep (None: all)."""
        found = memo.get((tid, attr))
        if found is None:
            srcs = self.tables[tid][attr]
            keep = np.array([src in row_of for src in srcs], dtype=bool)
            rows = np.array([row_of[src] for src in srcs if src in row_of], dtype=np.int64)
            found = memo[(tid, attr)] = (rows, None if keep.all() else keep)
        return found

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        if STOP.is_set():
            raise StopRequested(f"stop requested ({STOP_REASON['signal']}) at t = {time} s")
        if PROGRESS is not None:  # one simulated step recorded
            PROGRESS(1)
        if time < self.record_from_s or (self.record_until_s is not None and time >= self.record_until_s):
            return time + self.step_s
        given = dict(inputs.get(self.eid, {}))
        tables = {tid: cols for tid, cols in given.pop(TABLE_ATTR, {}).items() if tid in self.tables}
        present = set().union(*given.values(), *(self._table_entities[tid] for tid in tables)) & self._known
        positions, row_of, memo = self._rows(present)
        n = len(positions)
        values: dict[str, np.ndarray] = {}
        if n:
            for attr, sources in given.items():
                if attr not in self.columns:
                    continue
                col = values.setdefault(attr, np.full(n, np.nan))
                found = [row_of[src] for src in sources if src in row_of]
                if len(found) == len(sources):  # mosaik's None (no value) becomes NaN
                    col[found] = np.array(list(sources.values()), dtype=np.float64)
                else:
                    col[found] = np.array([v for src, v in sources.items() if src in row_of], dtype=np.float64)
            for tid, cols in tables.items():  # whole columns from a simulator's Table entity
                for attr, vals in cols.items():
                    if attr not in self.columns:
                        continue
                    rows, keep = self._table_rows(tid, attr, row_of, memo)
                    column = np.asarray(vals, dtype=np.float64)  # None (no value) becomes NaN
                    values.setdefault(attr, np.full(n, np.nan))[rows] = column if keep is None else column[keep]
            self.buffer.append((time, positions, values))
            self.buffered_rows += n
        if time + self.step_s - self.last_flush_s >= self.flush_every_s:
            self.flush()
            self.last_flush_s = time + self.step_s
        return time + self.step_s

    def _table(self) -> pa.Table:
        """The buffered steps as one table in the recorder's schema (columns built with numpy)."""
        counts = [len(pos) for _, pos, _ in self.buffer]
        time_s = np.repeat(np.array([t for t, _, _ in self.buffer], dtype=np.int64), counts)
        positions = np.concatenate([pos for _, pos, _ in self.buffer])
        arrays: dict[str, pa.Array] = {
            "time_s": pa.array(time_s, pa.int64()),
            "time": pa.array(time_s + self.start_epoch_s, pa.int64()).cast(self.schema.field("time").type),
            "entity": pa.array(self._entity[positions], pa.string()),
            "kind": pa.array(self._kind[positions], pa.string()),
            "bus": pa.array(self._bus[positions], pa.int16(), mask=self._bus_missing[positions]),
        }
        ends = np.cumsum(counts).tolist()
        spans = [(end - count, end, vals) for end, count, (_, _, vals) in zip(ends, counts, self.buffer)]
        total = ends[-1] if ends else 0
        for name, kind in self.columns.items():
            col = np.full(total, np.nan)  # NaN where a step did not record this column
            for start, end, vals in spans:
                found = vals.get(name)
                if found is not None:
                    col[start:end] = found
            missing = np.isnan(col)
            if kind == "bool":
                arrays[name] = pa.array(col != 0, pa.bool_(), mask=missing)
            else:
                arrays[name] = pa.array(col, pa.float64(), mask=missing)
        return pa.Table.from_arrays([arrays[name] for name in self.schema.names], schema=self.schema)

    def flush(self) -> None:
        """Write the buffered rows as one part file (a no-op when empty), on the writer thread: the table is made
        here, compressing and writing it (which releases the GIL) overlaps the next steps. One write at a time:
        the previous one is waited for before the table is made (and its error, if any, raised here)."""
        if not self.buffered_rows:
            return
        self.wait_written()  # first: two parts' tables are never held at once
        table = self._table()
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="dercosim-recorder")
        self._pending = self._writer.submit(self._write, table, self.parts / f"part-{self.n_parts:05d}.parquet")
        self.n_parts += 1
        self._reset_buffer()

    def _write(self, table: pa.Table, part: Path) -> None:
        """On the writer thread: the part file, then the same rows as a row group of the whole file."""
        write_atomically(table, part)
        if self._whole_failed:
            return
        try:
            if self._whole is None:
                self._whole = pq.ParquetWriter(self._whole_tmp, self.schema)
            self._whole.write_table(table, row_group_size=max(len(table), 1))
        except Exception:  # noqa: BLE001 - the parts hold every row: they are joined at the end instead
            self._drop_whole()
            self._whole_failed = True

    def _drop_whole(self) -> None:
        """Close and remove the whole file being written (it is not complete)."""
        whole, self._whole = self._whole, None
        try:
            if whole is not None:
                whole.close()
        except Exception:  # noqa: BLE001 - it is removed anyway
            pass
        self._whole_tmp.unlink(missing_ok=True)

    def _finish_whole(self) -> None:
        """``<path>`` from the whole file (closed, synced, renamed), then the parts removed; or, had the whole
        file failed or never begun, the parts joined (:func:`join_parts`)."""
        if self._whole is not None and not self._whole_failed:
            try:
                self._whole.close()
                _into_place(self._whole_tmp, self.path)
                self._whole = None
                shutil.rmtree(self.parts)
                return
            except Exception:  # noqa: BLE001 - the parts hold every row
                self._drop_whole()
        join_parts(self.parts, self.path)

    def wait_written(self) -> None:
        """Wait until the part being written is on disk (raises what the write raised)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def get_data(self, outputs: dict) -> dict:
        return {}

    def finalize(self) -> None:
        if self.eid is None:
            return
        if not self.n_parts and self.buffered_rows:  # the whole run is one part: written straight as <path>
            write_atomically(self._table(), self.path)
            self._reset_buffer()
            shutil.rmtree(self.parts)
            return
        try:
            self.flush()
            self.wait_written()
        except BaseException:
            self._drop_whole()  # a part failed: the parts on disk are the record
            raise
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None
        self._finish_whole()
