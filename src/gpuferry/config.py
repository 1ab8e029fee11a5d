"""One Settings object: the original deployment's variables (CGPU_*, UPSCALE_*, USE_GPU), GPUFERRY_*,
a TOML file for targets, and flags over both; each value knows where it came from."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gpuferry.backends.registry import BACKEND_KINDS
from gpuferry.backends.secrets import redact_url, redact_urls, url_secrets
from gpuferry.data_home import config_path
from gpuferry.errors import UsageError

#: where each setting is read from the environment (the original names are kept as they were)
ENV_NAMES: dict[str, str] = {
    "cgpu_gpu_enabled": "CGPU_GPU_ENABLED",
    "cgpu_timeout": "CGPU_TIMEOUT",
    "cgpu_max_concurrency": "CGPU_MAX_CONCURRENCY",
    "upscale": "UPSCALE",
    "model": "UPSCALE_MODEL",
    "scale": "UPSCALE_SCALE",
    "tile": "UPSCALE_TILE_SIZE",
    "crf": "UPSCALE_CRF",
    "device": "USE_GPU",
    "home": "GPUFERRY_HOME",
    "segment_seconds": "GPUFERRY_SEGMENT_SECONDS",
    "stall_timeout": "GPUFERRY_STALL_TIMEOUT",
    "poll_interval": "GPUFERRY_POLL_INTERVAL",
    "fallback": "GPUFERRY_FALLBACK",
    "strict": "GPUFERRY_STRICT",
    "retry_budget": "GPUFERRY_RETRY_BUDGET",
    "jupyter_token": "GPUFERRY_JUPYTER_TOKEN",
}
SECRET_FIELDS = frozenset({"jupyter_token"})
DEFAULT_FALLBACK = ("cgpu", "targets", "local-gpu", "local-cpu", "resample")
FALLBACK_STAGES = frozenset(DEFAULT_FALLBACK)


class TargetConfig(BaseModel):
    """One named target from the TOML file's ``[targets.NAME]`` table."""

    kind: str
    settings: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True

    @field_validator("kind")
    @classmethod
    def _registered_kind(cls, value: str) -> str:
        if value not in BACKEND_KINDS:
            raise ValueError(f"kind must be one of {', '.join(BACKEND_KINDS)}")
        return value


class Settings(BaseSettings):
    """Effective settings: defaults < TOML file < environment < flags."""

    model_config = SettingsConfigDict(extra="ignore", validate_default=True)

    cgpu_gpu_enabled: bool = False
    cgpu_timeout: float = Field(1800.0, gt=0)
    cgpu_max_concurrency: int = Field(1, ge=1)
    upscale: bool = True
    model: str = "realesr-animevideov3"
    scale: int = 2
    tile: int = Field(0, ge=0)
    crf: int = Field(18, ge=0, le=63)
    device: Literal["auto", "cuda", "vulkan", "cpu"] = "auto"
    home: Path | None = None
    segment_seconds: float = Field(10.0, gt=0)
    stall_timeout: float = Field(120.0, gt=0)
    poll_interval: float = Field(2.0, gt=0)
    fallback: tuple[str, ...] = DEFAULT_FALLBACK
    strict: bool = False
    retry_budget: int = Field(8, ge=0)
    jupyter_token: str | None = Field(None, repr=False)
    targets: dict[str, TargetConfig] = Field(default_factory=dict)

    @field_validator("scale")
    @classmethod
    def _known_scale(cls, value: int) -> int:
        if value not in (2, 3, 4):
            raise ValueError("scale must be 2, 3 or 4")
        return value

    @field_validator("device", mode="before")
    @classmethod
    def _lower_device(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("fallback", mode="before")
    @classmethod
    def _split_fallback(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        unknown = [stage for stage in value if stage not in FALLBACK_STAGES]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; stages are {', '.join(DEFAULT_FALLBACK)}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # only init values: load_settings() merges file, environment and flags itself, so that it
        # knows where every value came from and can name the variable when one is invalid
        return (init_settings,)


@dataclass(frozen=True)
class LoadedSettings:
    """Settings plus the origin of each value ("default", "file", "env NAME", "flag")."""

    settings: Settings
    origins: dict[str, str]
    file: Path

    def report(self) -> list[dict[str, Any]]:
        """Every setting with its value (secrets masked) and where it came from."""
        rows = []
        for name in Settings.model_fields:
            if name == "targets":
                continue
            value = getattr(self.settings, name)
            if name in SECRET_FIELDS and value:
                value = "****"
            rows.append({"name": name, "env": ENV_NAMES.get(name), "value": _plain(value),
                         "source": self.origins.get(name, "default")})
        for target_name, target in self.settings.targets.items():
            rows.append({"name": f"targets.{target_name}", "env": None,
                         "value": {"kind": target.kind, **_masked(target.settings)}, "source": "file"})
        return rows


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _masked(settings: dict[str, Any]) -> dict[str, Any]:
    return {key: ("****" if key in ("token", "password", "passphrase")
                  else redact_urls(value) if isinstance(value, str) else value) for key, value in settings.items()}


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"the config file is not valid TOML ({exc})", path=str(path), step="config") from None
    values = dict(data.get("gpuferry", {}))
    targets = {}
    for name, raw_table in (data.get("targets") or {}).items():
        table = dict(raw_table)
        kind = table.pop("kind", None)
        enabled = table.pop("enabled", True)
        if "token" in table:
            raise UsageError(
                f"target {name!r} has a token in the file; use token_file = PATH or GPUFERRY_JUPYTER_TOKEN",
                path=str(path), step="config",
            )
        if url_secrets(str(table.get("url") or "")):
            raise UsageError(
                f"target {name!r} has a token in its url ({redact_url(str(table['url']))}); give the server's "
                "address alone and use token_file = PATH or GPUFERRY_JUPYTER_TOKEN",
                path=str(path), step="config",
            )
        targets[name] = {"kind": kind, "settings": table, "enabled": enabled}
    if targets:
        values["targets"] = targets
    return values


def load_settings(flags: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> LoadedSettings:
    """Defaults < TOML file < environment < flags; an invalid value names its variable."""
    environ = dict(os.environ if environ is None else environ)
    path = config_path()
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for name, value in _read_file(path).items():
        values[name] = value
        origins[name] = f"file {path}"
    for name, variable in ENV_NAMES.items():
        if variable in environ and environ[variable] != "":
            values[name] = environ[variable]
            origins[name] = f"env {variable}"
    for name, value in (flags or {}).items():
        if value is not None:
            values[name] = value
            origins[name] = "flag"
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = str(problem["loc"][0]) if problem["loc"] else "?"
        where = origins.get(field, "default")
        label = ENV_NAMES.get(field, field) if where.startswith("env") else f"{field} ({where})"
        raise UsageError(
            f"invalid value for {label}: {problem['msg']} (got {values.get(field)!r})", step="config"
        ) from None
    return LoadedSettings(settings=settings, origins=origins, file=path)
