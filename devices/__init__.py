"""Physical device models, vectorised over a fleet (no mosaik, no control).

- :mod:`dercosim.devices.battery`: batteries with their real-time power-management loop (PMS).
- :mod:`dercosim.devices.thermal`: the building thermal model and a thermostat.
"""
