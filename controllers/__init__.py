"""Household controllers: the plug-in protocol (:mod:`~dercosim.controllers.base`), the registry, the rule-based
HEMS and the household MPC with its solver.

The market side (aggregator, clearing, contract, network) moved to :mod:`dercosim.markets` and the distributed
optimisation (ADMM, value stacking, sharing) to :mod:`dercosim.planning`; their old names here still import, with
a :class:`DeprecationWarning`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType

#: old module under dercosim.controllers -> where it lives now
MOVED = {
    "aggregator": "dercosim.markets.aggregator",
    "market": "dercosim.markets.clearing",
    "contract": "dercosim.markets.contract",
    "contract_evm": "dercosim.markets.contract_evm",
    "network": "dercosim.markets.network",
    "admm": "dercosim.planning.admm",
    "valuestack": "dercosim.planning.valuestack",
    "sharing": "dercosim.planning.sharing",
}


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``dercosim.controllers.<old>`` (and its submodules) as the module it moved to, with a warning."""

    prefix = f"{__name__}."

    def _target(self, fullname: str) -> str | None:
        if not fullname.startswith(self.prefix):
            return None
        head, _, rest = fullname.removeprefix(self.prefix).partition(".")
        if head not in MOVED:
            return None
        return MOVED[head] + (f".{rest}" if rest else "")

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        new = self._target(fullname)
        if new is None or importlib.util.find_spec(new) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # a plain module, filled in by exec_module

    def exec_module(self, module: ModuleType) -> None:
        new = self._target(module.__name__)
        assert new is not None
        warnings.warn(f"{module.__name__} moved to {new}; import it from there", DeprecationWarning, stacklevel=2)
        target = importlib.import_module(new)
        module.__dict__.update({k: v for k, v in vars(target).items() if not k.startswith("__") or k == "__all__"})
        if hasattr(target, "__path__"):  # a package: its submodules import through this finder too
            module.__path__ = []


if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedFinder())
