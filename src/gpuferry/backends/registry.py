"""The backend registry: one entry per kind (settings, factory, declared features); adding a backend is
one module that defines ``ENTRY`` plus one line in ``MODULES``."""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from ..errors import UsageError
from .base import Backend
from .features import BackendFeatures, PreflightCheck

#: kind -> the module that defines its ``ENTRY`` (imported on first use: ssh pulls in asyncssh)
MODULES: dict[str, str] = {
    "local": "gpuferry.backends.local",
    "ssh": "gpuferry.backends.ssh",
    "jupyter": "gpuferry.backends.jupyter",
    "cgpu": "gpuferry.backends.cgpu",
    "memory": "gpuferry.backends.memory",
    "ray": "gpuferry.backends.ray_cluster",
}
BACKEND_KINDS = tuple(MODULES)
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class BackendEntry:
    """One backend kind: its typed settings, how to build it, and what it can do."""

    kind: str
    #: the settings dataclass; its field types convert ``--backend-opt KEY=VALUE`` strings
    settings: type
    factory: Callable[..., Backend]
    features: BackendFeatures
    #: keys a target may hold beside the settings' fields, used before the factory (``token_file``)
    extra_keys: frozenset[str] = frozenset()
    #: the app setting (config.Settings field) holding this backend's token; a token is then required,
    #: from the target's ``token_file`` or that setting
    token_setting: str | None = None
    #: backend setting -> app setting supplying it when the target does not set it
    app_settings: Mapping[str, str] = field(default_factory=dict)
    #: checks on this machine before connecting (a CLI installed, its login present)
    preflight: Callable[[Mapping[str, Any]], Iterator[PreflightCheck]] | None = None
    #: a cluster kind (``features.cluster``): builds its connection from an instance of ``settings``
    cluster: Callable[[Any], Any] | None = None

    def open_cluster(self, **settings: Any) -> Any:
        """The cluster connection of a cluster kind, from its settings (checked as for ``open``)."""
        unknown = set(settings) - self.known_keys()
        if unknown or self.cluster is None:
            raise UsageError(f"the {self.kind} backend has no setting {', '.join(map(repr, sorted(unknown)))}"
                             if unknown else f"the {self.kind} backend is not a cluster", step="target")
        return self.cluster(self.settings(**settings))

    def open(self, **settings: Any) -> Backend:
        """A connected backend built from ``settings`` (the settings class's field names)."""
        unknown = set(settings) - self.known_keys()
        if unknown:
            raise UsageError(f"the {self.kind} backend has no setting {', '.join(map(repr, sorted(unknown)))}",
                             step="target", hints=[f"Its settings: {', '.join(sorted(self.known_keys()))}."])
        return self.factory(**settings)

    def known_keys(self) -> set[str]:
        """The setting names a target of this kind may hold."""
        return {f.name for f in dataclasses.fields(self.settings)} | set(self.extra_keys)

    def options(self, pairs: Sequence[str], flag: str = "--backend-opt") -> dict[str, Any]:
        """Settings from ``KEY=VALUE`` strings, each converted to its field's type."""
        hints = typing.get_type_hints(self.settings)
        known = self.known_keys()
        values: dict[str, Any] = {}
        for pair in pairs:
            key, sep, text = pair.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or not key:
                raise UsageError(f"{flag} expects KEY=VALUE, got {pair!r}", step="target")
            if key not in known:
                raise UsageError(f"the {self.kind} backend has no setting {key!r}", step="target",
                                 hints=[f"Its settings: {', '.join(sorted(known))}."])
            values[key] = _convert(hints.get(key, str), text, key, flag) if key in hints else text
        return values


def _convert(hint: Any, text: str, key: str, flag: str) -> Any:
    """``text`` as the type ``hint`` names (Optional unwrapped); a one-line UsageError when it is not one."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        hint = options[0] if len(options) == 1 else str
    origin = typing.get_origin(hint) or hint
    try:
        if hint is bool:
            if text.lower() not in _TRUE + _FALSE:
                raise ValueError(text)
            return text.lower() in _TRUE
        if hint in (int, float):
            return hint(text)
        if origin in (list, tuple):
            return [item for item in text.split(",") if item]
        if origin in (dict, Mapping):
            raise UsageError(f"{key} is a table: set it in the config file's [targets.NAME], not with {flag}",
                             step="target")
    except ValueError:
        kind = "yes or no" if hint is bool else f"a number ({hint.__name__})"
        raise UsageError(f"{flag} {key}={text!r} is not {kind}", step="target") from None
    return text


def require_kind(kind: str) -> str:
    """``kind`` itself when a backend of that kind is registered (nothing imported); else a UsageError."""
    if kind not in MODULES:
        raise UsageError(f"unknown backend kind {kind!r} (choose from {', '.join(BACKEND_KINDS)})")
    return kind


def backend_entry(kind: str) -> BackendEntry:
    """The registry entry for ``kind``; UsageError naming the known kinds when there is none."""
    return _load(require_kind(kind))


@cache
def _load(kind: str) -> BackendEntry:
    entry = importlib.import_module(MODULES[kind]).ENTRY
    assert isinstance(entry, BackendEntry) and entry.kind == kind, MODULES[kind]
    return entry


def features_of(kind: str) -> BackendFeatures:
    """What a backend of ``kind`` can do, without connecting."""
    return backend_entry(kind).features


def open_backend(kind: str, **settings: Any) -> Backend:
    """A connected backend of ``kind`` built from ``settings``."""
    return backend_entry(kind).open(**settings)
