"""Backends: where commands run and files live (local, ssh, jupyter, cgpu) behind one interface."""

from .base import Backend, CommandResult, FileStat, GpuInfo
from .secrets import Secret
from .targets import Target, TargetStatus, check_targets, open_backend

__all__ = [
    "Backend",
    "CommandResult",
    "FileStat",
    "GpuInfo",
    "Secret",
    "Target",
    "TargetStatus",
    "check_targets",
    "open_backend",
]
