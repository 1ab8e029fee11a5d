"""Where cgpu 0.1.4 keeps its config file and its session, as its own config.ts decides; checked before use."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .features import PreflightCheck


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


def preflight_checks(settings: Mapping[str, Any]) -> Iterator[PreflightCheck]:
    """cgpu installed, its config file and its session present (cgpu 0.1.4 only logs in from a browser)."""
    executable = settings.get("executable", "cgpu")
    found = shutil.which(executable)
    if not found:
        yield PreflightCheck("installed", "fail", f"{executable!r} is not on PATH", "npm i -g cgpu")
        return
    yield PreflightCheck("installed", "pass", found)
    env = settings.get("process_env") or {}
    config_dir, config_file = settings.get("config_dir"), settings.get("config_file")
    credentials = cgpu_config_file(config_dir, config_file, env)
    if credentials.is_dir():
        yield PreflightCheck("credentials", "fail", f"{credentials} is a folder; cgpu's -c takes the config FILE",
                             "set config_file= to the config.json (or config_dir= to its folder)")
        return
    if not credentials.is_file():
        yield PreflightCheck("credentials", "fail", f"{credentials} is missing (cgpu's OAuth client)",
                             "run `cgpu status` in an interactive terminal: it walks you through creating it")
        return
    yield PreflightCheck("credentials", "pass", f"{credentials} present")
    session = Path(cgpu_session_file(config_dir, config_file, env))
    if not session.is_file():
        yield PreflightCheck("session", "fail",
                             f"no cgpu session at {session} (never logged in, logged out, or a failed token "
                             "refresh deleted it): cgpu would wait for a browser login",
                             "log in once from an interactive terminal: `cgpu status` (finish the Google login "
                             "in the browser)")
        return
    yield PreflightCheck("session", "pass", f"{session} present")
