"""Super-resolution architectures written in torch, one module each with ``detect`` and ``build``.

Modules here import torch; this package's own import does not, so gpuferry works without torch.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from gpuferry.models.architectures.base import LoadedModel, ModelProfile

#: architecture name -> module; adding an architecture means adding a module and a line here
ARCHITECTURE_MODULES = {
    "srvgg-compact": "gpuferry.models.architectures.srvgg_compact",
    "rrdbnet": "gpuferry.models.architectures.rrdbnet",
}


def architecture_module(name: str) -> ModuleType:
    """The module implementing one architecture (imports torch)."""
    return importlib.import_module(ARCHITECTURE_MODULES[name])


def detect_architecture(state_dict: dict[str, Any]) -> str | None:
    """The name of the first architecture whose ``detect`` accepts the state dict, or None."""
    for name in ARCHITECTURE_MODULES:
        if architecture_module(name).detect(state_dict):
            return name
    return None


def build_architecture(name: str, state_dict: dict[str, Any], source: str = "") -> LoadedModel:
    """Build a named architecture from a state dict."""
    return architecture_module(name).build(state_dict, source=source)


__all__ = [
    "ARCHITECTURE_MODULES",
    "LoadedModel",
    "ModelProfile",
    "architecture_module",
    "build_architecture",
    "detect_architecture",
]
