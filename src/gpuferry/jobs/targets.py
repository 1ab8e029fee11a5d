"""Where a job runs, as stored with the job: backend kind and settings, secrets kept out.

Secrets (a Jupyter token, a key passphrase) are never stored or passed on the command line: they
come from the settings (GPUFERRY_JUPYTER_TOKEN, or ``jupyter_token`` in the config file) or a file named
in the target's settings (token_file). What each kind takes, and from which app setting, is its registry
entry's business (backends/registry.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpuferry.backends.base import Backend
from gpuferry.backends.registry import backend_entry, require_kind
from gpuferry.backends.secrets import redact_url, split_url_secret, url_secrets
from gpuferry.data_home import data_home
from gpuferry.errors import NotAuthenticatedError, UsageError

if TYPE_CHECKING:
    from gpuferry.config import Settings

SECRET_KEYS = frozenset({"token", "passphrase", "password"})


@dataclass(frozen=True)
class TargetSpec:
    """A backend kind and its non-secret settings."""

    kind: str
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require_kind(self.kind)
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
        """Settings from ``KEY=VALUE`` strings (``--backend-opt host=gpu-box --backend-opt port=2222``),
        each converted to the type the backend's settings declare for it."""
        return cls(kind, backend_entry(kind).options(pairs))

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "settings": dict(self.settings)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TargetSpec:
        return cls(data["kind"], dict(data.get("settings") or {}))

    def connect(self, settings: Settings | None = None) -> Backend:
        """Open the backend: what the target leaves unset comes from ``settings`` (the loaded settings
        when None): its token (or the target's token_file), and the app settings its entry names."""
        from gpuferry.config import ENV_NAMES, load_settings

        entry = backend_entry(self.kind)
        if settings is None:
            settings = load_settings().settings
        values = dict(self.settings)
        token_file = values.pop("token_file", None)
        if entry.token_setting is not None:
            token = getattr(settings, entry.token_setting)
            if token_file:
                token = Path(token_file).expanduser().read_text().strip()
            if not token:
                raise NotAuthenticatedError(
                    f"no {self.kind} token: set {ENV_NAMES[entry.token_setting]} ({entry.token_setting} in the "
                    "config file) or token_file=PATH", step="connect"
                )
            values["token"] = token
        for key, name in entry.app_settings.items():
            values.setdefault(key, getattr(settings, name))
        if entry.features.far_is_here:
            workdir = Path(values.setdefault("workdir", str(_default_local_root())))
            workdir.mkdir(parents=True, exist_ok=True)
        return entry.open(**values)


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
    return data_home() / "local-target"
