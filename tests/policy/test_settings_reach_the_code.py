"""Every value `gpuferry config` shows is the one the code uses: the config file's home, jupyter_token and
cgpu_max_concurrency reach the job store, the weights cache and the backends, not only the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from policy_helpers import write_config

from gpuferry.config import load_settings
from gpuferry.jobs.store import JobStore
from gpuferry.jobs.targets import TargetSpec
from gpuferry.models.convert import cache_dir

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private user home and config file, none of the deployment's variables set."""
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    for name in ("GPUFERRY_HOME", "GPUFERRY_JUPYTER_TOKEN", "CGPU_MAX_CONCURRENCY", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "config.toml"
    monkeypatch.setenv("GPUFERRY_CONFIG", str(path))
    return path


def store_folder() -> Path:
    store = JobStore()
    store.close()
    return store.path.parent


def test_one_data_folder_holds_the_job_store_and_the_weights_cache(config_file, tmp_path, monkeypatch):
    default = tmp_path / "user" / ".local" / "share" / "gpuferry"
    assert store_folder() == default
    assert cache_dir().parent == default

    data = tmp_path / "data"
    write_config(config_file, {}, home=str(data))
    assert load_settings().settings.home == data  # what `gpuferry config` shows ...
    assert store_folder() == data  # ... is where the jobs go
    assert cache_dir() == data / "converted-weights"  # ... and the weights

    monkeypatch.setenv("GPUFERRY_HOME", str(tmp_path / "env-home"))  # the variable beats the file for both
    assert store_folder() == tmp_path / "env-home"
    assert cache_dir().parent == tmp_path / "env-home"


def test_cgpu_max_concurrency_from_the_config_file_reaches_the_backend(config_file, monkeypatch):
    write_config(config_file, {}, cgpu_max_concurrency=3)
    with TargetSpec("cgpu", {"executable": "cgpu-not-called"}).connect() as backend:
        assert backend.settings.max_concurrency == 3
    monkeypatch.setenv("CGPU_MAX_CONCURRENCY", "2")
    with TargetSpec("cgpu", {"executable": "cgpu-not-called"}).connect() as backend:
        assert backend.settings.max_concurrency == 2
    with TargetSpec("cgpu", {"executable": "cgpu-not-called", "max_concurrency": 4}).connect() as backend:
        assert backend.settings.max_concurrency == 4  # the target's own setting first


def test_jupyter_token_from_the_config_file_opens_the_server(config_file, jupyter_server):
    write_config(config_file, {}, jupyter_token=jupyter_server.token())
    target = TargetSpec("jupyter", {"url": jupyter_server.url})
    with target.connect() as backend:
        assert backend.run(["true"], timeout=60).ok
