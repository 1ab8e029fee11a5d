"""Where gpuferry keeps its files (job store, weights cache, worker code): one folder, one rule.

Standard library only: the far-side worker imports the weights cache too, without the client's libraries.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from gpuferry.errors import UsageError

#: the store holds input paths, remote folders and segments of the user's videos: owner only
PRIVATE_DIR = 0o700


def config_path() -> Path:
    """GPUFERRY_CONFIG, default ~/.config/gpuferry/config.toml."""
    configured = os.environ.get("GPUFERRY_CONFIG")
    return Path(configured).expanduser() if configured else Path.home() / ".config" / "gpuferry" / "config.toml"


def data_home() -> Path:
    """GPUFERRY_HOME, else the config file's ``home``, else ~/.local/share/gpuferry (the precedence
    ``gpuferry config`` shows); private to its owner (mode 0700)."""
    configured = os.environ.get("GPUFERRY_HOME") or _home_in_config_file()
    home = Path(configured).expanduser() if configured else Path.home() / ".local" / "share" / "gpuferry"
    return private_dir(home)


def _home_in_config_file() -> str | None:
    path = config_path()
    try:
        data = tomllib.loads(path.read_text())
    except OSError:
        return None  # no config file (or none readable: ``gpuferry config`` says which)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"the config file is not valid TOML ({exc})", path=str(path), step="config") from None
    home = (data.get("gpuferry") or {}).get("home")
    return str(home) if home else None


def private_dir(path: Path) -> Path:
    """``path`` as a folder only its owner can enter (created, or narrowed when it is wider)."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(PRIVATE_DIR)
    return path
