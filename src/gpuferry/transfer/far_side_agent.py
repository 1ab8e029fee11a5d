"""Far-side transfer agent: survey, commit chunks, finish a partial file, hash chunks (stdlib only).

Run as ``python3 -c <this source> <operation> <json arguments>``: every path travels inside the JSON
argument, never through a shell. Prints one JSON line ``{"ok": ..., "result": ...}``. Or kept running with
``serve``: one request line in, one reply line out, until stdin closes.
The manifest is JSON lines: a header object, then one ``{"chunk": k, "sha256": h}`` per verified chunk.
"""

import fcntl
import hashlib
import json
import os
import shutil
import sys

BLOCK = 1 << 20

#: in an agent kept running (``serve``): per partial file of an upload it surveyed fresh, the sha256 of the
#: file read back from its start as far as its chunks are committed without a gap, as [bytes covered, hash,
#: {offset: length} of chunks committed beyond], so ``finish`` need not read the whole file again (a one-step
#: agent, a resumed upload or a chunk rewritten behind the covered bytes leave it to ``finish``)
RUNNING = {}  # type: dict[str, list]


def follow_commits(part, offset, length):
    """Extend the partial file's running hash with a chunk just committed (and any that waited for it)."""
    running = RUNNING.get(part)
    if running is None:
        return
    if offset < running[0]:
        del RUNNING[part]  # rewritten behind what was hashed: finish reads the file again
        return
    running[2][offset] = length
    if running[0] not in running[2]:
        return
    with open(part, "rb") as handle:
        while running[0] in running[2]:
            remaining = running[2].pop(running[0])
            handle.seek(running[0])
            while remaining > 0:
                block = handle.read(min(BLOCK, remaining))
                if not block:
                    del RUNNING[part]
                    return
                running[1].update(block)
                running[0] += len(block)
                remaining -= len(block)


def read_manifest(path):
    try:
        with open(path) as handle:
            lines = [line for line in handle.read().splitlines() if line.strip()]
    except FileNotFoundError:
        return None, {}
    if not lines:
        return None, {}
    try:
        header = json.loads(lines[0])
    except ValueError:
        return None, {}
    verified = {}
    for line in lines[1:]:
        try:
            entry = json.loads(line)
            verified[int(entry["chunk"])] = entry["sha256"]
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line from a killed writer
    return header, verified


def hash_file(path, offset=0, length=None):
    digest = hashlib.sha256()
    feed_file(digest, path, offset, length)
    return digest.hexdigest()


def feed_file(digest, path, offset=0, length=None):
    """Add ``length`` bytes of the file from ``offset`` (None: to its end) to ``digest``."""
    remaining = length
    with open(path, "rb") as handle:
        handle.seek(offset)
        while remaining is None or remaining > 0:
            block = handle.read(BLOCK if remaining is None else min(BLOCK, remaining))
            if not block:
                break
            digest.update(block)
            if remaining is not None:
                remaining -= len(block)


def op_survey(args):
    """Destination state for an upload; start a fresh manifest when the recorded source differs."""
    dest, part, manifest, chunk_dir = args["dest"], args["part"], args["manifest"], args["chunk_dir"]
    result = {"dest_size": None, "dest_sha256": None, "verified": {}}
    if os.path.isfile(dest):
        result["dest_size"] = os.path.getsize(dest)
        if result["dest_size"] == args["size"] and args.get("hash_dest"):
            result["dest_sha256"] = hash_file(dest)
            # the client compares first: an identical file needs no partial file, manifest or chunk
            # folder, and an upload that is skipped must leave nothing behind
            return result
    header, verified = read_manifest(manifest)
    RUNNING.pop(part, None)  # a resumed upload: what this agent saw before is not relied on
    if header == args["header"] and os.path.isfile(part):
        result["verified"] = {str(index): digest for index, digest in verified.items()}
    else:
        with open(part, "wb"):
            pass
        RUNNING[part] = [0, hashlib.sha256(), {}]
        write_text_atomically(manifest, json.dumps(args["header"], sort_keys=True) + "\n")
        shutil.rmtree(chunk_dir, ignore_errors=True)  # staged for another source: never to be continued
    os.makedirs(chunk_dir, exist_ok=True)
    # chunk index -> bytes staged (a cut write leaves fewer than the chunk holds)
    result["staged"] = {name.lstrip("0") or "0": os.path.getsize(os.path.join(chunk_dir, name))
                        for name in os.listdir(chunk_dir) if name.isdigit()}
    return result


def write_text_atomically(path, text):
    temporary = path + ".tmp-%d" % os.getpid()
    with open(temporary, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def commit_one(part, entry):
    """Check a staged chunk file (size, sha256) and copy it into the partial file at its offset; None when it
    fits. The staged file stays until the chunk is recorded (see ``op_commit``)."""
    stage = entry["stage"]
    try:
        size = os.path.getsize(stage)
    except FileNotFoundError:
        return MISSING
    digest = hash_file(stage)
    if size != entry["length"] or digest != entry["sha256"]:
        os.remove(stage)
        return "staged chunk has %d bytes, sha256 %s" % (size, digest[:12])
    copy_stage(part, entry)
    follow_commits(part, entry["offset"], size)
    return None


MISSING = "staged chunk is missing"


def op_commit(args):
    """Commit a batch of staged chunks (``chunks``: stage, index, offset, length, sha256); record the good ones.

    Each chunk is recorded in the manifest as soon as it is in the partial file, and only then is its
    staged file removed: a commit killed half way through a batch (a cut link ends the command) leaves
    every chunk either recorded or still staged, so a resumed upload re-sends none of them.

    A chunk whose staged file is gone but which the manifest records with the same sha256 is done: another
    commit of it got there first. That one can still be running when the link comes back (a commit whose
    command the cut left running), while the resumed upload found the chunk staged and commits it too."""
    failed = {}
    for entry in args["chunks"]:
        reason = commit_one(args["part"], entry)
        if reason == MISSING and read_manifest(args["manifest"])[1].get(int(entry["index"])) == entry["sha256"]:
            continue  # read afresh each time (a rare case): the other commit may still be recording
        if reason is not None:
            failed[str(entry["index"])] = reason
            continue
        record_chunk(args["manifest"], entry)
        os.remove(entry["stage"])
    return {"failed": failed}


def record_chunk(manifest_path, entry):
    with open(manifest_path, "a") as manifest:  # one open per chunk: chunks are megabytes
        fcntl.flock(manifest.fileno(), fcntl.LOCK_EX)
        manifest.write(json.dumps({"chunk": entry["index"], "sha256": entry["sha256"]}) + "\n")
        manifest.flush()


def copy_stage(part, entry):
    with open(part, "r+b") as target, open(entry["stage"], "rb") as source:
        target.seek(entry["offset"])
        shutil.copyfileobj(source, target, BLOCK)


def staged_whole(entry):
    try:
        return os.path.getsize(entry["stage"]) == entry["length"]
    except OSError:
        return False


def check_copied(args):
    """After a whole-file mismatch, check the chunks a finish copied in unchecked, each in its range of the
    partial file: record the ones that fit, as ``op_commit`` would have; the others failed (sent again)."""
    failed = {}
    for entry in args["chunks"]:
        digest = hash_file(args["part"], entry["offset"], entry["length"])
        if digest == entry["sha256"]:
            record_chunk(args["manifest"], entry)
        else:
            failed[str(entry["index"])] = "staged chunk has sha256 %s" % digest[:12]
        os.remove(entry["stage"])
    return failed


def op_finish(args):
    """Whole-file sha256 of the partial file; when it is the expected one, rename it into place.

    Idempotent: a finish whose reply was lost (the link dropped after the rename) finds no partial file
    and the destination in place, and checks that instead of failing on the missing file.

    The chunks it commits (``chunks``) are copied in unchecked when this agent has no running hash of the
    file (a one-call agent: cgpu): the whole file is hashed anyway, and when it matches every chunk was
    right, so each chunk's own check would only hash its bytes a second time. Only after a mismatch is
    each checked (``check_copied``). Their staged files stay until then, so a finish cut half way leaves
    them for the resumed upload to commit, checked."""
    part, dest = args["part"], args["dest"]
    if not os.path.exists(part) and os.path.isfile(dest) and os.path.getsize(dest) == args["size"]:
        digest = hash_file(dest)
        if digest == args["sha256"]:
            return {"done": True, "sha256": digest, "size": args["size"]}
    chunks = args.get("chunks") or []
    unchecked = bool(chunks) and part not in RUNNING and all(staged_whole(entry) for entry in chunks)
    if unchecked:
        for entry in chunks:
            copy_stage(part, entry)
    elif chunks:
        failed = op_commit(args)["failed"]
        if failed:
            return {"done": False, "failed": failed}
    size = os.path.getsize(part)
    if size > args["size"]:
        with open(part, "r+b") as handle:
            handle.truncate(args["size"])
        size = args["size"]
    running = RUNNING.pop(part, None)
    # every byte went in, in order, through this agent's commits: their hash is the file's
    in_order = running is not None and running[0] == size == args["size"]
    digest = running[1].hexdigest() if in_order else hash_file(part)
    if size == args["size"] and digest == args["sha256"]:
        os.replace(part, dest)
        for leftover in (args["manifest"],):
            try:
                os.remove(leftover)
            except FileNotFoundError:
                pass
        shutil.rmtree(args["chunk_dir"], ignore_errors=True)
        return {"done": True, "sha256": digest, "size": size}
    if unchecked:
        failed = check_copied(args)
        if failed:
            return {"done": False, "failed": failed}
    return {"done": False, "sha256": digest, "size": size, "failed": {}}


def op_settle_whole(args):
    """A whole file copied straight to its partial name: when its size and sha256 are the expected ones,
    rename it into place and remove what earlier tries left (manifest, staged chunks); else remove it.
    Idempotent: a settle whose reply was lost, or a relaunch carrying the same check, finds the file
    already in place and checks that instead."""
    part, dest = args["part"], args["dest"]
    try:
        size = os.path.getsize(part)
    except FileNotFoundError:
        try:
            if os.path.getsize(dest) == args["size"] and hash_file(dest) == args["sha256"]:
                return {"done": True, "sha256": args["sha256"], "size": args["size"]}
        except FileNotFoundError:
            pass
        return {"done": False, "reason": "the copied file is missing"}
    digest = hash_file(part)
    if size != args["size"] or digest != args["sha256"]:
        os.remove(part)
        return {"done": False, "reason": "the copy has %d bytes, sha256 %s" % (size, digest[:12])}
    os.replace(part, dest)
    try:
        os.remove(args["manifest"])
    except FileNotFoundError:
        pass
    shutil.rmtree(args["chunk_dir"], ignore_errors=True)
    return {"done": True, "sha256": digest, "size": size}


def op_hash_chunks(args):
    """Size, mtime, sha256 of each chunk and of the whole file, in one pass."""
    path, chunk_size = args["path"], args["chunk_size"]
    info = os.stat(path)
    whole = hashlib.sha256()
    chunks = []
    with open(path, "rb") as handle:
        while True:
            piece = hashlib.sha256()
            remaining = chunk_size
            got = 0
            while remaining > 0:
                block = handle.read(min(BLOCK, remaining))
                if not block:
                    break
                piece.update(block)
                whole.update(block)
                remaining -= len(block)
                got += len(block)
            if got == 0:
                break
            chunks.append(piece.hexdigest())
            if got < chunk_size:
                break
    return {"size": info.st_size, "mtime": info.st_mtime, "chunks": chunks, "sha256": whole.hexdigest()}


def op_forget(args):
    """Drop a chunk's record from the manifest (its bytes in the partial file proved wrong)."""
    header, verified = read_manifest(args["manifest"])
    RUNNING.clear()  # a forgotten chunk is rewritten out of order: finish reads the file again
    if header is None:
        return
    for index in args["chunks"]:
        verified.pop(int(index), None)
    lines = [json.dumps(header, sort_keys=True)]
    lines += [json.dumps({"chunk": index, "sha256": digest}) for index, digest in sorted(verified.items())]
    write_text_atomically(args["manifest"], "\n".join(lines) + "\n")
    return


def op_read(args):
    """Print a file range as base64 in short lines (line-based links carry them well) after a start line;
    with ``whole_only``, nothing when the rest of the file is longer than the range (the size says so).
    The reply: the range's length and sha256, the file's size and mtime, and with ``file_sha256`` the
    whole file's sha256: the bytes before the range are hashed on a thread while the range is sent
    (hashing lets go of the interpreter lock), the range from memory, the rest (if any) after."""
    import base64
    import threading

    with open(args["path"], "rb") as handle:
        info = os.fstat(handle.fileno())
        handle.seek(args["offset"])
        whole = not args.get("whole_only") or info.st_size - args["offset"] <= args["length"]
        data = handle.read(args["length"]) if whole else b""
    file_digest = hashlib.sha256() if args.get("file_sha256") else None
    before = None
    if file_digest is not None:
        before = threading.Thread(target=feed_file, args=(file_digest, args["path"], 0, args["offset"]))
        before.start()
    encoded = base64.b64encode(data)
    out = sys.stdout.buffer
    out.flush()
    terminal = plain_terminal_output(out.fileno())
    try:
        out.write(b"\n" + args["start"].encode("ascii") + b"\n")
        width = 4096
        for position in range(0, len(encoded), width):
            out.write(encoded[position:position + width] + b"\n")
        out.flush()
    finally:
        if terminal is not None:
            terminal()
    del encoded
    reply = {"length": len(data), "sha256": hashlib.sha256(data).hexdigest(), "size": info.st_size,
             "mtime": info.st_mtime}
    if file_digest is not None:
        before.join()
        file_digest.update(data)
        feed_file(file_digest, args["path"], args["offset"] + len(data), None)
        reply["file_sha256"] = file_digest.hexdigest()
    return reply


def plain_terminal_output(descriptor):
    """Where the output is a terminal (cgpu's, a Jupyter terminal's), switch its output processing off
    until the returned function switches it back on; else None. The kernel turns every "\\n" into "\\r\\n"
    byte by byte (a third of the CPU time a terminal spends relaying a read's 87 MB of base64), and the
    relays split lines at "\\n" and drop "\\r" either way."""
    try:
        import termios
    except ImportError:
        return None
    try:
        if not os.isatty(descriptor):
            return None
        saved = termios.tcgetattr(descriptor)
        plain = list(saved)
        plain[1] &= ~termios.OPOST
        termios.tcsetattr(descriptor, termios.TCSANOW, plain)
    except (OSError, ValueError, termios.error):
        return None

    def restore():
        try:
            termios.tcsetattr(descriptor, termios.TCSANOW, saved)
        except (OSError, termios.error):
            pass

    return restore


OPERATIONS = {
    "survey": op_survey, "commit": op_commit, "finish": op_finish,
    "hash_chunks": op_hash_chunks, "forget": op_forget, "read": op_read, "settle_whole": op_settle_whole,
}


def answer(operation, arguments):
    """The reply object for one operation: ``{"ok": true, "result": ...}`` or ``{"ok": false, "message": ...}``."""
    try:
        return {"ok": True, "result": OPERATIONS[operation](arguments)}
    except OSError as error:
        return {"ok": False, "message": "%s: %s" % (error.strerror or error, error.filename)}


#: what a kept-running agent on a terminal says once it reads requests (backends/program_sessions.py's
#: TERMINAL_READY: this file runs alone on the far side, so it cannot import it)
SERVING = "gpuferry-agent-serving"


def serve():
    """Answer requests until stdin closes: one JSON line in (``{"op": ..., "args": ...}``), one reply line
    out. One process then serves a whole transfer's steps, instead of one process start per step (over ssh
    each start is a channel, a login shell and a Python: 0.3 s). ``read`` is not served (it prints data).

    On a terminal (a Jupyter terminal's pty) it first stops the terminal from echoing and from holding input
    in lines of at most 4 KiB, then says it is ready: requests typed before that could be cut."""
    if os.isatty(0):
        import termios

        attributes = termios.tcgetattr(0)
        attributes[3] &= ~(termios.ICANON | termios.ECHO)
        attributes[6][termios.VMIN], attributes[6][termios.VTIME] = 1, 0
        termios.tcsetattr(0, termios.TCSANOW, attributes)
        sys.stdout.write("\n" + json.dumps({"ok": True, "result": SERVING}) + "\n")
        sys.stdout.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            if request["op"] == "read":
                raise ValueError("read is not served in a session")
            reply = answer(request["op"], request["args"])
        except Exception as error:  # noqa: BLE001 - the session outlives one bad request, which is answered
            reply = {"ok": False, "message": "%s: %s" % (type(error).__name__, error)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def main():
    if sys.argv[-1] == "serve":
        serve()
        return
    operation, arguments = sys.argv[-2], json.loads(sys.argv[-1])
    sys.stdout.write("\n" + json.dumps(answer(operation, arguments)) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
