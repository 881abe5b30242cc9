"""The papers' studies and many-run tools: the fleet scenarios side by side and their sensitivity, value-stacking
modes and streams, shared and price-maker storage, parameter sweeps."""
