"""Write the generated reference pages: docs/reference/scenario.md (from the pydantic schema and the built-in
controllers' parameter models) and docs/reference/cli.md (from the command line's own parser).

Run by ``make docs`` before ``mkdocs build``; ``tests/test_docs.py`` fails if the committed pages differ from
what this writes, so the reference cannot drift from the code.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def scenario_page() -> str:
    from dercosim.controllers.mpc import HouseholdMPCParams
    from dercosim.controllers.rule_based import RuleBasedParams
    from dercosim.scenarios.config import Scenario
    from dercosim.scenarios.reference import markdown

    text = ["# Scenario reference", "",
            "Every key of a scenario file: its type, bounds, default and meaning, generated from the schema "
            "(`scenarios/config.py`) by `docs/gen_reference.py`. A scenario is TOML; a section `[a.b]` here is a "
            "table in the file, `a.b[]` an array of tables (`[[a.b]]`). Units are in the key names (`_kw`, `_kwh`, "
            "`_s`, `_pu`, `_frac`) or in the meaning. `dercosim show SCENARIO` prints a scenario with every default "
            "filled in, and the key paths here are those of the error messages, of `run --set` and of "
            "`Scenario.set`.", ""]
    body = markdown(Scenario)
    text.append(body.replace("## top level", "## Top level"))
    text += ["# Built-in controllers' parameters (`[hems] params`)", "",
             "`[hems] controller = \"rule_based\"` and `\"mpc\"` take these keys under `[hems.params]`; a "
             "controller of your own declares its own (see [Your own controller](../guide/controller.md)).", ""]
    for name, model in (("rule_based", RuleBasedParams), ("mpc", HouseholdMPCParams)):
        table = markdown(model, prefix=f"hems.params ({name})")
        text.append(table.replace(f"## `[hems.params ({name})]`", f"## `{name}`"))
    return "\n".join(text).rstrip("\n") + "\n"


def cli_page() -> str:
    from dercosim.cli import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps at the terminal's width: one width for every machine
    parser = build_parser()
    parser.prog = "dercosim"
    text = ["# Command-line reference", "",
            "Generated from the command line's own parser by `docs/gen_reference.py`: what `dercosim --help` and "
            "`dercosim COMMAND --help` print.", "", "```text", parser.format_help().rstrip(), "```", ""]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        text += [f"## `dercosim {name}`", "", "```text", command.format_help().rstrip(), "```", ""]
    return "\n".join(text).rstrip("\n") + "\n"


PAGES = {"reference/scenario.md": scenario_page, "reference/cli.md": cli_page}


def main() -> int:
    check = "--check" in sys.argv
    stale = []
    for rel, make in PAGES.items():
        path = HERE / rel
        text = make()
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(rel)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if stale:
        print(f"stale: {', '.join(stale)} (run: python docs/gen_reference.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
