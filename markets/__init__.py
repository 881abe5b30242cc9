"""The market side of a fleet: the day-ahead aggregator, wholesale clearing and settlement, the smart contract
(Python rules, Vyper source, EVM runner) and the simulated communication network its messages travel on.

References
----------
B. Couraud, V. Robu, D. Flynn, M. Andoni, S. Norbu and H. Quinard, "Real-Time Control of Distributed Batteries
with Blockchain-Enabled Market Export Commitments," IEEE Transactions on Sustainable Energy, 2022: the aggregator,
the commitments and the smart contract of ``[market]`` and ``[contract]``.
"""
