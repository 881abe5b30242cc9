"""``dercosim sweep``: the cross product of scenario values (and seeds) on dask.distributed, one world per task.

    dercosim sweep SCENARIO --set hems.params.period_s=60,120 --set contract.interval_s=60,300,900
                   [--seeds 3] [--workers N | --scheduler tcp://HOST:8786] [--until 6h] [--resume DIR]

Each ``--set KEY=V1,V2,...`` names a key path of the scenario file (as in
its error messages: ``households.groups[0].per_bus``) and the values to try;
each value is read as TOML (``60``, ``0.5``, ``true``, ``"text"``; a bare
word is a string). ``--seeds N`` runs each combination with the scenario's
seed and the N − 1 following ones; ``--set seed=1,2,3`` sweeps given seeds
(with ``--seeds N``, each of them and the N − 1 following). At most
:data:`MAX_CASES` cases per sweep.

Every case is validated before anything runs. A case whose values are
invalid is recorded as failed with the error (file, key path, what was
expected) and the others go on; if no case is valid, nothing is written.
Cases run on a dask.distributed cluster: a LocalCluster with one
single-threaded worker process per core by default, or an existing
scheduler by address. A case that raises is recorded with its error and the
others continue. Results, in the sweep folder:

- ``cases/<case>/``: each case's run folder (parquet, summary.json, plots);
- ``sweep.parquet``: one row per case (parameters, seed, status, error,
  the summary's headline figures, wall time), rewritten after every finished
  case, so a kill leaves it readable;
- ``sweep.md``: the same as a Markdown table; ``sweep_<parameter>.png``: each
  headline figure against each swept parameter (mean over the other cases,
  bars from the smallest to the largest).

``--resume DIR`` re-uses a sweep folder: a case finished there is not run
again if its scenario is the same (every key, the run length included,
compared by a hash of the validated scenario in ``sweep.parquet``); any other
case runs again, its folder from the earlier attempt replaced.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import math
import shutil
import os
import re
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from dercosim.scenarios.config import Scenario, ScenarioError, format_validation_error
from dercosim.scenarios.load import check_scenario

#: most cases one sweep plans (each is a whole run)
MAX_CASES = 10_000
#: headline figures of a run's summary: column name -> key path in summary.json
HEADLINE = {
    "bill_total": ("households", "bill_total"),
    "self_sufficiency": ("households", "self_sufficiency"),
    "v_min_pu": ("voltage", "min_pu"),
    "minutes_outside_limits": ("voltage", "minutes_outside_limits"),
    "line_losses_kwh": ("energy_kwh", "line_losses"),
    "powerflow_failures": ("powerflow", "failures"),
    "hems_faults": ("hems", "faults"),
    "wholesale_revenue": ("market", "wholesale_revenue"),
    "imbalance_cost": ("market", "imbalance_cost"),
    "mean_abs_deviation_of_committed": ("market", "mean_abs_deviation_of_committed"),
    "self_consumed_share": ("market", "self_consumed_share"),
    "minutes_not_exporting_share": ("market", "minutes_not_exporting_share"),
    "fleet_supplied_share": ("market", "fleet_supplied_share"),
    "contract_reports_late": ("contract", "reports_late"),
    "contract_reports_lost": ("contract", "reports_lost"),
    "contract_replies_lost": ("contract", "replies_lost"),
}

_SEGMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)$")


def parse_value(raw: str) -> Any:
    """A value as TOML would read it (``60`` → int, ``true`` → bool, ``"x"`` → str); a bare word is a string."""
    try:
        return tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return raw.strip()


def parse_set(text: str) -> tuple[str, list[Any]]:
    """``KEY=V1,V2`` → (key path, values). Commas inside brackets or quotes do not split."""
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not key or not values.strip():
        raise ScenarioError(f"--set {text!r}: expected KEY=VALUE[,VALUE...], e.g. contract.interval_s=60,300")
    for part in key.split("."):
        if not _SEGMENT.match(part):
            raise ScenarioError(f"--set {text!r}: {part!r} is not a key (letters, digits, _ and [index])")
    items, depth, quote, cur = [], 0, None, ""
    for ch in values:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        cur += ch
    items.append(cur)
    return key, [parse_value(v) for v in items]


def set_path(data: dict, key: str, value: Any) -> dict:
    """A copy of ``data`` with ``key`` (``a.b[0].c``) set to ``value``; missing tables are created."""
    out = copy.deepcopy(data)
    node: Any = out
    parts = key.split(".")
    for k, part in enumerate(parts):
        match = _SEGMENT.match(part)
        if match is None:
            raise ValueError(f"{key}: {part!r} is not a key name")
        name, idx = match.groups()
        indices = [int(i) for i in re.findall(r"\[(\d+)\]", idx)]
        last = k == len(parts) - 1
        if last and not indices:
            node[name] = value
            break
        if not indices:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise ScenarioError(f"--set {key}: {name} is not a table")
            continue
        seq = node.get(name)
        for j, i in enumerate(indices):
            if not isinstance(seq, list) or i >= len(seq):
                raise ScenarioError(f"--set {key}: {name}{idx} does not exist in the scenario")
            if last and j == len(indices) - 1:
                seq[i] = value
                return out
            if j < len(indices) - 1:
                seq = seq[i]
        node = seq[indices[-1]]
    return out


@dataclass
class Case:
    case: str  #: folder name, unique in the sweep
    params: dict[str, Any]  #: key path -> value
    seed: int
    scenario_json: str | None  #: the validated scenario with the values set, as JSON (None if invalid)
    error: str | None  #: why the case is invalid

    @property
    def scenario_sha(self) -> str | None:
        """Hash of the validated scenario: a resumed sweep re-uses a case's result only for the same scenario."""
        return None if self.scenario_json is None else hashlib.sha256(self.scenario_json.encode()).hexdigest()[:16]


def _label(params: dict[str, Any], seed: int) -> str:
    parts = [f"{k.split('.')[-1]}={v}" for k, v in params.items()] + [f"seed={seed}"]
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", "_".join(parts))


def plan_cases(path: Path, sets: list[tuple[str, list[Any]]], seeds: int = 1,
               until_s: int | None = None) -> list[Case]:
    """Every combination of the values and seeds, each validated (the invalid ones carry their error)."""
    from dercosim.scenarios.world import with_duration

    path = Path(path)
    base = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    if seeds < 1:
        raise ScenarioError(f"--seeds must be at least 1, got {seeds}")
    keys = [k for k, _ in sets]
    if len(set(keys)) != len(keys):
        raise ScenarioError(f"--set: a key is given twice ({', '.join(keys)})")
    n_cases = math.prod(len(v) for _, v in sets) * seeds
    if n_cases > MAX_CASES:
        raise ScenarioError(f"--set/--seeds: {n_cases:,} cases; a sweep runs at most {MAX_CASES:,} (each is a run)")
    seed0 = int(base.get("seed", 0)) if isinstance(base.get("seed", 0), int) else 0
    swept_seeds = dict(sets).get("seed")
    if swept_seeds is not None and not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                           for v in swept_seeds):
        raise ScenarioError(f"--set seed: expected whole numbers >= 0, got {swept_seeds}")
    keys = [k for k in keys if k != "seed"]  # a swept seed is the case's seed, its own column
    cases, seen = [], set()
    for combo in itertools.product(*[v for k, v in sets if k != "seed"], *([swept_seeds] if swept_seeds else [])):
        params = dict(zip(keys, combo))
        first = combo[-1] if swept_seeds else seed0
        for s in range(seeds):
            seed = first + s
            label = _label(params, seed)
            while label in seen:
                label += "_"
            seen.add(label)
            try:
                data = base
                for k, v in params.items():
                    data = set_path(data, k, v)
                data = set_path(data, "seed", seed)
                scenario = validate_data(data, path)
                if until_s is not None:
                    scenario = with_duration(scenario, until_s)
                cases.append(Case(label, params, seed, scenario.model_dump_json(), None))
            except ScenarioError as exc:
                cases.append(Case(label, params, seed, None, str(exc)))
    return cases


def validate_data(data: dict, path: Path) -> Scenario:
    """A scenario's TOML data (as read from ``path``, then changed), validated as :func:`load_scenario` does for a
    file: strict schema, then the checks that need more; errors name ``path`` and the key path."""
    from pydantic import ValidationError

    try:
        scenario = Scenario.model_validate(data, strict=True, context={"source_dir": path.resolve().parent})
    except ValidationError as exc:
        raise ScenarioError(format_validation_error(path, exc)) from None
    scenario._source_dir = path.resolve().parent
    check_scenario(scenario, path)
    return scenario


def _run_case(scenario_json: str, source_dir: str, out_dir: str) -> dict[str, Any]:
    """One case in a worker: run it, return its headline figures (or the error). Never raises."""
    started = time.perf_counter()
    try:
        from dercosim.scenarios.world import run_scenario

        scenario = Scenario.model_validate_json(scenario_json)
        scenario._source_dir = Path(source_dir)
        result = run_scenario(scenario, Path(out_dir), progress=False)
        row: dict[str, Any] = {"status": "ok", "error": None}
        for col, (section, key) in HEADLINE.items():
            value = result.summary.get(section, {}).get(key) if isinstance(result.summary.get(section), dict) else None
            row[col] = float(value) if isinstance(value, (int, float)) else None
    except BaseException as exc:  # noqa: BLE001 - a failing case is recorded, the others go on
        row = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    row["wall_s"] = round(time.perf_counter() - started, 3)
    return row


def _client(workers: int | None, scheduler: str | None):  # noqa: ANN202 - (client, cluster or None)
    from dask.distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler), None
    cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=logging.CRITICAL)
    return Client(cluster), cluster


def run_sweep(path: Path, cases: list[Case], out_dir: Path, workers: int | None = None,
              scheduler: str | None = None, log: Callable[[str], None] = print) -> pd.DataFrame:
    """Run the valid cases not yet finished in ``out_dir`` and write the results (see the module doc)."""
    from dask.distributed import as_completed

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "cases").mkdir(exist_ok=True)
    keys = list(cases[0].params) if cases else []
    done = _finished(out_dir)
    rows: dict[str, dict[str, Any]] = {}
    todo = []
    for c in cases:
        base = {"case": c.case, **{k: c.params[k] for k in keys}, "seed": c.seed}
        if c.error is not None:
            rows[c.case] = {**base, "status": "invalid", "error": c.error}
        elif c.case in done and done[c.case].get("scenario_sha") == c.scenario_sha:
            rows[c.case] = done[c.case]
        else:
            todo.append(c)
            # an earlier attempt (another scenario, or killed while it ran) left its folder: replaced
            shutil.rmtree(out_dir / "cases" / c.case, ignore_errors=True)
    log(f"dercosim: sweep of {path}: {len(cases)} cases, {len(todo)} to run, "
        f"{len(cases) - len(todo) - sum(c.error is not None for c in cases)} already finished, "
        f"{sum(c.error is not None for c in cases)} invalid -> {out_dir}")
    for c in cases:
        if c.error is not None:
            log(f"  {c.case}: invalid: {c.error.splitlines()[0]}")
    _write(out_dir, cases, rows, keys)
    if todo:
        client, cluster = _client(workers, scheduler)
        try:
            futures = {client.submit(_run_case, c.scenario_json, str(path.resolve().parent), str(out_dir / "cases" / c.case),
                                     key=f"dercosim-{out_dir.name}-{c.case}", pure=False): c for c in todo}
            for k, fut in enumerate(as_completed(futures), 1):
                c = futures[fut]
                try:
                    result = fut.result()
                except Exception as exc:  # noqa: BLE001 - a worker that died: the case failed, the rest go on
                    result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
                rows[c.case] = {"case": c.case, **{key: c.params[key] for key in keys}, "seed": c.seed,
                                "scenario_sha": c.scenario_sha, **result}
                _write(out_dir, cases, rows, keys)
                log(f"[{k}/{len(todo)}] {c.case}: {result['status']}"
                    + (f" ({result.get('error')})" if result["status"] != "ok" else f" in {result['wall_s']:.1f} s"))
        finally:
            # the workers' connections closing at shutdown are not errors of the sweep: dask logs them as
            # ERROR with tracebacks (CommClosedError) after the results are written
            quiet = [logging.getLogger(n) for n in ("distributed", "tornado", "asyncio")]
            levels = [lg.level for lg in quiet]
            for lg in quiet:
                lg.setLevel(logging.CRITICAL)
            try:
                client.close()
                if cluster is not None:
                    cluster.close()
            finally:
                for lg, level in zip(quiet, levels):
                    lg.setLevel(level)
    table = _write(out_dir, cases, rows, keys)
    plot_sweep(table, keys, out_dir, currency=_currency(cases))
    return table


def _currency(cases: list[Case]) -> str:
    """The tariff currency of the sweep's cases ("" if they differ or none is valid)."""
    found = {json.loads(c.scenario_json).get("tariff", {}).get("currency") for c in cases if c.scenario_json}
    return found.pop() if len(found) == 1 and None not in found else ""


def _finished(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Rows of cases that finished (status ok) in an earlier sweep into ``out_dir``."""
    f = out_dir / "sweep.parquet"
    if not f.exists():
        return {}
    old = pd.read_parquet(f)
    return {r["case"]: r for r in old.to_dict("records") if r.get("status") == "ok"}


def _write(out_dir: Path, cases: list[Case], rows: dict[str, dict[str, Any]], keys: list[str]) -> pd.DataFrame:
    """sweep.parquet and sweep.md, in case order (cases not finished yet: status "pending")."""
    records = []
    for c in cases:
        records.append(rows.get(c.case, {"case": c.case, **{k: c.params[k] for k in keys}, "seed": c.seed,
                                         "status": "pending"}))
    table = pd.DataFrame(records)
    for col in ("status", "error", "wall_s", *HEADLINE, "scenario_sha"):
        if col not in table:
            table[col] = None
    table = table[["case", *keys, "seed", "status", "error", "wall_s", *HEADLINE, "scenario_sha"]]
    for k in keys:  # a parameter column of mixed types (e.g. 60 and "x") is stored as text
        if table[k].map(type).nunique() > 1:
            table[k] = table[k].astype(str)
    tmp = out_dir / "sweep.parquet.tmp"
    table.to_parquet(tmp, index=False)
    os.replace(tmp, out_dir / "sweep.parquet")  # atomic: a kill leaves the previous or the new file
    shown = table.drop(columns="scenario_sha").dropna(axis=1, how="all")
    (out_dir / "sweep.md").write_text(_markdown(shown), encoding="utf-8")
    return table


def _markdown(df: pd.DataFrame) -> str:
    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return ""
        if isinstance(v, float):
            return f"{v:.6g}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


#: headline figures in money (their axis says the currency) and in shares (shown in %)
MONEY = {"bill_total", "wholesale_revenue", "imbalance_cost"}
SHARES = {"self_sufficiency", "mean_abs_deviation_of_committed", "self_consumed_share", "minutes_not_exporting_share",
          "fleet_supplied_share"}


def plot_sweep(table: pd.DataFrame, keys: list[str], out_dir: Path, currency: str = "") -> list[Path]:
    """Per swept parameter: each headline figure against its values (mean over the other cases, min–max bars).
    Plain tick labels (no offset: 2793.1 reads as 2793.1, not as 0.1 + 2.793e3); money in ``currency``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = table[table.status == "ok"]
    figures = [c for c in HEADLINE if c in ok and ok[c].notna().any() and ok[c].nunique() > 1]
    paths: list[Path] = []
    if ok.empty or not figures:
        return paths
    for k in keys:
        groups = ok.groupby(k, sort=True)
        x = [str(v) for v in groups.groups]
        fig, axes = plt.subplots(1, len(figures), figsize=(3.4 * len(figures), 3.2), squeeze=False)
        for ax, col in zip(axes[0], figures):
            stats = groups[col].agg(["mean", "min", "max"]).astype(float) * (100.0 if col in SHARES else 1.0)
            mean = stats["mean"].to_numpy()
            ax.errorbar(x, mean, yerr=[mean - stats["min"].to_numpy(), stats["max"].to_numpy() - mean],
                        marker="o", capsize=3)
            unit = f" ({currency})" if col in MONEY and currency else " (%)" if col in SHARES else ""
            ax.set_title(col + unit, fontsize=9)
            ax.ticklabel_format(axis="y", useOffset=False, style="plain")
            ax.set_xlabel(k.split(".")[-1])
            ax.grid(alpha=0.3)
        fig.suptitle(f"sweep over {k}")
        fig.tight_layout()
        p = out_dir / f"sweep_{re.sub(r'[^A-Za-z0-9_.-]', '_', k)}.png"
        fig.savefig(p, dpi=100)
        plt.close(fig)
        paths.append(p)
    return paths
