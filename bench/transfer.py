"""Transfer benchmark: payload throughput against a link of known rate per backend, and re-sends after a drop at 90%.

ssh and jupyter run against real servers behind the test fault proxy (token-bucket rate per direction), in a
process of its own: inside this one it would share the client's interpreter lock and bill the client's CPU work
as lost link time (see tests/servers/proxy.py ProxyProcess);
cgpu runs the stand-in CLI with its own rate fault (one link shared by its concurrent calls).
Efficiency = payload bytes/s / link bytes/s, so the base64-bound directions (jupyter uploads through
the contents API, cgpu both ways) top out at 0.75; jupyter downloads are raw (ranged GETs of /files/).
cgpu is also measured against the client itself on the same file in the same run: gpuferry's upload
over one raw `cgpu copy`, its download over one raw `cgpu run "base64 FILE"` (cgpu has no download).
Usage: python bench/transfer.py [--size-mb 256] [--rate-mb 32]
       python bench/transfer.py --real-cgpu [--size-mb 64]   # only cgpu: the `cgpu` on PATH, its own
                                                           # runtime (e.g. shared/tools/realcgpu's harness)
       python bench/transfer.py --cgpu-only [--size-mb 64]   # only cgpu vs raw cgpu, on the stand-in
"""

from __future__ import annotations

import argparse
import base64
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from servers.fixtures import write_cgpu_login  # noqa: E402
from servers.far_python import use_plain_python3  # noqa: E402
from servers.jupyter import running_jupyter  # noqa: E402
from servers.proxy import running_proxy, running_proxy_process  # noqa: E402
from servers.sshd import running_sshd  # noqa: E402

from gpuferry.backends.base import Backend  # noqa: E402
from gpuferry.backends.cgpu import CgpuBackend  # noqa: E402
from gpuferry.backends.jupyter import JupyterBackend  # noqa: E402
from gpuferry.backends.registry import features_of  # noqa: E402
from gpuferry.backends.ssh import SshBackend  # noqa: E402
from gpuferry.errors import GpuferryError  # noqa: E402
from gpuferry.transfer import TransferOptions, TransferProgress, download, upload  # noqa: E402
from gpuferry.transfer.far_side import FarSide  # noqa: E402

FAKE_CGPU = ROOT / "tests" / "fakes" / "cgpu"
MB = 1_000_000
#: the size the full run compares cgpu against the raw client at (issue 11's figure)
RAW_COMPARE_MB = 64


class Link:
    """How to open a backend of one kind and how to drop its link."""

    def __init__(self, kind, remote_dir, opener, drop, heal, proxy=None):  # type: ignore[no-untyped-def]
        self.kind, self.remote_dir, self.open, self.drop, self.heal = kind, remote_dir, opener, drop, heal
        #: the fault proxy in front of the server, whose byte counts are what crossed the link
        self.proxy = proxy
        #: bytes a clean upload put on the link (measured by ``measure``), to tell re-sent bytes from the rest
        self.clean_upload_wire = 0

    def wire_up(self) -> int:
        return self.proxy.forwarded_by["up"] if self.proxy is not None else 0


def measure(link: Link, source: Path, work: Path, rate: float) -> dict[str, float]:
    remote_dir = link.remote_dir
    backend = link.open()
    try:
        wire_before = link.wire_up()
        sent = upload(backend, source, "bench.bin")
        link.clean_upload_wire = link.wire_up() - wire_before
        back = work / f"back-{link.kind}.bin"
        received = download(backend, "bench.bin", back)
        assert received.sha256 == sent.sha256
        back.unlink()
    finally:
        backend.close()
    (remote_dir / "bench.bin").unlink()
    return {"up": sent.bytes_sent / sent.seconds / rate, "down": received.bytes_sent / received.seconds / rate,
            "up_mbs": sent.bytes_sent / sent.seconds / MB, "down_mbs": received.bytes_sent / received.seconds / MB}


def raw_cgpu(executable: str, env: dict[str, str], source: Path, remote_root: str, remote_dir: str) -> dict[str, float]:
    """Bytes/s of the client itself on ``source``: one `cgpu copy` up, one `cgpu run "base64 FILE"` down."""
    size = source.stat().st_size
    remote = f"{remote_dir.rstrip('/')}/raw-{uuid.uuid4().hex[:8]}.bin"
    destination = remote[len(remote_root.rstrip("/")) + 1:]  # cgpu copy's DEST: relative to the Jupyter root
    started = time.monotonic()
    subprocess.run([executable, "copy", str(source), destination], env=env, check=True, capture_output=True)
    up = size / (time.monotonic() - started)
    started = time.monotonic()
    printed = subprocess.run([executable, "run", f"base64 {shlex.quote(remote)}"], env=env, check=True,
                             capture_output=True).stdout
    body = b"".join(line for line in printed.splitlines() if not line.startswith(b"Authenticated as"))
    received = len(base64.b64decode(body))
    down = size / (time.monotonic() - started)
    subprocess.run([executable, "run", f"rm -f {shlex.quote(remote)}"], env=env, check=True, capture_output=True)
    if received != size:
        raise SystemExit(f"raw cgpu download returned {received} bytes of {size}")
    return {"up_mbs": up / MB, "down_mbs": down / MB}


def cgpu_against_raw(backend_factory, executable: str, env: dict[str, str], source: Path, work: Path,
                     remote_root: str, remote_dir: str) -> dict[str, float]:
    """gpuferry's cgpu upload and download rates over the raw client's on the same file, in one run.

    The upload is the one a job makes of its input (``check_later``): one copy, whose check (size and
    sha256, then the rename into place) rides on the worker's start, a command the job makes anyway.
    Here nothing starts a worker, so the same check runs as a call of its own after the timed upload;
    its time is shown, and ``up_checked`` is the ratio had it cost a call (an upload checked on its own).
    """
    backend = backend_factory()
    remote = f"{remote_dir}/ferry.bin"
    try:
        started = time.monotonic()
        sent = upload(backend, source, remote, check_later=True)
        up_seconds = time.monotonic() - started
        started = time.monotonic()
        if sent.pending_check is not None:
            settled = FarSide(backend).call("settle_whole", sent.pending_check.arguments(), 600, path=remote)
            if not settled.get("done"):
                raise SystemExit(f"the uploaded file did not settle: {settled}")
        check_seconds = time.monotonic() - started
        size = source.stat().st_size
        back = work / "back-raw.bin"
        started = time.monotonic()
        received = download(backend, remote, back)
        down = size / (time.monotonic() - started)
        assert received.sha256 == sent.sha256
        back.unlink()
        backend.remove(remote)
    finally:
        backend.close()
    raw = raw_cgpu(executable, env, source, remote_root, remote_dir)
    ferry = {"up_mbs": size / up_seconds / MB, "checked_mbs": size / (up_seconds + check_seconds) / MB,
             "down_mbs": down / MB}
    print(f"cgpu     gpuferry upload {ferry['up_mbs']:6.1f} MB/s (its check at the worker's start; as a call "
          f"of its own {check_seconds:.1f} s, {ferry['checked_mbs']:.1f} MB/s), raw `cgpu copy` "
          f"{raw['up_mbs']:6.1f} MB/s; gpuferry download {ferry['down_mbs']:6.1f} MB/s, raw `cgpu run base64` "
          f"{raw['down_mbs']:6.1f} MB/s", flush=True)
    return {"up": ferry["up_mbs"] / raw["up_mbs"], "up_checked": ferry["checked_mbs"] / raw["up_mbs"],
            "down": ferry["down_mbs"] / raw["down_mbs"]}


def over_raw_result(ratio: dict[str, float]) -> str:
    return (f"cgpu_up_over_raw={ratio['up']:.2f} cgpu_down_over_raw={ratio['down']:.2f} "
            f"cgpu_up_checked_alone_over_raw={ratio['up_checked']:.2f}")


def real_cgpu_main(size_mb: int) -> None:
    """Only cgpu, against the `cgpu` on PATH and the runtime it reaches (defaults: Colab's layout)."""
    executable = shutil.which("cgpu")
    if executable is None:
        raise SystemExit("--real-cgpu: no cgpu on PATH")
    work = Path(tempfile.mkdtemp(prefix="gpuferry-bench-"))
    remote_dir = f"/content/gpuferry-bench-{uuid.uuid4().hex[:8]}"
    try:
        source = work / "source.bin"
        source.write_bytes(os.urandom(size_mb * MB))
        backend = CgpuBackend()
        backend.mkdir(remote_dir)
        try:
            ratio = cgpu_against_raw(CgpuBackend, executable, dict(os.environ), source, work, "/", remote_dir)
        finally:
            backend.remove(remote_dir, recursive=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"RESULT {over_raw_result(ratio)}")


def fake_cgpu_main(size_mb: int, rate: float) -> None:
    """Only cgpu vs raw cgpu, on the stand-in with its link at ``rate`` (no sshd or jupyter needed)."""
    work = Path(tempfile.mkdtemp(prefix="gpuferry-bench-"))
    try:
        source = work / "source.bin"
        source.write_bytes(os.urandom(size_mb * MB))
        runtime, config = work / "cgpu" / "runtime", work / "cgpu" / "config"
        remote = runtime / "content" / "gpuferry" / "bench"
        remote.mkdir(parents=True)
        write_cgpu_login(config)
        (runtime / "faults.json").write_text('{"rate": %f}' % rate)
        env = {**os.environ, "CGPU_FAKE_RUNTIME": str(runtime), "CGPU_CONFIG_DIR": str(config)}
        ratio = cgpu_against_raw(lambda: CgpuBackend(executable=str(FAKE_CGPU), config_dir=str(config),
                                                     remote_root=str(runtime), process_env=env),
                                 str(FAKE_CGPU), env, source, work, str(runtime), str(remote))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"RESULT {over_raw_result(ratio)}")


def resent_after_drop(link: Link, source: Path) -> tuple[int, float, int]:
    """Upload, drop the link at 90%, resume with a fresh backend: (bytes re-sent, chunks re-sent, chunk size).

    ssh: measured on the wire, what the interrupted and the resumed upload put on the link together, less
    what a clean upload of the same file did. Jupyter: the file bytes both uploads handed to the link (its
    uploads go raw through a kernel or as base64 PUTs while that kernel starts, so wire bytes say nothing
    of payload), less the file's size. cgpu, whose copies land whole or not at all: the transfer reports'
    count, where a cut copy counts in full.
    """
    remote_dir = link.remote_dir
    wire_before = link.wire_up()
    size = source.stat().st_size
    fired: list[int] = []
    options = TransferOptions(backoff_initial=0.1).for_backend(features_of(link.kind))
    chunk = options.chunk_size or 1
    handed: list[int] = []  # jupyter: file bytes each backend handed to the link

    def hook(progress: TransferProgress) -> None:
        # cgpu: each copy is its own connection, so drop the next one once it is the copy that crosses 90%
        if link.kind == "cgpu" and not fired and progress.done_bytes + chunk >= 0.9 * size:
            fired.append(progress.done_bytes)
            link.drop(chunk // 2)

    def close(backend: Backend) -> None:
        if isinstance(backend, JupyterBackend):
            handed.append(sum(backend.payload_sent.values()))
        backend.close()

    moved = 0
    backend = link.open()
    if link.kind != "cgpu":
        # the proxy counts bytes on the wire: cut when 90% of the payload has passed, at the clean upload's
        # ratio of wire to payload bytes
        link.drop(int(0.9 * link.clean_upload_wire))
    try:
        report = upload(backend, source, "drop.bin", options=options, on_progress=hook)
        moved += report.bytes_sent
    except GpuferryError as error:
        moved += error.transfer_report.bytes_sent  # type: ignore[attr-defined]
        close(backend)
        link.heal()
        backend = link.open()
        moved += upload(backend, source, "drop.bin", options=options).bytes_sent
    finally:
        close(backend)
        link.heal()
    (remote_dir / "drop.bin").unlink()
    if link.kind == "jupyter":
        resent = max(0, sum(handed) - size)
    elif link.proxy is not None:
        resent = max(0, link.wire_up() - wire_before - link.clean_upload_wire)
    else:
        resent = moved - size
    return resent, resent / chunk, chunk


def main() -> None:
    use_plain_python3()  # far-side commands start python3 as a real far side does, not through a shim
    parser = argparse.ArgumentParser(description=__doc__)
    # 256 MB by default: a video worth moving is hundreds of MB to a few GB, and each transfer's fixed
    # far-side steps (survey, final commit, whole-file hash: 0.3-0.5 s) would weigh 3-4x more at 64 MB
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--rate-mb", type=float, default=32.0)
    parser.add_argument("--real-cgpu", action="store_true", help="only cgpu: the real client on PATH, vs raw cgpu")
    parser.add_argument("--cgpu-only", action="store_true", help="only cgpu vs raw cgpu, on the stand-in")
    parser.add_argument("--proxy-in-process", action="store_true",
                        help="the link proxies in this process, as before 2026-11-30 (to compare with older records)")
    args = parser.parse_args()
    if args.real_cgpu:
        real_cgpu_main(args.size_mb)
        return
    if args.cgpu_only:
        fake_cgpu_main(args.size_mb, args.rate_mb * MB)
        return
    rate = args.rate_mb * MB
    link_proxy = running_proxy if args.proxy_in_process else running_proxy_process
    work = Path(tempfile.mkdtemp(prefix="gpuferry-bench-"))
    try:
        source = work / "source.bin"
        with open(source, "wb") as handle:
            for _ in range(args.size_mb):
                handle.write(os.urandom(MB))
        # each far-side folder where that backend's job folders live: for cgpu inside the runtime's
        # /content (cgpu copy writes chunks there), for jupyter inside the server's root (its contents API
        # and /files/ reach there)
        runtime = work / "cgpu" / "runtime"
        remote = runtime / "content" / "gpuferry" / "bench"
        remote.mkdir(parents=True)
        results: dict[str, dict[str, float]] = {}
        resent_chunks: dict[str, float] = {}
        with running_sshd(work / "sshd") as sshd, running_jupyter(work / "jupyter") as jupyter, \
                link_proxy(sshd.port, rate) as ssh_proxy, \
                link_proxy(int(jupyter.url.rsplit(":", 1)[1]), rate) as jupyter_proxy:
            jupyter_remote = jupyter.root_dir / "gpuferry" / "bench"
            jupyter_remote.mkdir(parents=True)
            key_type, key = sshd.host_public_key.read_text().split()[:2]
            known = work / "known_hosts"
            known.write_text(f"[127.0.0.1]:{ssh_proxy.port} {key_type} {key}\n")
            config = work / "cgpu" / "config"
            write_cgpu_login(config)
            faults = runtime / "faults.json"

            def cgpu_backend() -> CgpuBackend:
                return CgpuBackend(executable=str(FAKE_CGPU), config_dir=str(config), remote_root=str(runtime),
                                   workdir=str(remote), process_env={"CGPU_FAKE_RUNTIME": str(runtime)})

            def cgpu_rate() -> None:
                faults.write_text('{"rate": %f}' % rate)

            def cgpu_drop(nbytes: int) -> None:
                faults.write_text('{"rate": %f, "disconnect_after_bytes": %d, "once": true}' % (rate, nbytes))

            links = [
                Link("ssh", remote, lambda: SshBackend(host="127.0.0.1", port=ssh_proxy.port, username=sshd.username,
                                               client_keys=[str(sshd.client_key)], known_hosts=str(known),
                                               config_files=[str(sshd.empty_ssh_config)], workdir=str(remote)),
                     ssh_proxy.cut_after, ssh_proxy.reset, ssh_proxy),
                Link("jupyter", jupyter_remote, lambda: JupyterBackend(url=f"http://127.0.0.1:{jupyter_proxy.port}",
                                                                       token=jupyter.token(),
                                                                       workdir=str(jupyter_remote)),
                     jupyter_proxy.cut_after, jupyter_proxy.reset, jupyter_proxy),
                Link("cgpu", remote, cgpu_backend, cgpu_drop, cgpu_rate),
            ]
            cgpu_rate()
            print(f"file {args.size_mb} MB, link {args.rate_mb:g} MB/s per direction (raw bytes on the wire)")
            for link in links:
                results[link.kind] = measure(link, source, work, rate)
                row = results[link.kind]
                resent, chunks, chunk = resent_after_drop(link, source)
                resent_chunks[link.kind] = chunks
                print(f"{link.kind:8s} upload {row['up_mbs']:6.1f} MB/s eff {row['up']:.2f}   "
                      f"download {row['down_mbs']:6.1f} MB/s eff {row['down']:.2f}   "
                      f"drop at 90%: re-sent {resent} bytes = {chunks:.2f} chunk of {chunk // (1 << 20)} MiB",
                      flush=True)
            cgpu_env = {**os.environ, "CGPU_FAKE_RUNTIME": str(runtime), "CGPU_CONFIG_DIR": str(config)}
            # against the raw client at issue 11's 64 MB: the stand-in relays a raw `cgpu run base64` at about
            # 1 MB/s, so the whole file would add minutes and measure the stand-in's relay, not gpuferry
            raw_source = source
            if args.size_mb > RAW_COMPARE_MB:
                raw_source = work / "raw-compare.bin"
                raw_source.write_bytes(os.urandom(RAW_COMPARE_MB * MB))
            over_raw = cgpu_against_raw(cgpu_backend, str(FAKE_CGPU), cgpu_env, raw_source, work, str(runtime),
                                        str(remote))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    eff = {kind: min(row["up"], row["down"]) for kind, row in results.items()}
    print("efficiency per backend = the lower of upload and download")
    print(f"RESULT ssh_eff={eff['ssh']:.2f} jupyter_eff={eff['jupyter']:.2f} cgpu_eff={eff['cgpu']:.2f} "
          f"resent_chunks_max={max(resent_chunks.values()):.2f} {over_raw_result(over_raw)}")


if __name__ == "__main__":
    main()
