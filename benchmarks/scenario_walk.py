"""Where the scenario goes: the files a run's set-up enters with the scenario (or the run resolved from it) in hand.

Every call into dercosim's own code that receives the :class:`~dercosim.scenarios.config.Scenario` or the
:class:`~dercosim.scenarios.resolve.RunInputs` as an argument is one step of the walk; consecutive steps in the
same file are one stay. Printed: the stays, the distinct files, the returns to a file already left, and the
files entered more than once. Measured on the world's set-up and summary of a short run (the loop itself only
steps the simulators).

    python benchmarks/scenario_walk.py [SCENARIO] [--until 2min]
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path
from typing import Any


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", nargs="?", default="fleet_market_s4")
    ap.add_argument("--until", default="2min")
    ap.add_argument("--calls", action="store_true", help="print every call of the walk")
    args = ap.parse_args()

    from dercosim.scenarios.config import parse_duration_s
    from dercosim.scenarios.world import run_scenario, with_duration

    try:
        from dercosim.api import load
    except ImportError:  # the layout before dercosim.api: to measure the old walk the same way
        from dercosim.scenarios.cli import resolve_path  # type: ignore[import-not-found]
        from dercosim.scenarios.config import load_scenario  # type: ignore[attr-defined]

        def load(name: str) -> Any:
            return load_scenario(resolve_path(name))

    scenario = with_duration(load(args.scenario), parse_duration_s(args.until))
    import dercosim.scenarios.world as world_module

    root = str(Path(world_module.__file__).resolve().parents[1])
    tracked_types: tuple[type, ...]
    try:
        from dercosim.scenarios.resolve import RunInputs
        tracked_types = (type(scenario), RunInputs)
    except ImportError:  # an older layout
        tracked_types = (type(scenario),)
    walk: list[str] = []
    calls: list[str] = []  #: file:function of each step

    def profile(frame, event, arg):  # noqa: ANN001, ANN202 - sys.setprofile's signature
        if event != "call":
            return
        path = str(Path(frame.f_code.co_filename).resolve())
        if not path.startswith(root) or "site-packages" in path.removeprefix(root):
            return
        code = frame.f_code
        # the arguments, not the object's own methods (``self``: the scenario or the run reading itself)
        names = [n for n in code.co_varnames[:code.co_argcount + code.co_kwonlyargcount] if n != "self"]
        if any(isinstance(frame.f_locals.get(n), tracked_types) for n in names):
            walk.append(path.removeprefix(root + "/"))
            calls.append(f"{walk[-1]}:{code.co_name}")

    with tempfile.TemporaryDirectory() as tmp:
        sys.setprofile(profile)
        try:
            run_scenario(scenario, Path(tmp) / "run", progress=False)
        finally:
            sys.setprofile(None)
    stays = [f for k, f in enumerate(walk) if k == 0 or walk[k - 1] != f]
    seen: set[str] = set()
    returns = 0
    for f in stays:
        returns += f in seen
        seen.add(f)
    counts = collections.Counter(stays)
    print(f"{args.scenario} --until {args.until}: {len(stays)} stays in {len(seen)} files, "
          f"{returns} returns to a file already left")
    for f, n in counts.most_common():
        print(f"  {n:3d} x {f}")
    if args.calls:
        print("the walk, call by call:")
        for c in calls:
            print(f"  {c}")


if __name__ == "__main__":
    main()
