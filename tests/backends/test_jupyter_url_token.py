"""A Jupyter token inside a URL (``/lab?token=...``, the link the server prints) never reaches the job
store, ``gpuferry jobs``, ``gpuferry config``, events or messages: typed or stored it is refused, and a
library caller's URL has it moved out before anything is built from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpuferry.backends.jupyter import JupyterBackend
from gpuferry.errors import UsageError
from gpuferry.jobs.targets import TargetSpec


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gpuferry", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def _everything_on_disk(home: Path) -> bytes:
    return b"".join(path.read_bytes() for path in home.rglob("*") if path.is_file())


def test_a_token_in_the_url_is_refused_and_kept_out_of_every_record(jupyter_server, tmp_path, clips):
    token = jupyter_server.token()
    home = tmp_path / "home"
    env = {**os.environ, "GPUFERRY_HOME": str(home), "GPUFERRY_JUPYTER_TOKEN": token,
           "GPUFERRY_CONFIG": str(tmp_path / "none.toml")}
    url = f"{jupyter_server.url}/lab?token={token}"
    run = _cli(env, "upscale", "--json", "--backend", "jupyter", "--backend-opt", f"url={url}",
               "-o", str(tmp_path / "out.mp4"), str(clips.get("small.mp4")))
    assert run.returncode == UsageError.exit_code, run.stderr
    assert "holds a token" in run.stderr and f"url={jupyter_server.url}/" in run.stderr
    assert token not in run.stdout + run.stderr
    listing = _cli(env, "jobs", "--json")
    assert json.loads(listing.stdout) == [] and token not in listing.stdout
    assert token.encode() not in _everything_on_disk(home)

    config = tmp_path / "config.toml"
    config.write_text(f'[targets.lab]\nkind = "jupyter"\nurl = "{url}"\n')
    shown = _cli({**env, "GPUFERRY_CONFIG": str(config)}, "config", "--json")
    assert shown.returncode == UsageError.exit_code
    assert "holds a token" not in shown.stdout and "has a token in its url" in shown.stderr
    assert token not in shown.stdout + shown.stderr


@pytest.mark.parametrize("form", ["query", "user-info"])
def test_a_library_callers_url_has_its_token_moved_out(jupyter_server, tmp_path, form):
    token = jupyter_server.token()
    host = jupyter_server.url.split("://", 1)[1]
    url = f"{jupyter_server.url}/lab?token={token}" if form == "query" else f"http://{token}@{host}/"
    backend = JupyterBackend(url=url, workdir=str(jupyter_server.root_dir))
    try:
        assert backend.run(["true"], timeout=60).ok, "the token moved into the header still works"
        assert backend.settings.url == jupyter_server.url + "/"
        assert token not in repr(backend) and token not in backend.settings.url
        with pytest.raises(Exception) as caught:
            backend.read_bytes(str(tmp_path / "no such file"))
        assert token not in str(caught.value)
    finally:
        backend.close()


def test_stored_settings_and_messages_mask_url_credentials():
    from gpuferry.backends.secrets import redact_urls

    with pytest.raises(UsageError) as caught:
        TargetSpec("jupyter", {"url": "http://gpu:8888/lab?token=abcdef123456"})
    assert "abcdef123456" not in caught.value.render()
    assert redact_urls("cannot reach http://u:pw-secret@h:1/x?token=t0ken&a=1.") == \
        "cannot reach http://u:***@h:1/x?token=***&a=1."
