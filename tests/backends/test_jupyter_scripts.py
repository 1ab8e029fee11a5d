"""Far-side scripts a Jupyter backend installs are reused only when their bytes match: a same-size altered
copy is replaced, never run."""

from __future__ import annotations

import hashlib
from pathlib import Path

from gpuferry.backends.helper_call import helper_source
from gpuferry.backends.jupyter import SCRIPTS_API_DIR, JupyterBackend


def test_an_altered_helper_of_the_same_size_is_replaced_not_run(jupyter_server, jupyter_folder: Path,
                                                               tmp_path: Path) -> None:
    source = helper_source()
    installed = jupyter_server.root_dir / SCRIPTS_API_DIR / f"remote_helper-{hashlib.sha256(source).hexdigest()[:16]}.py"
    options = dict(url=jupyter_server.url, token=jupyter_server.token(), workdir=str(jupyter_folder))
    JupyterBackend(**options).close()
    assert installed.read_bytes() == source

    marker = tmp_path / "altered-helper-ran"
    altered = (f"open({str(marker)!r}, 'w').write('ran')\n"
               "print('{\"ok\": true, \"result\": null}')\n").encode()
    installed.write_bytes(altered + b"#" * (len(source) - len(altered) - 1) + b"\n")
    assert installed.stat().st_size == len(source)

    backend = JupyterBackend(**options)
    try:
        backend.write_bytes("probe.txt", b"x")
        assert backend.stat("probe.txt") is not None and backend.listdir(".") == ["probe.txt"]
    finally:
        backend.close()
    assert not marker.exists(), "the altered helper ran"
    assert installed.read_bytes() == source
