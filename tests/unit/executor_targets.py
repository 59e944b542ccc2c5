"""Targets that test_executor runs inside executor workers."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


def echo(payload: Any, ctx: Any) -> Any:
    return payload


def fail(payload: str, ctx: Any) -> None:
    raise ValueError(payload)


def exit_now(payload: int, ctx: Any) -> None:
    os._exit(payload)


def kill_self(payload: int, ctx: Any) -> None:
    os.kill(os.getpid(), payload)
    time.sleep(5)


def segfault(payload: Any, ctx: Any) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core dump
    ctypes.string_at(0)


def sleep(payload: float, ctx: Any) -> float:
    ctx.log("started")
    time.sleep(payload)
    return payload


def stubborn(payload: float, ctx: Any) -> None:
    """Ignores SIGTERM, so only SIGKILL stops it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ctx.log("started")
    time.sleep(payload)


def hog(payload: int, ctx: Any) -> str:
    """Allocate `payload` MiB at a time until MemoryError (gives up after 64 GiB)."""
    chunks = [bytes(payload << 20) for _ in range((64 << 10) // payload)]
    return f"allocated {len(chunks)} chunks"


def chatty(payload: int, ctx: Any) -> int:
    for i in range(payload):
        ctx.log(f"line {i}")
        ctx.metric("loss", i, 1.0 / (i + 1))
        ctx.progress((i + 1) / payload)
    return payload


def span(payload: float, ctx: Any) -> list[float]:
    start = time.monotonic()
    time.sleep(payload)
    return [start, time.monotonic()]


def describe(payload: str, ctx: Any) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "env": os.environ.get(payload),
        "sigint_ignored": signal.getsignal(signal.SIGINT) == signal.SIG_IGN,
        "preloaded": "colorsys" in sys.modules,
    }


def digest(payload: bytes, ctx: Any) -> list[Any]:
    """The length and SHA-256 of the bytes received."""
    import hashlib

    return [len(payload), hashlib.sha256(payload).hexdigest()]


def use_workdir(payload: str, ctx: Any) -> str:
    (ctx.workdir / "file.txt").write_text(payload)
    return str(ctx.workdir)


def unserialisable(payload: Any, ctx: Any) -> object:
    return object()


def big(payload: int, ctx: Any) -> str:
    """Log one line and return a string, each `payload` bytes long."""
    ctx.log("l" * payload)
    return "v" * payload


def _grandchild(pid_file: str, ignore_term: bool) -> None:
    """Start `sleep 60` (ignoring SIGTERM if asked) and write its pid to `pid_file`."""
    old = signal.signal(signal.SIGTERM, signal.SIG_IGN) if ignore_term else None
    child = subprocess.Popen(["sleep", "60"])  # an ignored signal stays ignored across exec
    if old is not None:
        signal.signal(signal.SIGTERM, old)
    Path(pid_file).write_text(str(child.pid))


def family(payload: str, ctx: Any) -> None:
    """Start a grandchild process, then sleep; SIGTERM ends both."""
    _grandchild(payload, ignore_term=False)
    ctx.log("started")
    time.sleep(60)


def stubborn_child(payload: str, ctx: Any) -> None:
    """Start a grandchild that ignores SIGTERM, then sleep; SIGTERM ends only the worker."""
    _grandchild(payload, ignore_term=True)
    ctx.log("started")
    time.sleep(60)


def stubborn_family(payload: str, ctx: Any) -> None:
    """Worker and grandchild both ignore SIGTERM: only SIGKILL ends them."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _grandchild(payload, ignore_term=False)
    ctx.log("started")
    time.sleep(60)


def fresh_pages(payload: list[int], ctx: Any) -> int:
    """Allocate, fill and free a buffer of each size in MiB in turn; the minor page faults."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for mib in payload:
        buf = bytearray(mib << 20)  # zeroed: every page touched
        del buf
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


_HELD: list[int] = []  # descriptors holding on_tmpfs's directories


def on_tmpfs(payload: list[str], ctx: Any) -> None:
    """Write into a directory on payload[0] named as a worker's scratch on tmpfs is, then wait
    (payload[1] "wait"), or wait ignoring SIGTERM ("stubborn": only SIGKILL ends it), or exit
    at once ("exit"). The directory is left for others to remove; it is held while this
    worker lives, as a worker holds its own (`scratch.on_tmpfs`)."""
    from peer.jobs import scratch

    root, how = payload
    out = Path(root) / f"{scratch.PREFIX}{os.getpid()}-run" / "output"
    out.mkdir(parents=True)
    _HELD.append(scratch.hold(out.parent))  # (released as the worker ends)
    (out / "f.bin").write_bytes(b"x" * 4096)
    if how == "exit":
        os._exit(3)
    if how == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ctx.log("started")
    time.sleep(60)


def fill_workdir(payload: int, ctx: Any) -> None:
    """Write `payload` KiB in the run's work directory, log "started", then wait."""
    fill_workdir_only(payload, ctx)
    ctx.log("started")
    time.sleep(60)


def _cue(path: str) -> None:
    """Wait (up to 30 s) until the file `path` exists."""
    for _ in range(3000):
        if os.path.exists(path):
            return
        time.sleep(0.01)


def fill_until(payload: list[Any], ctx: Any) -> None:
    """Write payload[0] KiB in the run's work directory, log "started", then return once the
    file payload[1] exists."""
    fill_workdir_only(payload[0], ctx)
    ctx.log("started")
    _cue(payload[1])


def fill_after(payload: list[Any], ctx: Any) -> None:
    """Log "started", write payload[0] KiB in the run's work directory once the file
    payload[1] exists, log "filled", then wait."""
    ctx.log("started")
    _cue(payload[1])
    fill_workdir_only(payload[0], ctx)
    ctx.log("filled")
    time.sleep(60)


def fill_workdir_only(payload: int, ctx: Any) -> None:
    (ctx.workdir / "big.bin").write_bytes(os.urandom(payload << 10))
    os.fsync(os.open(ctx.workdir / "big.bin", os.O_RDONLY))  # its blocks allocated


def fill_files(payload: int, ctx: Any) -> None:
    """Write `payload` small files in the run's work directory, log "started", then wait."""
    for i in range(payload):
        (ctx.workdir / f"f{i}").write_bytes(b"x")
    ctx.log("started")
    time.sleep(60)


def stall_trash(payload: Any, ctx: Any) -> str:
    """Keep this worker's later run directories, once moved away, from its removing thread
    (as a worker killed before that thread got to them), and use a work directory."""
    import queue

    from peer.jobs import executor

    executor._TRASH._pid = os.getpid()  # (no thread takes from this queue)
    executor._TRASH._queue = queue.SimpleQueue()
    return use_workdir(payload, ctx)


def forge_frames(payload: list[Any], ctx: Any) -> None:
    """Write `payload` to the executor's pipe in one write (one read takes all): each tuple
    as a frame of its pickle ("RUN" in it standing for this run's id), each bytes as is;
    then wait to be killed."""
    import pickle

    from peer.jobs import executor

    def frame(item: Any) -> bytes:
        if isinstance(item, bytes):
            return item
        data = pickle.dumps(tuple(ctx._run_id if v == "RUN" else v for v in item))
        return executor._FRAME.pack(len(data)) + data

    os.write(ctx._chan._fd, b"".join(map(frame, payload)))
    time.sleep(60)


def flood(payload: list[Any], ctx: Any) -> int:
    """Write payload[0] log frames ("0", "1", ...) to the executor's pipe in one write, its
    pipe first enlarged to hold them all (so the executor's next read finds them all there),
    then create the file payload[1] and return the count."""
    import fcntl
    import pickle

    from peer.jobs import executor

    count, cue = payload
    frames = []
    for i in range(count):
        data = pickle.dumps(("m", ctx._run_id, "log", (str(i),)))
        frames.append(executor._FRAME.pack(len(data)) + data)
    blob = b"".join(frames)
    fcntl.fcntl(ctx._chan._fd, fcntl.F_SETPIPE_SZ, len(blob) + 4096)
    os.write(ctx._chan._fd, blob)
    Path(cue).write_text("written")
    return int(count)


def done_then_exit(payload: Any, ctx: Any) -> None:
    """Send this run's 'done' (value `payload`) as the worker would, wait until the executor
    sends this worker its next run, then exit without reading it."""
    import pickle
    import select

    from peer.jobs import executor

    frame = sys._getframe()
    while frame.f_code is not executor._worker_main.__code__:
        frame = frame.f_back  # type: ignore[assignment]
    requests = frame.f_locals["rx"].fileno()
    data = pickle.dumps(("done", ctx._run_id, True, json.dumps(payload), None, None, "ok"))
    os.write(ctx._chan._fd, executor._FRAME.pack(len(data)) + data)
    select.select([requests], [], [], 30)
    os._exit(3)


class _TimeSpec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]


class _ITimerSpec(ctypes.Structure):
    _fields_ = [("interval", _TimeSpec), ("value", _TimeSpec)]


class _SigEvent(ctypes.Structure):  # Linux's struct sigevent (64 bytes)
    _fields_ = [("value", ctypes.c_void_p), ("signo", ctypes.c_int), ("notify", ctypes.c_int),
                ("pad", ctypes.c_int * 12)]


def sigterm_in_c(payload: int, ctx: Any) -> None:
    """Have a timer SIGTERM this worker 5 ms into C code that never checks for signals (a
    `payload` MiB bytes multiply), then sleep: the signal arrives after the interpreter's
    last check for one and before the sleep starts, as a kill can."""
    libc = ctypes.CDLL(None, use_errno=True)
    timer = ctypes.c_void_p()
    event = _SigEvent(None, signal.SIGTERM, 0)  # SIGEV_SIGNAL
    if libc.timer_create(time.CLOCK_MONOTONIC, ctypes.byref(event), ctypes.byref(timer)):
        raise OSError(ctypes.get_errno(), "timer_create")
    due = _ITimerSpec(_TimeSpec(0, 0), _TimeSpec(0, 5_000_000))
    if libc.timer_settime(timer, 0, ctypes.byref(due), None):
        raise OSError(ctypes.get_errno(), "timer_settime")
    data = b"x" * (payload << 20)
    time.sleep(60)
    del data


def drop_wakeup_fd(payload: Any, ctx: Any) -> None:
    """Use an asyncio loop's signal handler, as a task may: adding one takes the signal
    wake-up fd, and closing the loop leaves none."""
    import asyncio

    loop = asyncio.new_event_loop()
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    loop.close()


def flood_for(payload: float, ctx: Any) -> int:
    """Write tiny log frames ("x") to the executor's pipe without pause for `payload`
    seconds, 64 KiB at a time; the count (scripts/bench_executor_flood.py)."""
    import pickle

    from peer.jobs import executor

    data = pickle.dumps(("m", ctx._run_id, "log", ("x",)))
    frame = executor._FRAME.pack(len(data)) + data
    per = (64 << 10) // len(frame)
    blob, count = frame * per, 0
    end = time.monotonic() + payload
    while time.monotonic() < end:
        view = memoryview(blob)
        while view:
            view = view[os.write(ctx._chan._fd, view):]
        count += per
    return count


def _pipe_fds(inode: str | None = None) -> dict[int, tuple[str, bool]]:
    """This process's pipe descriptors: fd -> (its pipe, whether it is a read end)."""
    out = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/self/fd/{name}")
            if link.startswith("pipe:"):
                flags = int(Path(f"/proc/self/fdinfo/{name}").read_text().split("flags:")[1]
                            .split()[0], 8)
                out[int(name)] = (link, flags & os.O_ACCMODE == os.O_RDONLY)
    return out


def _watcher_switches() -> int:
    """How often the worker's watcher thread (executor._watch) has blocked so far."""
    [tid] = [t.native_id for t in threading.enumerate() if "_watch" in t.name]
    status = Path(f"/proc/self/task/{tid}/status").read_text()
    return int(status.split("voluntary_ctxt_switches:")[1].split()[0])


def _watcher_handled(before: int) -> None:
    """Return once the watcher thread has woken since it had blocked `before` times and
    blocks again (it has handled what woke it)."""
    for _ in range(5000):
        [tid] = [t.native_id for t in threading.enumerate() if "_watch" in t.name]
        state = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if _watcher_switches() > before and state == "S":
            return
        time.sleep(0.001)
    raise AssertionError("the watcher thread never woke")


def own_the_wakeup_pipes_number(payload: Any, ctx: Any) -> list[int]:
    """Put a pipe of the task's own, holding the byte 15 (SIGTERM's number), on the number
    of the worker's signal wake-up pipe's read end (as closing it and opening another file
    would), then receive a signal: what the pipe still holds once the watcher has woken."""
    wakeup_w = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup_w, warn_on_full_buffer=False)
    pipes = _pipe_fds()
    [number] = [fd for fd, (p, reads) in pipes.items() if p == pipes[wakeup_w][0] and reads]
    r, w = os.pipe()
    os.write(w, bytes([signal.SIGTERM]))
    os.dup2(r, number)
    os.close(r)
    os.set_blocking(number, False)
    had = signal.signal(signal.SIGUSR1, lambda *a: None)
    try:
        before = _watcher_switches()
        os.kill(os.getpid(), signal.SIGUSR1)  # (its number goes to the worker's wake-up fd)
        _watcher_handled(before)
        try:
            return list(os.read(number, 16))
        except BlockingIOError:
            return []
    finally:
        signal.signal(signal.SIGUSR1, had)
        os.close(w)
        os.close(number)


def own_the_request_pipes_number(payload: Any, ctx: Any) -> None:
    """Put a pipe of the task's own (its write end left open) on the number of the worker's
    request pipe (`rx` of executor._worker_main), as closing it and opening another file
    would."""
    frame = sys._getframe()
    while frame.f_code.co_name != "_worker_main":
        frame = frame.f_back  # type: ignore[assignment]
    number = frame.f_locals["rx"].fileno()
    r, w = os.pipe()
    os.dup2(r, number)
    os.close(r)
    _LEFT_OPEN.append(w)


def own_every_copy_of_the_request_pipe(payload: Any, ctx: Any) -> str:
    """Put a pipe of the task's own on every number of the worker's request pipe's read end
    (its own and the watcher's copy: as closerange and opening files would), its write end
    closed (a watcher still watching those numbers sees a hang-up, as at the daemon's
    death), then wake the watcher with a signal, twice (after the first it has looked at
    its descriptors, the second finds them unwatched): the run's own answer, if it is still
    alive by then."""
    frame = sys._getframe()
    while frame.f_code.co_name != "_worker_main":
        frame = frame.f_back  # type: ignore[assignment]
    pipes = _pipe_fds()
    request = pipes[frame.f_locals["rx"].fileno()][0]
    for number in [fd for fd, (p, reads) in pipes.items() if p == request and reads]:
        r, w = os.pipe()
        os.dup2(r, number)
        os.close(r)
        os.close(w)
    had = signal.signal(signal.SIGUSR1, lambda *a: None)
    try:
        for _ in range(2):
            before = _watcher_switches()
            os.kill(os.getpid(), signal.SIGUSR1)  # (its number goes to the wake-up fd)
            _watcher_handled(before)
    finally:
        signal.signal(signal.SIGUSR1, had)
    return "worked on"


def close_the_wakeup_pipes_read_end(payload: int, ctx: Any) -> str:
    """Close every read end of the worker's signal wake-up pipe (as closerange would), then
    receive `payload` + 1 signals, the first once the watcher is asleep, the rest after it
    woke: what the worker printed on its stderr meanwhile."""
    wakeup_w = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup_w, warn_on_full_buffer=False)
    pipes = _pipe_fds()
    wakeup = pipes[wakeup_w][0]
    seen = []
    had = signal.signal(signal.SIGUSR1, lambda *a: seen.append(1))
    saved = os.dup(2)
    with open(ctx.workdir / "stderr", "w+b") as err:
        os.dup2(err.fileno(), 2)
        try:
            before = _watcher_switches()
            for fd in [fd for fd, (p, reads) in pipes.items() if p == wakeup and reads]:
                os.close(fd)
            main = threading.main_thread().ident
            for i in range(payload + 1):
                signal.pthread_kill(main, signal.SIGUSR1)  # (its handler runs before the
                while len(seen) <= i:  # next line, and the interpreter's report of a failed
                    time.sleep(0.001)  # write to the wake-up fd after it)
                if i == 0:
                    _watcher_handled(before)
            sys.stderr.flush()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            signal.signal(signal.SIGUSR1, had)
        err.seek(0)
        return err.read().decode()


_LEFT_OPEN: list[int] = []


def close_the_wakeup_fd(payload: Any, ctx: Any) -> int:
    """Close the worker's signal wake-up fd (the pipe's write end), as closerange would: its
    number."""
    wakeup_w = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup_w, warn_on_full_buffer=False)
    os.close(wakeup_w)
    return wakeup_w


def a_file_on_that_number_takes_a_signal(payload: int, ctx: Any) -> dict[str, Any]:
    """Open files until one takes the number `payload`, take a signal with a Python handler:
    what that file holds, and this worker's pid."""
    seen: list[int] = []
    had = signal.signal(signal.SIGUSR1, lambda *a: seen.append(1))
    files = []
    try:
        while len(files) < 64:
            files.append(open(ctx.workdir / f"f{len(files)}", "w+b"))  # noqa: SIM115
            if files[-1].fileno() >= payload:
                break
        f = files[-1]
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)
        while not seen:
            time.sleep(0.001)
        f.seek(0)
        return {"holds": f.read().hex(), "pid": os.getpid()}
    finally:
        signal.signal(signal.SIGUSR1, had)
        for f in files:
            f.close()
