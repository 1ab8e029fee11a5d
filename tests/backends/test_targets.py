"""`gpuferry targets`' engine: each configured target is opened, asked to run `true`, and reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuferry.backends.targets import Target, check_targets, open_backend
from gpuferry.errors import UsageError

pytestmark = pytest.mark.timeout(60)


def test_check_targets_reports_each(sshd_server, cgpu_runtime, tmp_path: Path) -> None:
    from servers.ports import free_port

    targets = [
        Target("here", "local", {"workdir": str(tmp_path)}),
        Target("box", "ssh", sshd_server.backend_options()),
        Target("down", "ssh", sshd_server.backend_options(port=free_port(), connect_timeout=5)),
        Target("colab", "cgpu", {"executable": str(tmp_path / "missing-cgpu")}),
        Target("colab-fake", "cgpu", {
            "executable": str(Path(__file__).resolve().parents[1] / "fakes" / "cgpu"),
            "config_dir": str(cgpu_runtime.config), "remote_root": str(cgpu_runtime.runtime),
            "process_env": cgpu_runtime.process_env()}),
    ]
    statuses = check_targets(targets)
    assert [(status.name, status.ok) for status in statuses] == [
        ("here", True), ("box", True), ("down", False), ("colab", False), ("colab-fake", True)]
    assert statuses[0].detail == "no GPU" and statuses[0].latency is not None
    assert statuses[2].error_kind == "connection_lost"
    assert statuses[3].error_kind == "not_installed"
    json.dumps([status.to_json() for status in statuses])


def test_jupyter_target_token_not_in_status(jupyter_server) -> None:
    token = "gpf-wrong-token-0123456789"
    target = Target("lab", "jupyter", {"url": jupyter_server.url, "token": token})
    [status] = check_targets([target])
    assert not status.ok and status.error_kind == "not_authenticated"
    assert token not in json.dumps(status.to_json()) and token not in repr(target)


def test_unknown_kind() -> None:
    with pytest.raises(UsageError):
        open_backend("carrier-pigeon")


def test_backend_options_are_typed_by_the_backends_settings() -> None:
    from gpuferry.jobs.targets import TargetSpec

    spec = TargetSpec.from_pairs("ssh", ["host=gpu-box", "port=2222", "accept-new-host-key=yes", "client_keys=a,b"])
    assert spec.settings == {"host": "gpu-box", "port": 2222, "accept_new_host_key": True, "client_keys": ["a", "b"]}
    assert TargetSpec.from_pairs("cgpu", ["max_concurrency=3"]).settings == {"max_concurrency": 3}
    with pytest.raises(UsageError, match="has no setting 'hots'") as unknown:
        TargetSpec.from_pairs("ssh", ["hots=gpu-box"])
    assert "host" in unknown.value.hints[0]
    with pytest.raises(UsageError, match="port='22x' is not a number"):
        TargetSpec.from_pairs("ssh", ["port=22x"])
    with pytest.raises(UsageError, match="is not yes or no"):
        TargetSpec.from_pairs("jupyter", ["verify_tls=maybe"])


def test_a_config_file_target_with_an_unknown_setting_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    from gpuferry.jobs.targets import TargetSpec

    with pytest.raises(UsageError, match="has no setting 'workdri'") as refused:
        TargetSpec("local", {"workdri": str(tmp_path)}).connect()
    assert "workdir" in refused.value.hints[0]
