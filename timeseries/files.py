"""Series from the user's own files (CSV or parquet): read, checked and resampled to the simulation clock.

A file has a time column and one value column per series (a household, a
price, a weather quantity). Only the rows of the window a run needs are kept:
a CSV is read in chunks, a parquet file by row group (row groups wholly outside
the window are skipped on their time statistics), so a year of minute data for
a thousand homes never has to fit in memory for a run of a week.

Checks, each a :class:`DataFileError` naming the file, the column and the
first bad row: times that do not parse, duplicated or decreasing times, a
spacing that is not regular (a gap), local times that do not exist or are
ambiguous at a daylight-saving change, missing values (empty, NaN, ±inf) and
a window the file does not cover.

Resampling to the clock's step (any step, finer or coarser than the file's):

- ``"mean"`` (power, irradiance, temperature, wind): the file's value is held
  over its interval and each step gets the mean over the step — energy is
  kept exactly whatever the two steps are;
- ``"hold"`` (prices): the value in force at the start of each step (a price file may ask for the mean
  instead, e.g. 5-minute prices settled per half hour).

Timestamps mark the start of their interval (``label = "start"``) or its end
(``"end"``, as many smart meters write them). Naive timestamps are read in
``timezone`` (an IANA zone such as ``"Europe/London"``, daylight saving
included); timestamps with a UTC offset are taken as written.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: units of power, with their factor to kW; "… per step" is energy per row (the file's interval)
POWER_UNITS: dict[str, float] = {"kW": 1.0, "W": 1e-3, "MW": 1e3, "kWh per step": 1.0, "Wh per step": 1e-3}
#: PV output per kWp of the household's array
PV_UNITS: dict[str, float] = {**POWER_UNITS, "kW per kWp": 1.0, "W per kWp": 1e-3}
#: prices, with their factor to currency per kWh
PRICE_UNITS: dict[str, float] = {"per MWh": 1e-3, "per kWh": 1.0}
#: a dimensionless multiplier (the base load's shape)
SHAPE_UNITS: dict[str, float] = {"1": 1.0, "%": 0.01}
#: weather quantities a file may give, each in its unit
WEATHER_COLUMNS = ("ghi_w_m2", "dni_w_m2", "dhi_w_m2", "temp_air_c", "wind_speed_m_s")

#: rows read at a time from a CSV, or from a parquet row group larger than this
CHUNK_ROWS = 100_000


class DataFileError(ValueError):
    """A data file cannot be used; the message names the file, the column, the row and what was expected."""


class CoverageError(DataFileError):
    """The file is good but does not cover the window asked for."""


def file_kind(path: str | Path) -> str:
    """"csv" or "parquet" from the file's name; :class:`DataFileError` for anything else."""
    name = str(path).lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    raise DataFileError(f"{path}: expected a .csv, .csv.gz or .parquet file")


def header(path: str | Path) -> list[str]:
    """The file's column names (reads no data)."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: no such file")
    if file_kind(path) == "parquet":
        import pyarrow.parquet as pq

        return list(pq.ParquetFile(path).schema_arrow.names)
    try:
        return list(pd.read_csv(path, nrows=0).columns)
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise DataFileError(f"{path}: cannot read as CSV ({exc})") from None


def read_series(file: str | Path, columns: Sequence[str], *, start: pd.Timestamp, end: pd.Timestamp, step_s: int,
                rule: str, unit_factor: float = 1.0, per_step: bool = False, time_column: str = "time",
                timezone: str = "UTC", label: str = "start", outlook_day: bool = False) -> np.ndarray:
    """The ``columns`` of ``file`` on the clock's steps ``[start, end)`` (tz-aware), shape (steps, len(columns)).

    ``rule`` is ``"mean"`` or ``"hold"`` (module docstring); values are multiplied by ``unit_factor``, and with
    ``per_step`` they are energy per row (kWh per the file's interval) and become its mean power. Checked and
    cached on the file's path, size and modification time; :class:`DataFileError` on any problem.

    ``outlook_day``: the window's last day is the day after a run (what a controller may look ahead at); where
    the file ends with the run, that day repeats the one before it instead of raising :class:`CoverageError`.
    """
    args = (*_identity(file), tuple(columns), pd.Timestamp(start))
    rest = (int(step_s), rule, float(unit_factor), bool(per_step), time_column, timezone, label)
    try:
        return _read_cached(*args, pd.Timestamp(end), *rest)
    except CoverageError:
        day = pd.Timedelta(days=1)
        if not outlook_day or pd.Timestamp(end) - pd.Timestamp(start) < 2 * day:
            raise
        values = _read_cached(*args, pd.Timestamp(end) - day, *rest)
        out = np.concatenate([values, values[-(86400 // int(step_s)):]])
        out.flags.writeable = False
        return out


def _identity(file: str | Path) -> tuple[str, int, int]:
    """The file's path, size and modification time: what the caches are keyed on (a changed file is read anew)."""
    try:
        stat = Path(file).stat()
    except OSError:
        raise DataFileError(f"{file}: no such file") from None
    return str(file), stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=16)
def _read_cached(path: str, size: int, mtime_ns: int, columns: tuple[str, ...], start: pd.Timestamp,
                 end: pd.Timestamp, step_s: int, rule: str, unit_factor: float, per_step: bool, time_column: str,
                 timezone: str, label: str) -> np.ndarray:
    del size, mtime_ns  # cache key only
    if rule not in ("mean", "hold"):
        raise ValueError(f"rule must be 'mean' or 'hold', got {rule!r}")
    _check_columns(path, columns, time_column)
    times, values, step_f = _window(Path(path), list(columns), time_column, timezone, label, start, end)
    if per_step:
        values = values / (step_f / 3600.0)
    if unit_factor != 1.0:
        values = values * unit_factor
    grid = pd.date_range(start, end, freq=pd.Timedelta(seconds=step_s), inclusive="left")
    out = _resample(times, values, step_f, grid, step_s, rule)
    out.flags.writeable = False
    return out


def read_at(file: str | Path, column: str, times: pd.DatetimeIndex, *, unit_factor: float = 1.0,
            time_column: str = "time", timezone: str = "UTC", label: str = "start") -> np.ndarray:
    """The value of ``column`` in force at each of ``times`` (tz-aware, increasing): the ``"hold"`` rule at any
    instants (a price at each market interval's start). :class:`CoverageError` if the file ends before one."""
    start, end = pd.Timestamp(times[0]), pd.Timestamp(times[-1]) + pd.Timedelta(1, unit="ns")
    rows, values, _ = _window_cached(*_identity(file), (column,), time_column, timezone,
                                     label, start, end)
    pos = np.searchsorted(rows.asi8, times.tz_convert("UTC").asi8, side="right") - 1
    return values[pos, 0] * unit_factor


@functools.lru_cache(maxsize=16)
def _window_cached(path: str, size: int, mtime_ns: int, columns: tuple[str, ...], time_column: str, timezone: str,
                   label: str, start: pd.Timestamp, end: pd.Timestamp) -> tuple[pd.DatetimeIndex, np.ndarray, float]:
    del size, mtime_ns  # cache key only
    _check_columns(path, columns, time_column)
    times, values, step_f = _window(Path(path), list(columns), time_column, timezone, label, start, end)
    values.flags.writeable = False
    return times, values, step_f


def _check_columns(path: str, columns: Sequence[str], time_column: str) -> None:
    names = header(path)
    if time_column not in names:
        raise DataFileError(f"{path}: no time column {time_column!r} (columns: {_listed(names)}); set time_column")
    missing = [c for c in columns if c not in names]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataFileError(f"{path}: no column {missing[0]!r}{more}; the file has: {_listed(names)}")


def _listed(names: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", … ({len(names)} columns)" if len(names) > limit else "")


class _Piece:
    """A run of consecutive rows: their times as read, and their values read only when asked for (a parquet row
    group's value columns a few at a time, so a large group never has to be decoded whole)."""

    def __init__(self, first_row: int, times: pd.Series, values: Callable[[int, int], np.ndarray]) -> None:
        self.first_row, self.times, self._values = first_row, times, values

    def values(self, lo: int, hi: int) -> np.ndarray:
        """(hi - lo, columns) float values of rows ``lo..hi`` (relative to the piece)."""
        return self._values(lo, hi)


#: values decoded at a time from a parquet row group (a block of columns × the group's rows)
PARQUET_BLOCK_VALUES = 8_000_000


def _chunks(path: Path, columns: list[str], time_column: str, start_utc: pd.Timestamp,
            end_utc: pd.Timestamp) -> Iterator[_Piece]:
    """Consecutive pieces of the file, in order.

    Parquet row groups whose time statistics lie wholly before ``start_utc`` or after ``end_utc`` (one day's
    margin for time zones and labels) are skipped; a CSV is read :data:`CHUNK_ROWS` rows at a time."""
    if file_kind(path) == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        margin = pd.Timedelta(days=1)
        t_index = pf.schema_arrow.get_field_index(time_column)
        row = 0
        for g in range(pf.num_row_groups):
            meta = pf.metadata.row_group(g)
            n = meta.num_rows
            stats = meta.column(t_index).statistics if t_index >= 0 else None
            if stats is not None and stats.has_min_max:
                lo, hi = _as_utc(stats.min), _as_utc(stats.max)
                if lo is not None and hi is not None and (hi < start_utc - margin or lo >= end_utc + margin):
                    row += n
                    continue
            times = pf.read_row_group(g, columns=[time_column]).column(0).to_pandas()
            yield _Piece(row, times, functools.partial(_parquet_values, pf, g, columns, n))
            row += n
        return
    try:
        reader = pd.read_csv(path, usecols=[time_column, *columns], chunksize=CHUNK_ROWS, dtype={time_column: str},
                             na_values=["", "NaN", "nan", "NA", "null"], keep_default_na=False)
        row = 0
        for chunk in reader:
            yield _Piece(row, chunk[time_column], functools.partial(_frame_values, chunk[columns]))
            row += len(chunk)
    except (ValueError, UnicodeDecodeError, OSError, pd.errors.ParserError) as exc:
        raise DataFileError(f"{path}: cannot read as CSV ({str(exc).splitlines()[0]})") from None


def _frame_values(block: pd.DataFrame, lo: int, hi: int) -> np.ndarray:
    return block.iloc[lo:hi].to_numpy(dtype=float, na_value=np.nan)


def _parquet_values(pf: Any, group: int, columns: list[str], n_rows: int, lo: int, hi: int) -> np.ndarray:
    """Rows ``lo..hi`` of ``columns`` in row group ``group``, decoding a block of columns at a time."""
    out = np.empty((hi - lo, len(columns)))
    per_block = max(1, PARQUET_BLOCK_VALUES // max(n_rows, 1))
    for c in range(0, len(columns), per_block):
        names = columns[c:c + per_block]
        table = pf.read_row_group(group, columns=names).slice(lo, hi - lo)
        for j, name in enumerate(names):
            out[:, c + j] = table.column(name).to_numpy(zero_copy_only=False).astype(float, copy=False)
        del table
    return out


def _as_utc(value: object) -> pd.Timestamp | None:
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        return None
    if ts is pd.NaT:
        return None
    # a naive statistic is local time of an unknown zone: a day's margin covers every offset
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _row(path: Path, row: int) -> str:
    """A data row as a user finds it: the CSV's line number (header = line 1), or the parquet row."""
    return f"line {row + 2}" if file_kind(path) == "csv" else f"row {row}"


_OFFSET = re.compile(r"(Z|[+-]\d\d:?\d\d)$")


def _parse_times(path: Path, raw: pd.Series, first_row: int, time_column: str, timezone: str) -> pd.DatetimeIndex:
    """UTC times of one chunk; naive ones localised in ``timezone`` (DST changes checked)."""
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        parsed = pd.DatetimeIndex(raw)
    else:
        text = raw.astype(str)
        # times written with their UTC offset (or Z) are read as such; the others as local times of ``timezone``
        with_offset = bool(len(text)) and _OFFSET.search(text.iloc[0].strip()) is not None
        try:
            parsed = pd.DatetimeIndex(pd.to_datetime(text, errors="coerce", utc=with_offset, format="ISO8601"))
        except (ValueError, TypeError):
            parsed = pd.DatetimeIndex(pd.to_datetime(text, errors="coerce", utc=with_offset, format="mixed"))
        bad = np.flatnonzero(parsed.isna())
        if len(bad):
            k = int(bad[0])
            raise DataFileError(f"{path}: column {time_column!r}, {_row(path, first_row + k)}: "
                                f"cannot read {str(raw.iloc[k])[:40]!r} as a time (e.g. 2016-06-21 00:00 or "
                                f"2016-06-21T00:00:00+01:00)")
    if parsed.tz is not None:
        return parsed.tz_convert("UTC")
    try:
        return parsed.tz_localize(timezone, ambiguous="raise", nonexistent="raise").tz_convert("UTC")
    except Exception:  # pytz/zoneinfo errors of an ambiguous or non-existent local time
        pass
    try:
        return parsed.tz_localize(timezone, ambiguous="infer", nonexistent="raise").tz_convert("UTC")
    except Exception:
        probe = parsed.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
        bad = np.flatnonzero(probe.isna())
        k = int(bad[0]) if len(bad) else 0
        raise DataFileError(f"{path}: column {time_column!r}, {_row(path, first_row + k)}: local time "
                            f"{parsed[k]} does not exist or is ambiguous in {timezone} (a daylight-saving change); "
                            f"write the times in UTC or with their UTC offset, or set timezone") from None


def _window(path: Path, columns: list[str], time_column: str, timezone: str, label: str, start: pd.Timestamp,
            end: pd.Timestamp) -> tuple[pd.DatetimeIndex, np.ndarray, float]:
    """The rows covering ``[start, end)`` (interval starts, UTC), their values and the file's step, s."""
    start_utc, end_utc = start.tz_convert("UTC"), end.tz_convert("UTC")
    kept_t: list[np.ndarray] = []
    kept_v: list[np.ndarray] = []
    step_ns: int | None = None
    deferred: list[tuple[np.ndarray, _Piece]] = []
    prev: tuple[int, int] | None = None  # (time ns, row) of the last row read
    first_t: int | None = None
    last_t: int | None = None
    for piece in _chunks(path, columns, time_column, start_utc, end_utc):
        if piece.times.empty:
            continue
        first_row = piece.first_row
        t = _parse_times(path, piece.times, first_row, time_column, timezone).asi8
        if prev is not None:
            t_all = np.concatenate([[prev[0]], t])
            row0 = prev[1]
        else:
            t_all, row0 = t, first_row
        diffs = np.diff(t_all)
        if len(diffs):
            bad = np.flatnonzero(diffs <= 0)
            if len(bad):
                k = int(bad[0])
                what = "repeats the time before it" if diffs[k] == 0 else "goes back in time"
                raise DataFileError(f"{path}: column {time_column!r}, {_row(path, row0 + k + 1)}: "
                                    f"{pd.Timestamp(t_all[k + 1], tz='UTC')} (UTC) {what}; times must increase")
            if step_ns is None:
                step_ns = int(diffs[0])
            bad = np.flatnonzero(diffs != step_ns)
            if len(bad):
                k = int(bad[0])
                raise DataFileError(f"{path}: column {time_column!r}, {_row(path, row0 + k + 1)}: "
                                    f"{_span(int(diffs[k]))} after the row before it, expected every "
                                    f"{_span(step_ns)} (a gap or an irregular step); fill or resample the file")
        first_t = int(t[0]) if first_t is None else first_t
        last_t = int(t[-1])
        prev = (int(t[-1]), first_row + len(t) - 1)
        if step_ns is None:  # a first piece of one row: its interval is known once the next row is read
            deferred.append((t, piece))
            continue
        for earlier_t, earlier in deferred:
            _take(path, columns, earlier_t, earlier, step_ns, label, start_utc, end_utc, kept_t, kept_v)
        deferred.clear()
        _take(path, columns, t, piece, step_ns, label, start_utc, end_utc, kept_t, kept_v)
    if first_t is None or last_t is None:
        raise DataFileError(f"{path}: no data rows")
    if step_ns is None:
        raise DataFileError(f"{path}: one data row only; the step between rows cannot be known")
    shift = -step_ns if label == "end" else 0
    covers_from = pd.Timestamp(first_t + shift, tz="UTC")
    covers_to = pd.Timestamp(last_t + shift + step_ns, tz="UTC")
    if covers_from > start_utc or covers_to < end_utc:
        tz = start.tz
        raise CoverageError(f"{path}: covers {covers_from.tz_convert(tz):%Y-%m-%d %H:%M} to "
                            f"{covers_to.tz_convert(tz):%Y-%m-%d %H:%M} ({tz}) only; the run needs "
                            f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} (whole calendar days of the clock)")
    times = pd.DatetimeIndex(np.concatenate(kept_t)).tz_localize("UTC")
    values = kept_v[0] if len(kept_v) == 1 else np.concatenate(kept_v)
    kept_v.clear()
    return times, values, step_ns / 1e9


def _take(path: Path, columns: list[str], t: np.ndarray, piece: _Piece, step_ns: int, label: str,
          start_utc: pd.Timestamp, end_utc: pd.Timestamp, kept_t: list[np.ndarray], kept_v: list[np.ndarray]) -> None:
    """Keep the rows of ``piece`` (times ``t``, UTC ns) whose interval touches ``[start_utc, end_utc)``, checked."""
    # the file's rows are interval starts once the label is applied
    starts = t - step_ns if label == "end" else t
    keep = (starts >= start_utc.value - step_ns) & (starts < end_utc.value)
    if not keep.any():
        return
    inside = np.flatnonzero(keep)  # consecutive: the times increase
    values = piece.values(int(inside[0]), int(inside[-1]) + 1)
    finite = np.isfinite(values)
    if not finite.all():
        r, c = np.argwhere(~finite)[0]
        row = piece.first_row + int(inside[0]) + int(r)
        raise DataFileError(f"{path}: column {columns[c]!r}, {_row(path, row)}: missing or non-finite "
                            f"value ({values[r, c]}); fill the gap in the file")
    kept_t.append(starts[keep])
    kept_v.append(values)


def _span(ns: int) -> str:
    """A duration in ns as people write it: "30 min", "15 s", "1 h 30 min"."""
    seconds = ns / 1e9
    if seconds != int(seconds):
        return f"{seconds:g} s"
    h, rest = divmod(int(seconds), 3600)
    m, sec = divmod(rest, 60)
    parts = [f"{h} h" if h else "", f"{m} min" if m else "", f"{sec} s" if sec else ""]
    return " ".join(p for p in parts if p) or "0 s"


def _resample(times: pd.DatetimeIndex, values: np.ndarray, step_f_s: float, grid: pd.DatetimeIndex, step_s: int,
              rule: str) -> np.ndarray:
    """Values held over ``[t, t + step_f)`` onto the clock's steps ``grid`` by ``rule``.

    Where the steps nest (a clock step inside one row, or whole rows inside a clock step) the mean is exact: the
    row's value, or the plain mean of the rows; otherwise it is the difference of the running integral."""
    t = times.asi8
    g = grid.tz_convert("UTC").asi8
    step_f = int(round(step_f_s * 1e9))
    step_c = step_s * 1_000_000_000
    pos = np.searchsorted(t, g, side="right") - 1
    if pos[-1] - pos[0] == len(pos) - 1 and np.array_equal(t[pos], g):  # the clock's own steps: the rows as read
        return values[pos[0]:pos[-1] + 1]
    if rule == "hold":
        return np.ascontiguousarray(values[pos])
    offset = int(g[0] - t[pos[0]])  # the first step's start within its row, ns
    if step_f % step_c == 0 and offset % step_c == 0:  # every clock step lies inside one row
        return np.ascontiguousarray(values[pos])
    if step_c % step_f == 0 and offset == 0:  # whole rows inside every clock step
        k = step_c // step_f
        rows = values[pos[0]:pos[0] + len(g) * k]
        return rows.reshape(len(g), k, values.shape[1]).mean(axis=1)
    # in general: differences of the running integral, on times relative to the window (seconds, exact enough)
    first = int(pos[0])
    t_rel = (t[first:] - g[0]) / 1e9
    vals = values[first:]
    knots = np.concatenate([t_rel, [t_rel[-1] + step_f / 1e9]])
    energy = np.concatenate([np.zeros((1, vals.shape[1])), np.cumsum(vals * (step_f / 1e9), axis=0)])
    edges = np.arange(len(g) + 1, dtype=float) * step_s
    at_edges = np.empty((len(edges), vals.shape[1]))
    for j in range(vals.shape[1]):
        at_edges[:, j] = np.interp(edges, knots, energy[:, j])
    return np.diff(at_edges, axis=0) / step_s


def regrid(values: np.ndarray, from_s: int, to_s: int) -> np.ndarray:
    """A series on steps of ``from_s`` from midnight (whole days; rows in time, any further axes) on steps of
    ``to_s``: the mean rule of :func:`read_series` (held within the old step, averaged over the new one), energy
    kept exactly. The same array when the steps are equal."""
    if from_s == to_s:
        return values
    values = np.asarray(values, float)
    n_new = len(values) * from_s // to_s
    epoch = pd.Timestamp("2000-01-01", tz="UTC")
    old = pd.date_range(epoch, periods=len(values), freq=pd.Timedelta(seconds=from_s))
    new = pd.date_range(epoch, periods=n_new, freq=pd.Timedelta(seconds=to_s))
    out = _resample(old, values.reshape(len(values), -1), from_s, new, to_s, "mean")
    return out.reshape(n_new, *values.shape[1:])


def fixed_offset(tz: str) -> bool:
    """Whether ``tz`` has no daylight saving (the simulation clock's zone must not)."""
    import zoneinfo
    from datetime import datetime

    try:
        zone = zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return datetime(2021, 1, 15, tzinfo=zone).utcoffset() == datetime(2021, 7, 15, tzinfo=zone).utcoffset()


def known_zone(tz: str) -> bool:
    """Whether ``tz`` is an IANA time zone name."""
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def fingerprint(path: str | Path, hash_limit_bytes: int = 2 * 1024 ** 3) -> dict[str, object]:
    """What identifies a data file a run read: its path, size, modification time (UTC) and SHA-256 (null above
    ``hash_limit_bytes``, whose reading would cost more than a run may want)."""
    import hashlib
    from datetime import datetime, timezone

    path = Path(path)
    stat = path.stat()
    digest = None
    if stat.st_size <= hash_limit_bytes:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        digest = h.hexdigest()
    return {"file": str(path), "bytes": stat.st_size,
            "modified_utc": datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat(timespec="seconds"),
            "sha256": digest}


def cache_clear() -> None:
    """Forget every file read (a test that rewrites a file in place within the same second)."""
    _read_cached.cache_clear()
    _window_cached.cache_clear()


__all__ = ["DataFileError", "POWER_UNITS", "PV_UNITS", "PRICE_UNITS", "SHAPE_UNITS", "WEATHER_COLUMNS", "file_kind",
           "header", "read_series", "read_at", "regrid", "fingerprint", "fixed_offset", "known_zone", "cache_clear", "CoverageError"]
