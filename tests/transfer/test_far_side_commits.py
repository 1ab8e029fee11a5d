"""The far side's commit of staged chunks: a batch cut short loses none of the chunks it had done."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

from gpuferry.transfer.far_side import AGENT_PATH

CHUNK = 4096


def agent():
    """The far-side agent as the far side runs it: a stdlib module on its own."""
    spec = importlib.util.spec_from_file_location("far_side_agent", AGENT_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_commit_cut_short_leaves_every_done_chunk_recorded_or_still_staged(tmp_path: Path) -> None:
    """A cut link ends the far-side command in the middle of a batch. Before, the batch's chunks were
    copied into the partial file and their staged files removed one by one, but recorded only at the end
    of the batch: the chunks done before the cut were in neither place, and the resumed upload sent them
    again (a jupyter cut at 90 % re-sent 4.18 chunks of 4 MiB, its whole 16 MiB commit batch)."""
    far = agent()
    part, manifest, stages = tmp_path / "f.gpuferry-part", tmp_path / "f.gpuferry-part.json", tmp_path / "chunks"
    stages.mkdir()
    part.write_bytes(b"\0" * 3 * CHUNK)
    manifest.write_text(json.dumps({"kind": "gpuferry-upload", "version": 1}) + "\n")
    entries, payloads = [], []
    for index in range(3):
        data = os.urandom(CHUNK)
        payloads.append(data)
        stage = stages / f"{index:08d}"
        stage.write_bytes(data)
        entries.append({"stage": str(stage), "index": index, "offset": index * CHUNK, "length": CHUNK,
                        "sha256": hashlib.sha256(data).hexdigest()})
    # the second chunk's commit dies (here: its staged name is a folder, so reading it fails), as a
    # command killed by the cut would; the first chunk was done by then
    os.remove(entries[1]["stage"])
    os.mkdir(entries[1]["stage"])
    try:
        far.op_commit({"part": str(part), "manifest": str(manifest), "chunks": entries})
    except OSError:
        pass
    _, verified = far.read_manifest(str(manifest))
    assert verified.get(0) == entries[0]["sha256"], "the chunk committed before the cut is recorded"
    assert not Path(entries[0]["stage"]).exists()
    assert Path(entries[2]["stage"]).is_file(), "the chunk not reached is still staged, to be adopted"
    assert part.read_bytes()[:CHUNK] == payloads[0]
