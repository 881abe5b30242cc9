"""The report of a long run: summary, market table and figures, streamed a window at a time vs read whole.

    python benchmarks/report.py [--days 7] [--run RUN_DIR] [--no-baseline]

Runs ``fleet_market_s4`` for ``--days`` days from 1 June 2016 (or takes a finished run folder, ``--run``), then
reports it twice, each in a fresh subprocess so its peak memory is its own, after resolving the run's inputs as
the run's own process holds them:

- **dercosim**: :class:`dercosim.analysis.results.Records` as a run uses it — the per-entity kinds a window of
  whole hours at a time (at most ``REPORT_CHUNK_ROWS`` rows);
- **baseline**: the same code with one window (every row of every kind held at once, as the report read it
  before it streamed).

Prints each one's seconds and peak resident memory above what the run's inputs hold, the summaries' largest
relative difference, and the ratios. ``--no-baseline``: the streamed report only (a month of 2,000 households
records ~260 M rows, far more than this machine's memory when read whole).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r'''
import json, sys, time
from pathlib import Path
import matplotlib
matplotlib.use("Agg")
from dercosim.analysis import plots, summary as summaries
from dercosim.analysis.results import Records
from dercosim.scenarios.load import load_scenario
from dercosim.scenarios.resolve import RunInputs
from dercosim.scenarios.world import strict_json

def peak_mb():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024

run_dir, chunk_rows, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
scenario = load_scenario(run_dir / "scenario.toml")
run = RunInputs.resolve(scenario)
before = peak_mb()
t0 = time.perf_counter()
records = Records(run_dir / "timeseries.parquet", chunk_rows)
tables = {}
summary = summaries.summarize(records, run, 0.0, 0.0, tables)
out.mkdir()
plots.write_tables(tables, out)
for name in ("households.csv", "batteries.csv"):
    (out / name).write_bytes((run_dir / name).read_bytes())
plots.plot_all(records, scenario, out, tables)
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "peak_mb": peak_mb() - before, "inputs_mb": before,
                  "windows": len(records.windows()), "rows": records.num_rows,
                  "summary": json.loads(strict_json(summary))}))
'''


def child(run_dir: Path, chunk_rows: int, out: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(run_dir), str(chunk_rows), str(out)],
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def numbers(tree: object, path: str = "") -> dict[str, float]:
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() if key not in ("wall_time_s", "run_wall_time_s", "ms_per_step")
                for k, v in numbers(sub, f"{path}.{key}").items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in numbers(sub, f"{path}[{i}]").items()}
    return {path: float(tree)} if isinstance(tree, (int, float)) and not isinstance(tree, bool) else {}


def main() -> None:
    from dercosim.analysis.results import REPORT_CHUNK_ROWS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--run", type=Path, help="a finished run folder to report (default: run s4 for --days)")
    parser.add_argument("--no-baseline", action="store_true", help="the streamed report only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        run_dir = args.run
        if run_dir is None:
            import dercosim

            run_dir = Path(folder) / "run"
            print(f"running fleet_market_s4 for {args.days} days ...", flush=True)
            dercosim.run("fleet_market_s4", until=f"{args.days}d", out=run_dir, plots=False)
        ours = child(run_dir, REPORT_CHUNK_ROWS, Path(folder) / "streamed")
        if args.no_baseline:
            print(f"{run_dir}: {ours['rows']:,} recorded rows in {ours['windows']} windows, reported in "
                  f"{ours['seconds']:.1f} s; the run's inputs hold {ours['inputs_mb']:.0f} MB, the report peaks "
                  f"{ours['peak_mb']:.0f} MB above them ({(ours['inputs_mb'] + ours['peak_mb']) / 1024:.2f} GB in all)")
            return
        base = child(run_dir, 10 ** 15, Path(folder) / "whole")
    a, b = numbers(ours["summary"]), numbers(base["summary"])
    assert a.keys() == b.keys()
    worst = max((abs(a[k] - b[k]) / max(abs(b[k]), 1e-300) for k in a if a[k] != b[k]), default=0.0)
    print(f"{run_dir}: {ours['rows']:,} recorded rows; the run's inputs hold {ours['inputs_mb']:.0f} MB")
    for label, r in ((f"dercosim, {ours['windows']} windows", ours), ("baseline: one window (whole read)", base)):
        print(f"  {label:36s} {r['seconds']:7.1f} s  peak {r['peak_mb']:7.0f} MB above the inputs")
    print(f"streamed: {base['peak_mb'] / max(ours['peak_mb'], 1):.1f}x less memory, "
          f"{base['seconds'] / ours['seconds']:.2f}x the speed of the whole read; "
          f"summaries agree to {worst:.1e} relative")


if __name__ == "__main__":
    main()
