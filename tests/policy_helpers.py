"""Helpers for the failure-policy tests: JSON events from a CLI run, a TOML config writer."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def json_events(completed: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]


def toml_value(value: object) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(str(value))


def write_config(path: Path, targets: dict[str, dict[str, object]], **general: object) -> None:
    lines = ["[gpuferry]"] + [f"{key} = {toml_value(value)}" for key, value in general.items()]
    for name, table in targets.items():
        lines.append(f"\n[targets.{name}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in table.items())
    path.write_text("\n".join(lines) + "\n")
