"""The smart contract per round: the Python rules against the same rules on an EVM, gas and wall time.

    python benchmarks/contract.py [--households 70] [--rounds 6]

For each fork (Istanbul, Prague) and submission mode (per_household: every
household sends its own transaction, then the aggregator computes — the
pattern of Couraud et al. 2022; batched: one transaction per round), a fresh
in-process py-evm chain, the households registered, then ``--rounds`` rounds of
one market interval with random reports (the first round writes fresh storage
slots, later ones overwrite them). The Python contract runs the same rounds
in the same process. Prints the median wall time per round, gas per round and
per household transaction, beside the paper's 105,957 gas per household
transaction. Goal: the EVM adds at most 1 s of wall time per simulated 5-min
round in batched mode.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dercosim.markets.contract import SmartContract
from dercosim.markets.contract_evm import EVMContract

PAPER_GAS = 105_957


def rounds(contract, names: list[str], n_rounds: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    walls = []
    for _ in range(n_rounds):
        reports = [(name, float(rng.uniform(0, 1)), float(rng.normal(0, 0.3)), float(rng.normal(0, 0.5)))
                   for name in names]
        started = time.perf_counter()
        for report in reports:
            contract.update(*report)
        contract.compute()
        walls.append(time.perf_counter() - started)
    return walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--households", type=int, default=70)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    names = [f"hh_{i}" for i in range(args.households)]
    py = SmartContract()
    for name in names:
        py.register(name)
    py.set_series([0.5], [5.0], [1.0])
    py.start_interval(0)
    py_wall = float(np.median(rounds(py, names, args.rounds, seed=1)))
    print(f"{args.households} households, {args.rounds} rounds in one interval; medians per round "
          f"(first round excluded for gas: it writes fresh slots)")
    print(f"python rules                     wall {py_wall * 1e3:9.2f} ms")
    for fork in ("istanbul", "prague"):
        for mode in ("per_household", "batched"):
            started = time.perf_counter()
            evm = EVMContract(names, fork=fork, mode=mode)
            for name in names:
                evm.register(name)
            evm.set_series([0.5], [5.0], [1.0])
            evm.start_interval(0)
            setup_s = time.perf_counter() - started
            walls = rounds(evm, names, args.rounds, seed=1)
            gas = evm.gas.round_gas[1:]
            per_tx = evm.gas.household_tx_gas[args.households:] if mode == "per_household" else []
            first = evm.gas.household_tx_gas[:args.households]
            tx = (f"per household tx {int(np.median(per_tx)):>7,} gas (first report, fresh slots: "
                  f"{int(np.median(first)):,})" if per_tx else "no household tx")
            print(f"evm {fork:8s} {mode:13s}   wall {np.median(walls) * 1e3:9.2f} ms "
                  f"({np.median(walls) / py_wall:8.0f}x python)   round {int(np.median(gas)):>10,} gas   {tx}   "
                  f"(set-up {setup_s:.1f} s)")
    print(f"paper (Couraud et al. 2022, Ganache): {PAPER_GAS:,} gas per household transaction; a round of "
          f"{args.households} such transactions is {PAPER_GAS * args.households:,} gas")


if __name__ == "__main__":
    main()
