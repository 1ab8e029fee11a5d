"""Where cgpu 0.1.4 keeps its config file and its session, as its own config.ts decides."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path


def cgpu_config_dir(config_dir: str | None = None, env: Mapping[str, str] | None = None) -> Path:
    """``config_dir``, else $CGPU_CONFIG_DIR, else ``$XDG_CONFIG_HOME/cgpu`` (``~/.config/cgpu``)."""
    environment = {**os.environ, **(env or {})}
    chosen = config_dir or environment.get("CGPU_CONFIG_DIR")
    if chosen:
        return Path(chosen).expanduser().resolve()
    base = environment.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "cgpu"


def cgpu_config_file(config_dir: str | None = None, config_file: str | None = None,
                     env: Mapping[str, str] | None = None) -> Path:
    """The config file cgpu reads: its ``-c`` argument, else ``<config dir>/config.json``."""
    if config_file:
        return Path(config_file).expanduser().resolve()
    return cgpu_config_dir(config_dir, env) / "config.json"


def cgpu_session_file(config_dir: str | None = None, config_file: str | None = None,
                      env: Mapping[str, str] | None = None) -> str:
    """``state/session.json`` in the config folder, or in the config file's ``storageDir``. ``-c`` does not
    move it: only CGPU_CONFIG_DIR and ``storageDir`` do."""
    try:
        with open(cgpu_config_file(config_dir, config_file, env), encoding="utf-8") as handle:
            storage = json.load(handle).get("storageDir")
    except (OSError, ValueError, AttributeError):
        storage = None
    if isinstance(storage, str) and storage:
        return str(Path(storage).expanduser().resolve() / "session.json")
    return str(cgpu_config_dir(config_dir, env) / "state" / "session.json")
