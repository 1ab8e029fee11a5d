"""Where a job runs, as stored with the job: backend kind and settings, secrets kept out.

Secrets (a Jupyter token, a key passphrase) are never stored or passed on the command line: they
come from the environment (GPUFERRY_JUPYTER_TOKEN) or a file named in the settings (token_file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuferry.backends.base import Backend
from gpuferry.backends.secrets import redact_url, split_url_secret, url_secrets
from gpuferry.backends.targets import BACKEND_KINDS, open_backend
from gpuferry.errors import NotAuthenticatedError, UsageError

SECRET_KEYS = frozenset({"token", "passphrase", "password"})
_INT_KEYS = frozenset({"port", "upload_chunk_size"})
_FLOAT_KEYS = frozenset({"call_overhead", "request_timeout", "connect_timeout", "keepalive_interval"})
_LIST_KEYS = frozenset({"client_keys", "config_files"})
_BOOL_KEYS = frozenset({"accept_new_host_key", "verify_tls", "new_runtime"})


@dataclass(frozen=True)
class TargetSpec:
    """A backend kind and its non-secret settings."""

    kind: str
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in BACKEND_KINDS:
            raise UsageError(f"unknown backend {self.kind!r}; choose one of {', '.join(BACKEND_KINDS)}")
        leaked = SECRET_KEYS & set(self.settings)
        if leaked:
            raise UsageError(
                f"{', '.join(sorted(leaked))} must not be given as a setting (it would be stored and "
                "shown in process lists); use GPUFERRY_JUPYTER_TOKEN or token_file=PATH",
                step="target",
            )
        refuse_url_with_secret(str(self.settings.get("url") or ""), "target")

    @classmethod
    def from_pairs(cls, kind: str, pairs: list[str] | tuple[str, ...]) -> TargetSpec:
        """Settings from ``KEY=VALUE`` strings (``--target host=gpu-box --target port=2222``)."""
        settings: dict[str, Any] = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise UsageError(f"--target expects KEY=VALUE, got {pair!r}", step="target")
            key = key.strip().replace("-", "_")
            if key in _INT_KEYS:
                settings[key] = int(value)
            elif key in _FLOAT_KEYS:
                settings[key] = float(value)
            elif key in _LIST_KEYS:
                settings[key] = [item for item in value.split(",") if item]
            elif key in _BOOL_KEYS:
                settings[key] = value.lower() in ("1", "true", "yes", "on")
            else:
                settings[key] = value
        return cls(kind, settings)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "settings": dict(self.settings)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TargetSpec:
        return cls(data["kind"], dict(data.get("settings") or {}))

    def connect(self) -> Backend:
        """Open the backend, adding secrets from the environment or a token file."""
        settings = dict(self.settings)
        token_file = settings.pop("token_file", None)
        if self.kind == "jupyter":
            token = os.environ.get("GPUFERRY_JUPYTER_TOKEN")
            if token_file:
                token = Path(token_file).expanduser().read_text().strip()
            if not token:
                raise NotAuthenticatedError(
                    "no Jupyter token: set GPUFERRY_JUPYTER_TOKEN or token_file=PATH", step="connect"
                )
            settings["token"] = token
        if self.kind == "local":
            workdir = Path(settings.setdefault("workdir", str(_default_local_root())))
            workdir.mkdir(parents=True, exist_ok=True)
        return open_backend(self.kind, **settings)


def refuse_url_with_secret(url: str, step: str) -> None:
    """A stored or typed URL must not carry a token (``?token=``, ``user:password@``): it would show in
    process lists, the job store, ``gpuferry jobs`` and every message naming the server."""
    if url_secrets(url):
        clean, _ = split_url_secret(url)
        raise UsageError(
            f"the url {redact_url(url)} holds a token; it would be stored and shown in process lists",
            step=step,
            hints=[f"Give the server's address alone: url={clean}",
                   "Put the token in GPUFERRY_JUPYTER_TOKEN or in a file named by token_file=PATH (mode 600).",
                   "If it was typed on a command line, it is in your shell history: restart the server "
                   "for a new token."],
        )


def _default_local_root() -> Path:
    from gpuferry.jobs.store import gpuferry_home

    return gpuferry_home() / "local-target"
