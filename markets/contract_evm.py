"""The smart contract as EVM bytecode: ``contract.vy`` compiled with Vyper, run on an in-process py-evm chain.

:class:`EVMContract` has the interface of
:class:`dercosim.markets.contract.SmartContract` (register, set_series,
start_interval, update, compute → replies), and every call is a real
transaction on an Ethereum chain held in this process (``web3`` +
``eth-tester``'s py-evm backend, no network): the aggregator and every
household have an account; gas is what the chosen fork charges.

Fixed point on the chain: SoC, SoC target and weights in ppm (10⁶ = 1),
energies in mWh (10⁻⁶ kWh), signed (+ = export). A float is rounded to the
nearest unit when sent (:func:`to_ppm`, :func:`to_mwh`); weights come back
floored to a ppm, so they match the Python rules on the same rounded inputs
within 10⁻⁶ and RE exactly.

Submission modes:

- ``per_household``: each household sends its own ``update`` transaction,
  then the aggregator sends ``compute`` — the pattern of Couraud et al. 2022.
  A reverted update (an unregistered household, a SoC outside 0..1) raises
  :class:`ContractError`; the caller treats that report as lost.
- ``batched``: the aggregator relays the round's reports and computes in one
  ``update_and_compute`` transaction; an invalid report is skipped on chain
  and logged (``Rejected``), counted in :attr:`EVMContract.rejected`.

Forks: ``"istanbul"`` (the gas rules of the paper's era; Vyper's oldest
target, London, is compiled — the contract uses no opcode Istanbul lacks, and
deployment on Istanbul would fail if it did) and ``"prague"`` (today's
rules: cold/warm storage access, EIP-1559 transactions).

The bytecode is compiled at first use and cached under
``$DERCOSIM_CACHE`` (default ``~/.cache/dercosim``)``/evm/``, keyed by the
source's hash, the Vyper version and the EVM target.

References
----------
- Couraud et al. 2022: B. Couraud, V. Robu, D. Flynn, M. Andoni, S. Norbu and H. Quinard,
    "Real-Time Control of Distributed Batteries with Blockchain-Enabled Market Export
    Commitments," IEEE Transactions on Sustainable Energy, 2022 (section III-B; 105,957 gas per
    household transaction on their private chain).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dercosim.markets.contract import W_EXPORT_RULES, ContractError, Reply

SOURCE = Path(__file__).with_name("contract.vy")
PPM = 1_000_000  #: SoC, SoC target and weights: parts per million
MWH_PER_KWH = 1_000_000  #: energies on chain in mWh (1e-6 kWh)
FORKS = ("istanbul", "prague")
MODES = ("per_household", "batched")
#: the EVM version Vyper compiles for each fork (Vyper's oldest target is London; see the module doc)
EVM_TARGET = {"istanbul": "london", "prague": "prague"}
GAS_LIMIT_TX = 30_000_000
MAX_MEMBERS = 1024  #: as ``MAX_MEMBERS`` in contract.vy (Vyper sizes memory arrays by their bound, which costs gas)


def to_ppm(frac: float) -> int:
    """A fraction 0..1 as an integer in ppm (rounded to nearest)."""
    return int(round(float(frac) * PPM))


def to_mwh(kwh: float) -> int:
    """kWh as an integer number of mWh (rounded to nearest)."""
    return int(round(float(kwh) * MWH_PER_KWH))


def cache_dir() -> Path:
    return Path(os.environ.get("DERCOSIM_CACHE", Path.home() / ".cache" / "dercosim")) / "evm"


def compile_contract(fork: str) -> dict[str, Any]:
    """ABI and bytecode of ``contract.vy`` for ``fork``: from the cache, or compiled (and cached) now."""
    import vyper
    from vyper.compiler import compile_code
    from vyper.compiler.settings import Settings

    if fork not in FORKS:
        raise ValueError(f"evm_fork must be one of {FORKS}, got {fork!r}")
    source = SOURCE.read_text(encoding="utf-8")
    target = EVM_TARGET[fork]
    key = hashlib.sha256(f"{source}\0{vyper.__version__}\0{target}".encode()).hexdigest()[:24]
    path = cache_dir() / f"contract-{key}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    out = compile_code(source, output_formats=["abi", "bytecode"], settings=Settings(evm_version=target))
    artefact = {"abi": out["abi"], "bytecode": out["bytecode"], "vyper": vyper.__version__, "evm_version": target}
    try:  # a cache that cannot be written only costs the next run a compile
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(artefact), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass
    return artefact


@dataclass
class GasLog:
    """Gas and wall time of what the contract did."""

    deploy_gas: int = 0
    register_gas: list[int] = field(default_factory=list)
    household_tx_gas: list[int] = field(default_factory=list)  #: per_household: every update transaction
    round_gas: list[int] = field(default_factory=list)  #: every round: its updates + compute (or the batch)
    round_wall_s: list[float] = field(default_factory=list)  #: EVM wall time of every round


class EVMContract:
    """The coordination contract on an in-process EVM chain (see the module doc)."""

    def __init__(self, households: Sequence[str], fork: str = "prague", mode: str = "batched",
                 w_export_rule: str = "or", anticipate_meters: bool = True,
                 target_without_commitment: bool = False) -> None:
        if mode not in MODES:
            raise ValueError(f"evm mode must be one of {MODES}, got {mode!r}")
        from eth.vm import forks
        from eth_tester import EthereumTester, PyEVMBackend
        from web3 import EthereumTesterProvider, Web3

        artefact = compile_contract(fork)
        self.fork, self.mode = fork, mode
        self.names = list(households)
        if len(set(self.names)) != len(self.names):
            raise ValueError("household names must be unique")
        if len(self.names) > MAX_MEMBERS:
            raise ValueError(f"the EVM contract holds at most {MAX_MEMBERS} households, got {len(self.names)}")
        vm = {"istanbul": forks.IstanbulVM, "prague": forks.PragueVM}[fork]
        state = PyEVMBackend.generate_genesis_state(num_accounts=len(self.names) + 1)
        backend = PyEVMBackend(genesis_state=state, vm_configuration=((0, vm),))
        self.w3 = Web3(EthereumTesterProvider(EthereumTester(backend)))
        accounts = self.w3.eth.accounts
        self.aggregator = accounts[0]
        self.account: dict[str, Any] = dict(zip(self.names, accounts[1:]))
        self.index: dict[str, int] = {}  #: the member's index on chain, in the order they registered
        self.registered: list[str] = []  #: the same, by index
        self.storage: dict[str, bool] = {}
        # Istanbul predates EIP-1559: legacy transactions with a gas price
        self._tx = {"gas": GAS_LIMIT_TX, **({"gasPrice": 10 ** 9} if fork == "istanbul" else {})}
        self.gas = GasLog()
        factory = self.w3.eth.contract(abi=artefact["abi"], bytecode=artefact["bytecode"])
        if w_export_rule not in W_EXPORT_RULES:
            raise ValueError(f"w_export_rule must be one of {W_EXPORT_RULES}, got {w_export_rule!r}")
        receipt = self._send(factory.constructor(w_export_rule == "or", bool(anticipate_meters),
                                                 bool(target_without_commitment)), self.aggregator)
        if receipt.contractAddress is None:
            raise RuntimeError(f"deploying the contract on {fork} failed")
        self.gas.deploy_gas = receipt.gasUsed
        self.c = self.w3.eth.contract(address=receipt.contractAddress, abi=artefact["abi"])
        self._pending: list[tuple[int, int, int, int]] = []
        self._round_gas = 0
        self._round_wall_s = 0.0
        self.rejected = 0  #: batched: reports the contract skipped (logged Rejected)
        self.failed_rounds = 0  #: rounds whose transaction reverted (counted by the caller, which falls back)

    # ------------------------------------------------------------ transactions

    def _send(self, call: Any, sender: str) -> Any:
        """Send a transaction and wait for its receipt; a revert raises :class:`ContractError`."""
        from web3.exceptions import ContractLogicError

        try:
            tx_hash = call.transact({"from": sender, **self._tx})
        except ContractLogicError as exc:
            raise ContractError(f"transaction reverted: {exc}") from None
        receipt = self.w3.eth.get_transaction_receipt(tx_hash)
        if receipt["status"] != 1:
            raise ContractError("transaction reverted")
        return receipt

    def _round_tx(self, call: Any, sender: str) -> Any:
        started = time.perf_counter()
        try:
            receipt = self._send(call, sender)
        finally:
            self._round_wall_s += time.perf_counter() - started
        self._round_gas += receipt.gasUsed
        return receipt

    # ------------------------------------------------------------ the SmartContract interface

    def register(self, household: str, storage: bool = True) -> None:
        """A battery household (``storage``) or a meter that counts in RE only (see SmartContract.register)."""
        if household not in self.account:
            raise ContractError(f"household {household!r} has no account on this chain")
        receipt = self._send(self.c.functions.register(bool(storage)), self.account[household])
        self.index[household] = len(self.registered)
        self.registered.append(household)
        self.storage[household] = bool(storage)
        self.gas.register_gas.append(receipt.gasUsed)

    def set_series(self, soc_target_frac: Sequence[float], committed_kwh: Sequence[float],
                   mode_s: Sequence[float], first_interval: int = 0) -> None:
        values = [*soc_target_frac, *committed_kwh, *mode_s]
        if any(not math.isfinite(float(v)) for v in values):
            raise ContractError("the aggregator's series must be finite")
        self._round_tx(self.c.functions.set_series(
            int(first_interval), [to_ppm(v) for v in soc_target_frac], [to_mwh(v) for v in committed_kwh],
            [int(round(v)) for v in mode_s]), self.aggregator)

    def start_interval(self, interval: int) -> None:
        self._round_tx(self.c.functions.start_interval(int(interval)), self.aggregator)

    def update(self, household: str, soc_frac: float, export_since_last_kwh: float,
               export_in_interval_kwh: float | None = None) -> None:
        """A household's report (per_household: its transaction now; batched: kept for the round's batch)."""
        if household not in self.account:
            raise ContractError(f"household {household!r} has no account on this chain")
        if export_in_interval_kwh is None:
            raise ContractError("the EVM contract needs the export since the interval start in every report")
        if not self.storage.get(household, True):
            soc_frac = 0.0  # a meter has no SoC; the contract does not use it
        values = (soc_frac, export_since_last_kwh, export_in_interval_kwh)
        if not all(math.isfinite(float(v)) for v in values):
            raise ContractError(f"household {household!r}: a non-finite value cannot be sent {values!r}")
        soc, last, total = to_ppm(soc_frac), to_mwh(export_since_last_kwh), to_mwh(export_in_interval_kwh)
        if self.mode == "per_household":
            receipt = self._round_tx(self.c.functions.update(soc, last, total), self.account[household])
            self.gas.household_tx_gas.append(receipt.gasUsed)
        else:
            index = self.index.get(household, len(self.names) + 10 ** 6)  # unregistered: the chain rejects it
            self._pending.append((index, soc, last, total))

    def compute(self, rounds_left: int = 0) -> dict[str, Reply]:
        """One round: the transaction(s) of the mode; the replies from the Round event."""
        from web3.logs import DISCARD

        try:
            if self.mode == "per_household":
                receipt = self._round_tx(self.c.functions.compute(int(rounds_left)), self.aggregator)
            else:
                cols = list(zip(*self._pending)) if self._pending else [(), (), (), ()]
                self._pending = []
                receipt = self._round_tx(self.c.functions.update_and_compute(*(list(c) for c in cols),
                                                                             int(rounds_left)), self.aggregator)
        except ContractError:
            self._round_gas, self._round_wall_s = 0, 0.0  # a round that did not happen on chain
            raise
        if self.mode == "batched":
            self.rejected += len(self.c.events.Rejected().process_receipt(receipt, errors=DISCARD))
        (event,) = self.c.events.Round().process_receipt(receipt, errors=DISCARD)
        args = event["args"]
        self.gas.round_gas.append(self._round_gas)
        self.gas.round_wall_s.append(self._round_wall_s)
        self._round_gas, self._round_wall_s = 0, 0.0
        re = args["re_mwh"] / MWH_PER_KWH
        target, mode = args["soc_target_ppm"] / PPM, float(args["mode_s"])
        replies = {}
        for name, we, wi in zip(self.registered, args["w_export_ppm"], args["w_import_ppm"]):
            if not self.storage[name]:
                continue  # a meter gets no reply
            replies[name] = Reply(re, we / PPM, wi / PPM, target, mode, int(args["interval"]), bool(args["committed"]))
        return replies

    def gas_summary(self) -> dict[str, Any]:
        """Gas per household transaction and per round, EVM wall time per round (for summary.json)."""
        import numpy as np

        def stats(values: Sequence[float], kinds: tuple[str, ...]) -> dict[str, float | None]:
            if not values:
                return {k: None for k in kinds}
            funcs: dict[str, Any] = {"min": np.min, "median": np.median, "max": np.max}
            return {k: float(funcs[k](values)) for k in kinds}

        g = self.gas
        return {"fork": self.fork, "mode": self.mode, "deploy_gas": g.deploy_gas,
                "register_gas_median": stats(g.register_gas, ("median",))["median"],
                "household_tx_gas": stats(g.household_tx_gas, ("min", "median", "max")),
                "round_gas": stats(g.round_gas, ("median", "max")),
                "round_wall_ms": {k: (None if v is None else 1000.0 * v)
                                  for k, v in stats(g.round_wall_s, ("median", "max")).items()},
                "rejected_on_chain": self.rejected, "failed_rounds": self.failed_rounds}
