"""Far-side helper: one small stdlib-only program that performs a file or process operation by name.

Sent to the far side as ``python3 -c BOOTSTRAP <source> <op> <args>`` (see helper_call.py), or run as
a script installed there or locally. Arguments arrive as base64-encoded JSON (or ``@file`` holding it,
for arguments too long to type), so no path ever meets a shell unquoted.
Replies are one JSON line ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": ..., ...}``;
the ``exec`` operation instead streams the command's merged output and exits with its exit code.
Python 3.8+, no third-party imports: it runs on whatever python3 the far side has.
"""

import base64
import errno
import hashlib
import json
import os
import shutil
import signal
import stat as stat_module
import subprocess
import sys

COPY_BLOCK = 1 << 20


def reply(ok, **fields):
    fields["ok"] = ok
    sys.stdout.write("\n" + json.dumps(fields) + "\n")
    sys.stdout.flush()


def exit_status(returncode):
    return 128 - returncode if returncode < 0 else returncode


def op_info(args):
    return {
        "cwd": os.getcwd(),
        "jupyter_root": os.environ.get("JUPYTER_SERVER_ROOT"),
        "home": os.path.expanduser("~"),
        "python": sys.version.split()[0],
    }


def op_exec(args):
    """Run argv with stdout and stderr on our stdout; kill its process group past the timeout."""
    env = dict(os.environ)
    env.update(args.get("env") or {})
    sys.stdout.flush()
    try:
        child = subprocess.Popen(
            args["argv"], cwd=args.get("cwd"), env=env, stdin=subprocess.DEVNULL,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    except FileNotFoundError as exc:
        missing = args["cwd"] if exc.filename == args.get("cwd") else args["argv"][0]
        sys.stdout.write("gpuferry-helper: not found: %s\n" % missing)
        sys.stdout.flush()
        sys.exit(127 if missing != args.get("cwd") else 1)
    except PermissionError:
        sys.stdout.write("gpuferry-helper: permission denied: %s\n" % args["argv"][0])
        sys.stdout.flush()
        sys.exit(126)
    try:
        returncode = child.wait(timeout=args.get("timeout"))
    except subprocess.TimeoutExpired:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except OSError:
            pass
        child.wait()
        sys.stdout.write("\n" + args["timeout_marker"] + "\n")
        sys.stdout.flush()
        sys.exit(124)
    sys.exit(exit_status(returncode))


def op_stat(args):
    try:
        info = os.stat(args["path"])
    except FileNotFoundError:
        return None
    return {"size": info.st_size, "mtime": info.st_mtime, "is_dir": stat_module.S_ISDIR(info.st_mode)}


def op_sha256(args):
    digest = hashlib.sha256()
    remaining = args.get("length")
    with open(args["path"], "rb") as handle:
        while remaining is None or remaining > 0:
            block = handle.read(COPY_BLOCK if remaining is None else min(COPY_BLOCK, remaining))
            if not block:
                break
            digest.update(block)
            if remaining is not None:
                remaining -= len(block)
    return digest.hexdigest()


def op_read(args):
    with open(args["path"], "rb") as handle:
        handle.seek(args.get("offset", 0))
        length = args.get("length")
        data = handle.read() if length is None else handle.read(length)
    return base64.b64encode(data).decode("ascii")


def op_splice(args):
    """Make ``path`` hold its first ``offset`` bytes followed by the staged file; remove the stage."""
    stage, path, offset = args["stage"], args["path"], args["offset"]
    if offset == 0:
        os.replace(stage, path)
        return os.stat(path).st_size
    size = os.stat(path).st_size
    if offset > size:
        os.remove(stage)
        raise OSError(errno.EINVAL, "offset %d is past the end of the file (%d bytes)" % (offset, size), path)
    with open(path, "r+b") as target, open(stage, "rb") as source:
        target.truncate(offset)
        target.seek(offset)
        shutil.copyfileobj(source, target, COPY_BLOCK)
    os.remove(stage)
    return os.stat(path).st_size


def op_listdir(args):
    return sorted(os.listdir(args["path"]))


def op_remove_many(args):
    """Remove several files or empty folders in one call; missing ones are fine."""
    for path in args["paths"]:
        op_remove({"path": path})


def op_remove(args):
    path = args["path"]
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat_module.S_ISDIR(info.st_mode):
        if args.get("recursive"):
            shutil.rmtree(path)
        else:
            os.rmdir(path)
    else:
        os.remove(path)
    return


def op_mkdir(args):
    path, mode = args["path"], args.get("mode", 0o755)
    if args.get("parents"):
        os.makedirs(path, mode, exist_ok=True)
    elif not os.path.isdir(path):
        os.mkdir(path, mode)
    return


def op_private_dirs(args):
    """Create each folder (mode 700) or vouch for an existing one: a real folder (no link), owned by this
    user, that nobody else may write (narrowed to 700 when wider). Anything else is refused: another user
    could put code or data there that we would run or trust."""
    uid = os.getuid()
    for path in args["paths"]:
        os.makedirs(path, 0o700, exist_ok=True)
        info = os.lstat(path)
        if not stat_module.S_ISDIR(info.st_mode):
            raise OSError(errno.ENOTDIR, "%s is not a real folder (a link or a file)" % path, path)
        if info.st_uid != uid:
            raise OSError(errno.EPERM, "%s is owned by uid %d, not by this user (uid %d)" % (path, info.st_uid, uid),
                          path)
        if info.st_mode & 0o077:
            os.chmod(path, 0o700)
    return


def op_rename(args):
    os.replace(args["src"], args["dst"])
    return


def write_atomically(path, text):
    temporary = "%s.tmp-%d" % (path, os.getpid())
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


LEADER_IGNORES = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)


def process_identity(pid):
    """What tells process ``pid`` apart from a later one with the same number, or None when gone.

    Linux: the boot id and the start time in clock ticks (/proc/PID/stat field 22); elsewhere the
    start time ``ps`` prints. "unknown" where neither can be read (then only the pid is checked).
    """
    if os.path.isdir("/proc/self"):
        try:
            with open("/proc/%d/stat" % pid) as handle:
                started = handle.read().rsplit(")", 1)[1].split()[19]
        except FileNotFoundError:
            return None  # /proc works: the process is gone
        except (OSError, IndexError):
            started = None
        if started is not None:
            try:
                with open("/proc/sys/kernel/random/boot_id") as handle:
                    boot = handle.read().strip()
            except OSError:
                boot = "-"
            return "linux:%s:%s" % (boot, started)
    try:
        output = subprocess.run(
            ["ps", "-o", "lstart=", "-p", str(int(pid))], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            timeout=30, check=False,
        ).stdout.decode("ascii", "replace").split()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return "ps:" + "_".join(output) if output else None


def is_same_process(pid, started):
    """Whether ``pid`` is still the process whose identity was ``started`` (True when none is given)."""
    return started is None or process_identity(pid) == started


def restore_signals():
    for number in LEADER_IGNORES:
        signal.signal(number, signal.SIG_DFL)


def op_spawn(args):
    """Fork a session leader that runs argv, records its pid, waits and records the exit code."""
    read_end, write_end = os.pipe()
    leader = os.fork()
    if leader:
        os.close(write_end)
        chunks = []
        while True:
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(read_end)
        os.waitpid(leader, os.WNOHANG)
        no_report = '{"ok": false, "error": "SpawnFailed", "message": "no report"}'
        message = json.loads(b"".join(chunks).decode() or no_report)
        if not message["ok"]:
            raise OSError(errno.ECHILD, message.get("message", "spawn failed"))
        return {"pid": message["pid"], "started": message["started"]}
    # The leader: detach from the caller's terminal, session and stdio, then supervise the command.
    try:
        os.close(read_end)
        os.setsid()
        # The leader outlives hang-ups and the group-wide TERM/INT of ``kill`` so it can record the
        # exit code; the command gets the default dispositions back (see restore_signals).
        for number in LEADER_IGNORES:
            signal.signal(number, signal.SIG_IGN)
        devnull = os.open(os.devnull, os.O_RDWR)
        for descriptor in (0, 1, 2):
            os.dup2(devnull, descriptor)
        env = dict(os.environ)
        env.update(args.get("env") or {})
        try:
            log = os.open(args["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            child = subprocess.Popen(
                args["argv"], cwd=args.get("cwd"), env=env, stdin=devnull, stdout=log, stderr=log,
                preexec_fn=restore_signals,  # noqa: PLW1509 - the forked leader runs no threads
            )
        except OSError as exc:
            failure = {"ok": False, "message": "%s: %s" % (exc.strerror or type(exc).__name__, exc.filename)}
            os.write(write_end, json.dumps(failure).encode())
            os._exit(1)
        # the pid file names this leader and its identity: a pid file outliving its process (a reboot, a
        # recycled runtime) must never get a stranger that later had the same pid killed
        started = process_identity(os.getpid())
        write_atomically(args["pid_file"], "%d %s\n" % (os.getpid(), started))
        os.write(write_end, json.dumps({"ok": True, "pid": os.getpid(), "started": started}).encode())
        os.close(write_end)
        returncode = exit_status(child.wait())
        write_atomically(args["exit_code_file"], "%d\n" % returncode)
    finally:
        os._exit(0)


def op_alive(args):
    pid = args["pid"]
    if not is_same_process(pid, args.get("started")):
        return False
    try:
        with open("/proc/%d/stat" % pid) as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def op_kill(args):
    if not is_same_process(args["pid"], args.get("started")):
        return False  # that pid now belongs to another process: leave it alone
    for target in (-args["pid"], args["pid"]):
        try:
            os.kill(target, args.get("signal", signal.SIGTERM))
            return True
        except ProcessLookupError:
            continue
    return False


def op_gpus(args):
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        text = subprocess.run(
            [smi, "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=30, check=True,
        ).stdout.decode("utf-8", "replace")
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in text.splitlines():
        fields = [field.strip() for field in line.rsplit(",", 2)]
        if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
            mebibyte = 1024 * 1024
            gpus.append({"name": fields[0], "total": int(fields[1]) * mebibyte, "free": int(fields[2]) * mebibyte})
    return gpus


def op_free_disk(args):
    return shutil.disk_usage(args["path"]).free


OPERATIONS = {
    "info": op_info, "exec": op_exec, "stat": op_stat, "sha256": op_sha256, "read": op_read,
    "splice": op_splice, "listdir": op_listdir, "remove": op_remove, "remove_many": op_remove_many, "mkdir": op_mkdir,
    "private_dirs": op_private_dirs,
    "rename": op_rename, "spawn": op_spawn, "alive": op_alive, "kill": op_kill, "gpus": op_gpus,
    "free_disk": op_free_disk,
}


def read_arguments(raw):
    """The operation's arguments: base64 JSON, or ``@path`` of a file holding it (removed once read)."""
    if raw.startswith("@"):
        with open(raw[1:], "rb") as handle:
            raw = handle.read().decode("ascii")
        os.unlink(handle.name)
    return json.loads(base64.b64decode(raw).decode("utf-8"))


def main():
    operation = sys.argv[-2]
    args = read_arguments(sys.argv[-1])
    try:
        result = OPERATIONS[operation](args)
    except OSError as exc:
        reply(False, error=type(exc).__name__, errno=exc.errno, message=exc.strerror or str(exc))
        return
    reply(True, result=result)


if __name__ == "__main__":
    main()
