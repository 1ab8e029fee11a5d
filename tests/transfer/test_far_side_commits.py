"""The far side's commit of staged chunks: a batch cut short loses none of the chunks it had done."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

from gpuferry.transfer.far_side import AGENT_PATH

from .test_faults import flip_byte

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


def staged_upload(tmp_path: Path, chunks: int) -> tuple[dict, list[dict], bytes]:
    """A surveyed upload of ``chunks`` random chunks, each staged: the names, the entries, the whole file."""
    names = {"dest": str(tmp_path / "f"), "part": str(tmp_path / "f.gpuferry-part"),
             "manifest": str(tmp_path / "f.gpuferry-part.json"), "chunk_dir": str(tmp_path / "f.gpuferry-part.chunks")}
    content = os.urandom(chunks * CHUNK - 5)
    entries = []
    for index in range(chunks):
        data = content[index * CHUNK:(index + 1) * CHUNK]
        entries.append({"stage": f"{names['chunk_dir']}/{index:08d}", "index": index, "offset": index * CHUNK,
                        "length": len(data), "sha256": hashlib.sha256(data).hexdigest(), "data": data})
    return names, entries, content


def stage(entries: list[dict]) -> list[dict]:
    for entry in entries:
        Path(entry["stage"]).write_bytes(entry["data"])
    return [{key: value for key, value in entry.items() if key != "data"} for entry in entries]


def survey(far, names: dict, size: int) -> None:  # type: ignore[no-untyped-def]
    far.op_survey({**names, "size": size, "hash_dest": False, "header": {"kind": "gpuferry-upload", "size": size}})


def test_a_kept_running_agent_finishes_from_its_commits_and_the_file_is_the_source(tmp_path: Path) -> None:
    far = agent()  # one module, as one agent kept running serves a whole upload
    names, entries, content = staged_upload(tmp_path, 4)
    survey(far, names, len(content))
    far.op_commit({"part": names["part"], "manifest": names["manifest"], "chunks": stage(entries[:3])})
    reply = far.op_finish({**names, "size": len(content), "sha256": hashlib.sha256(content).hexdigest(),
                           "chunks": stage(entries[3:])})
    assert reply["done"] and Path(names["dest"]).read_bytes() == content


def test_chunks_committed_out_of_order_are_hashed_as_the_partial_file_holds_them(tmp_path: Path) -> None:
    """Chunks committed ahead of a gap wait; once the gap is filled they are read back from the partial
    file, so what the finish checks is the file, whatever order the chunks arrived in."""
    far = agent()
    names, entries, content = staged_upload(tmp_path, 4)
    survey(far, names, len(content))
    far.op_commit({"part": names["part"], "manifest": names["manifest"], "chunks": stage([entries[1]])})
    flip_byte(Path(names["part"]), CHUNK + 1)  # damaged while it waited for chunk 0
    far.op_commit({"part": names["part"], "manifest": names["manifest"], "chunks": stage([entries[0]])})
    reply = far.op_finish({**names, "size": len(content), "sha256": hashlib.sha256(content).hexdigest(),
                           "chunks": stage(entries[2:])})
    assert not reply["done"] and not Path(names["dest"]).exists()
    # in another order, undamaged, the same finish succeeds
    again = tmp_path / "again"
    again.mkdir()
    names, entries, content = staged_upload(again, 4)
    survey(far, names, len(content))
    for index in (2, 0, 3):
        far.op_commit({"part": names["part"], "manifest": names["manifest"], "chunks": stage([entries[index]])})
    reply = far.op_finish({**names, "size": len(content), "sha256": hashlib.sha256(content).hexdigest(),
                           "chunks": stage([entries[1]])})
    assert reply["done"] and Path(names["dest"]).read_bytes() == content


def test_a_resumed_upload_never_relies_on_what_the_agent_saw_before(tmp_path: Path) -> None:
    far = agent()
    names, entries, content = staged_upload(tmp_path, 4)
    survey(far, names, len(content))
    far.op_commit({"part": names["part"], "manifest": names["manifest"], "chunks": stage(entries[:2])})
    flip_byte(Path(names["part"]), 10)  # the interrupted upload's partial file was damaged meanwhile
    survey(far, names, len(content))  # the resume: chunks 0 and 1 are recorded, the rest follows
    far.op_commit({"part": names["part"], "manifest": names["manifest"], "chunks": stage(entries[2:3])})
    reply = far.op_finish({**names, "size": len(content), "sha256": hashlib.sha256(content).hexdigest(),
                           "chunks": stage(entries[3:])})
    assert not reply["done"], "the damage must be found: the finish reads the whole file again"


def test_a_chunk_another_commit_got_to_first_is_done_not_sent_again(tmp_path: Path) -> None:
    """After a cut, the interrupted upload's commit may still run on the far side while the resumed upload
    finds the chunks staged and commits them too: whichever commit comes second finds the staged file
    gone. When the manifest records the chunk with the same sha256, it is done (before: "staged chunk is
    missing", and the resume re-sent the whole 16 MiB batch, 4.18 chunks in bench/transfer.py)."""
    far = agent()
    names, entries, content = staged_upload(tmp_path, 3)
    survey(far, names, len(content))
    batch = stage(entries)
    far.op_commit({"part": names["part"], "manifest": names["manifest"], "chunks": batch[:2]})  # the cut one
    reply = far.op_commit({"part": names["part"], "manifest": names["manifest"], "chunks": batch})  # the resume's
    assert reply["failed"] == {}
    # a chunk that is missing AND unrecorded (or recorded with other bytes) still fails
    other = dict(batch[2], index=2, sha256="0" * 64)
    assert "2" in far.op_commit({"part": names["part"], "manifest": names["manifest"], "chunks": [other]})["failed"]
    done = far.op_finish({**names, "size": len(content), "sha256": hashlib.sha256(content).hexdigest(), "chunks": []})
    assert done["done"] and Path(names["dest"]).read_bytes() == content


def test_a_finish_whose_reply_was_lost_is_done_when_asked_again(tmp_path: Path) -> None:
    """The link drops after the far side renamed the file into place: the retried finish must not fail on
    the partial file it already renamed (before: "No such file", and the upload failed at its very end)."""
    far = agent()
    names, entries, content = staged_upload(tmp_path, 2)
    survey(far, names, len(content))
    finish = {**names, "size": len(content), "sha256": hashlib.sha256(content).hexdigest(), "chunks": stage(entries)}
    assert far.op_finish(finish)["done"]
    again = far.op_finish(finish)  # the same request, retried
    assert again["done"] and again["sha256"] == finish["sha256"]
    assert Path(names["dest"]).read_bytes() == content


def test_a_one_call_finish_checks_its_chunks_once_through_the_whole_file(tmp_path: Path) -> None:
    """A one-call agent (cgpu: each step a process of its own) finishing with every chunk still staged
    copies them in unchecked and hashes the file once; when that fails, each chunk is checked in its range:
    the good ones are recorded (not sent again), the damaged one is reported, no staged file stays."""
    names, entries, content = staged_upload(tmp_path, 4)
    survey(agent(), names, len(content))
    staged = stage(entries)
    flip_byte(Path(staged[2]["stage"]), 7)  # damaged on its way in
    finish = {**names, "size": len(content), "sha256": hashlib.sha256(content).hexdigest(), "chunks": staged}
    reply = agent().op_finish(finish)  # a fresh module: nothing this agent saw before
    assert not reply["done"] and not Path(names["dest"]).exists()
    assert list(reply["failed"]) == ["2"]
    _, verified = agent().read_manifest(names["manifest"])
    assert sorted(verified) == [0, 1, 3]
    assert not any(Path(entry["stage"]).exists() for entry in staged)
    reply = agent().op_finish({**finish, "chunks": stage(entries[2:3])})  # chunk 2 sent again
    assert reply["done"] and Path(names["dest"]).read_bytes() == content
    assert not Path(names["chunk_dir"]).exists() and not Path(names["manifest"]).exists()


def test_a_one_call_finish_reads_its_bytes_for_hashing_once(tmp_path: Path) -> None:
    """Through cgpu every upload ends with such a finish: its hashing is half of what checking each chunk
    and then the whole file cost (256 MiB: 0.4 s of the far side's time, in a call the link waits on)."""
    names, entries, content = staged_upload(tmp_path, 4)
    far = agent()
    survey(far, names, len(content))
    far = agent()
    hashed: list[int] = []
    hash_file = far.hash_file

    def counting(path: str, offset: int = 0, length: int | None = None) -> str:
        hashed.append(os.path.getsize(path) - offset if length is None else length)
        return hash_file(path, offset, length)

    far.hash_file = counting
    reply = far.op_finish({**names, "size": len(content), "sha256": hashlib.sha256(content).hexdigest(),
                           "chunks": stage(entries)})
    assert reply["done"] and Path(names["dest"]).read_bytes() == content
    assert sum(hashed) == len(content)
