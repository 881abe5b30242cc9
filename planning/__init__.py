"""Distributed optimisation: the ADMM engine, community-battery value stacking, shared and price-maker storage.

Plain Python on plain arrays (casadi, HiGHS, PIQP); the planner simulator (``sims/planner.py``) runs it inside a
world, the studies (``studies/``) run it on its own.
"""
