"""The scenarios bundled with dercosim, and finding a scenario by path or by a bundled scenario's name."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from dercosim.scenarios.config import ScenarioError


def bundled_scenarios() -> dict[str, Path]:
    """Bundled scenario files by stem."""
    folder = resources.files("dercosim.scenarios")
    return {Path(str(f)).stem: Path(str(f)) for f in folder.iterdir() if str(f).endswith(".toml")}


def resolve_path(arg: str) -> Path:
    path = Path(arg)
    try:
        exists = path.exists()
    except OSError as exc:  # e.g. a file name too long for the file system
        raise ScenarioError(f"{arg[:200]}{'…' if len(arg) > 200 else ''}: cannot use this path "
                            f"({exc.strerror or exc})") from None
    if exists or path.suffix == ".toml":
        return path
    bundled = bundled_scenarios()
    if arg in bundled:
        return bundled[arg]
    raise ScenarioError(f"{arg}: no such file, and no bundled scenario of that name "
                        f"(bundled: {', '.join(sorted(bundled))})")
