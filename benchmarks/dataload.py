"""Reading the user's own data: a year of one-minute load for 100 households from parquet.

    python benchmarks/dataload.py [--homes 100] [--days 366]

Writes the year (525,600 rows × 100 households, float64, as ``pandas.to_parquet`` writes it: one row group per
~1 M rows) to a temporary folder, then, each in a fresh subprocess so peak memory is its own:

- **dercosim, one week**: ``files.read_series`` for a week of the year, resampled to the 60-s clock — what a
  week's run holds;
- **dercosim, the year**: the same for the whole year (what a year's run holds);
- **baseline**: ``pandas.read_parquet`` of the whole file, then the week cut out of it (reading everything).

Prints seconds and peak resident memory (MB) of each, and the ratios of the week against the baseline.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

CHILD = r'''
import json, sys, time
import pandas as pd
from dercosim.timeseries import files
path, how, homes = sys.argv[1], sys.argv[2], int(sys.argv[3])
columns = [f"h{j:03d}" for j in range(homes)]
start = pd.Timestamp("2016-06-20", tz="UTC")
week = start + pd.Timedelta(days=7)
t0 = time.perf_counter()
if how == "week":
    out = files.read_series(path, columns, start=start, end=week, step_s=60, rule="mean", timezone="UTC")
elif how == "year":
    first = pd.Timestamp("2016-01-01", tz="UTC")
    out = files.read_series(path, columns, start=first, end=first + pd.Timedelta(days=int(sys.argv[4])), step_s=60,
                            rule="mean", timezone="UTC")
else:
    frame = pd.read_parquet(path)
    t = pd.to_datetime(frame["time"], utc=True)
    out = frame.loc[(t >= start) & (t < week), columns].to_numpy()
seconds = time.perf_counter() - t0
# VmHWM: this process's own peak (ru_maxrss would carry the parent's from before exec)
try:
    peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
except OSError:  # not Linux
    import resource
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_mb": peak_kb / 1024,
                  "shape": list(out.shape), "checksum": float(out.sum())}))
'''


def child(path: Path, how: str, homes: int, days: int) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), how, str(homes), str(days)], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", type=int, default=100)
    parser.add_argument("--days", type=int, default=366)
    args = parser.parse_args()
    times = pd.date_range("2016-01-01", periods=args.days * 1440, freq="1min", tz="UTC")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "year.parquet"
        t0 = time.perf_counter()
        frame = pd.DataFrame(rng.gamma(1.5, 0.3, size=(len(times), args.homes)),
                             columns=[f"h{j:03d}" for j in range(args.homes)])
        frame.insert(0, "time", times)
        frame.to_parquet(path, index=False)
        del frame
        print(f"{args.homes} households × {len(times):,} minutes ({args.homes * len(times) / 1e6:.1f} M values), "
              f"{path.stat().st_size / 1e6:.0f} MB of parquet written in {time.perf_counter() - t0:.1f} s")
        week = child(path, "week", args.homes, args.days)
        year = child(path, "year", args.homes, args.days)
        base = child(path, "baseline", args.homes, args.days)
    assert abs(week["checksum"] - base["checksum"]) <= 1e-9 * abs(base["checksum"]), (week, base)
    for label, r in (("dercosim, one week", week), ("dercosim, the year", year), ("baseline: whole file, cut", base)):
        print(f"  {label:27s} {r['seconds']:7.2f} s  peak {r['peak_mb']:7.0f} MB  -> {r['shape'][0]:,} steps")
    print(f"one week: {base['seconds'] / week['seconds']:.1f}x less time, {base['peak_mb'] / week['peak_mb']:.1f}x less "
          f"memory than reading the whole file")


if __name__ == "__main__":
    main()
