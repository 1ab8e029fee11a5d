"""Tokens and keys never appear in logs, error messages, --json output, repr() or str()."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from gpuferry.backends.jupyter import JupyterBackend
from gpuferry.backends.secrets import Secret
from gpuferry.backends.ssh import SshBackend
from gpuferry.errors import GpuferryError, NotAuthenticatedError

pytestmark = pytest.mark.timeout(60)

WRONG_TOKEN = "gpf-secret-token-7f3a9c1e5b2d"


def renderings(error: GpuferryError) -> str:
    return "\n".join([str(error), repr(error), error.render(), json.dumps(error.to_json()), repr(error.args)])


def test_wrong_jupyter_token_is_not_leaked(jupyter_server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(NotAuthenticatedError) as caught:
        JupyterBackend(url=jupyter_server.url, token=WRONG_TOKEN)
    assert WRONG_TOKEN not in renderings(caught.value)
    assert WRONG_TOKEN not in caplog.text
    assert caplog.records, "debug logging was captured"


def test_valid_jupyter_token_is_not_logged(jupyter_server, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = jupyter_server.token()
    backend = JupyterBackend(url=jupyter_server.url, token=token, workdir=str(tmp_path))
    try:
        backend.write_bytes("f", b"data")
        assert backend.run(["cat", "f"], timeout=30).output == "data"
        assert token not in repr(backend) and token not in str(backend.settings)
        assert token not in repr(backend.settings.token)
    finally:
        backend.close()
    assert token not in caplog.text


def test_secret_masks_every_rendering() -> None:
    secret = Secret(WRONG_TOKEN)
    assert WRONG_TOKEN not in f"{secret} {secret!r} {[secret]} {dict(token=secret)}"
    assert secret.reveal() == WRONG_TOKEN


def test_ssh_key_material_is_not_leaked(sshd_server, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import subprocess

    caplog.set_level(logging.DEBUG)
    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    key_lines = [line for line in stranger.read_text().splitlines() if "PRIVATE KEY" not in line]
    with pytest.raises(NotAuthenticatedError) as caught:
        SshBackend(**sshd_server.backend_options(client_keys=[str(stranger)]))
    text = renderings(caught.value) + caplog.text
    for line in key_lines:
        assert line not in text
