"""`python -m gpuferry.worker.preview DIR`: run the models of a preview on the frames in DIR (far side).

DIR holds request.json ({"models", "scale", "engine", "device", "frames": [names of PNGs]}); the
outputs are written as out-<model>-<n>.png and the engines and seconds per frame as result.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from gpuferry.errors import GpuferryError
from gpuferry.pipeline.preview import local_runner


def main(argv: list[str] | None = None) -> int:
    folder = Path((argv or sys.argv[1:])[0])
    request = json.loads((folder / "request.json").read_text())
    frames = [np.asarray(Image.open(folder / name).convert("RGB")) for name in request["frames"]]
    runner = local_runner(request.get("engine", "auto"), request.get("device", "auto"))
    try:
        ran = runner(request["models"], frames, int(request["scale"]), lambda event: None)
    except GpuferryError as exc:
        (folder / "result.json").write_text(json.dumps({"error": exc.to_json()}))
        return 1
    models = []
    for m, (timing, outputs) in enumerate(ran):
        for i, picture in enumerate(outputs):
            Image.fromarray(picture).save(folder / f"out-{m}-{i}.png", compress_level=1)
        models.append({"model": timing.model, "engine": timing.engine, "seconds": timing.seconds})
    (folder / "result.json").write_text(json.dumps({"models": models}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
