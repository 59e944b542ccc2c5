"""The `shell` kind, worker side: one command run by /bin/sh in a fresh work dir, its STDOUT
and STDERR the task's (bounded) log, its exit status the outcome. Runs in an executor worker
and blocks it; the command stays in the worker's process group, so the executor's timeout,
cancel and memory limit (RLIMIT_AS, inherited) reach it as they reach a Python task.
"""

from __future__ import annotations

import os
import selectors
import shlex
import stat
import subprocess
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from peer.errors import BanzaiError
from peer.jobs import confine, kinds
from tasks.registry import TaskContext, TaskDef

DEFAULT_LOG_BYTES = 10 << 20
TAIL_BYTES = 2048  # of STDERR, in the error of a failed command
_READ = 1 << 16
PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"


class CommandFailed(BanzaiError):
    """An external task's command exited non-zero (its STDERR's tail is the message)."""


class MissingSecret(BanzaiError):
    """A task refers to a secret this peer does not hold."""


def invoke(tdef: TaskDef, ctx: TaskContext, inp: Path | None, out: Path,
           params: Mapping[str, Any]) -> None:
    """Run the command with {in} and {out} replaced by the (quoted) input and output paths."""
    cfg = kinds.settings(ctx)
    inp = _input(ctx.workdir, inp)
    cwd = ctx.workdir / "cwd"
    cwd.mkdir()
    command = (params["shell"].replace("{in}", shlex.quote(str(inp)))
               .replace("{out}", shlex.quote(str(out))))
    env = {"PATH": PATH, "HOME": str(cwd), "LANG": "C.UTF-8", "TMPDIR": str(cwd),
           "BANZAI_IN": str(inp), "BANZAI_OUT": str(out)}
    secrets = resolve_env(params.get("env") or {}, cfg, env)
    argv = ["/bin/sh", "-c", command]
    if cfg.get("confine"):  # (the peer's: None where bwrap cannot confine, said at its start)
        argv = confine.wrap(argv, cfg["confine"], ctx.workdir)
    try:
        run_process(argv, ctx, cwd=cwd, env=env,
                    stdin=params.get("stdin", ""), secrets=secrets,
                    max_log_bytes=int(cfg.get("log_max_bytes", DEFAULT_LOG_BYTES)))
    finally:
        writable(inp)  # so that the run dir can be removed


def _input(workdir: Path, inp: Path | None) -> Path:
    """The input, read-only (an empty directory when the task has none)."""
    if inp is None:
        inp = workdir / "input"
        inp.mkdir(exist_ok=True)
    read_only(inp)
    return inp


def read_only(top: Path) -> None:
    """Remove write permission from a file or tree (a command cannot change its input)."""
    if top.is_dir():
        for d, _, files in os.walk(top):
            for f in files:
                os.chmod(os.path.join(d, f), 0o444)
        for d, _, _ in os.walk(top, topdown=False):
            os.chmod(d, 0o555)
    else:
        os.chmod(top, 0o444)


def writable(top: Path) -> None:
    """Give write permission back to the owner (directories only: enough to remove them)."""
    if top.is_dir():
        for d, _, _ in os.walk(top):
            os.chmod(d, os.stat(d).st_mode | stat.S_IWUSR)


def resolve_env(spec: Mapping[str, Any], cfg: Mapping[str, Any], env: dict[str, str]
                ) -> list[str]:
    """Add a task's env to `env`, secrets by value from the peer's settings; returns the
    secret values (redacted from the log)."""
    held: Mapping[str, str] = cfg.get("secrets") or {}
    values: list[str] = []
    for name, v in spec.items():
        if isinstance(v, Mapping):
            secret = v["secret"]
            if secret not in held:
                raise MissingSecret(f"env.{name}: this peer holds no secret {secret!r} "
                                    "(--secrets-file)", field=f"env.{name}")
            env[name] = held[secret]
            values.append(held[secret])
        else:
            env[name] = str(v)
    return [v for v in values if v]


class _Log:
    """The task's log: lines to ctx.log up to max_bytes, secrets redacted, then a note."""

    def __init__(self, ctx: TaskContext, secrets: Sequence[str], max_bytes: int) -> None:
        self.ctx = ctx
        self.secrets = sorted(secrets, key=len, reverse=True)
        self.left = max_bytes
        self.dropped = 0
        self.partial = {1: b"", 2: b""}
        self.tail: deque[bytes] = deque()
        self.tail_bytes = 0

    def feed(self, fd: int, data: bytes) -> None:
        if fd == 2:
            self.tail.append(data)
            self.tail_bytes += len(data)
            while self.tail_bytes - len(self.tail[0]) >= TAIL_BYTES:
                self.tail_bytes -= len(self.tail.popleft())
        buf = self.partial[fd] + data
        *lines, self.partial[fd] = buf.split(b"\n")
        for line in lines:
            self._line(line)
        if len(self.partial[fd]) > _READ:  # a very long line: cut it
            self._line(self.partial[fd])
            self.partial[fd] = b""

    def _line(self, raw: bytes) -> None:
        if len(raw) + 1 > self.left:
            self.left = 0
            self.dropped += len(raw) + 1
            return
        self.left -= len(raw) + 1
        self.ctx.log(self.redact(raw.decode("utf-8", "replace")))

    def redact(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "***")
        return text

    def close(self) -> str:
        """Flush partial lines and note truncation; returns STDERR's tail (redacted)."""
        for fd in (1, 2):
            if self.partial[fd]:
                self._line(self.partial[fd])
        if self.dropped:
            self.ctx.log(f"[banzai] log truncated: {self.dropped} more bytes of STDOUT/STDERR "
                         "were dropped (the bound is --task-log-max-bytes)")
        text = b"".join(self.tail)[-TAIL_BYTES:].decode("utf-8", "replace")
        return self.redact(text).strip()


def run_process(argv: Sequence[str], ctx: TaskContext, *, cwd: Path, env: Mapping[str, str],
                stdin: str, secrets: Sequence[str], max_log_bytes: int,
                what: str = "the command") -> None:
    """Run `argv`, its output to the task's log; CommandFailed (STDERR's tail) on non-zero."""
    log = _Log(ctx, secrets, max_log_bytes)
    proc = subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True)
    try:
        _pump(proc, stdin.encode(), log)
        code = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    tail = log.close()
    if code != 0:
        how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        raise CommandFailed(f"{what} {how}" + (f"; STDERR ends: {tail}" if tail else ""))


def _pump(proc: subprocess.Popen[bytes], data: bytes, log: _Log) -> None:
    """Feed STDIN and read STDOUT and STDERR until both close (one thread, a selector)."""
    assert proc.stdin and proc.stdout and proc.stderr
    sel = selectors.DefaultSelector()
    fds: dict[int, int] = {proc.stdout.fileno(): 1, proc.stderr.fileno(): 2}
    for f in (proc.stdout, proc.stderr):
        os.set_blocking(f.fileno(), False)
        sel.register(f, selectors.EVENT_READ)
    pending = memoryview(data)
    if pending:
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin, selectors.EVENT_WRITE)
    else:
        proc.stdin.close()
    open_fds = 2
    while open_fds:
        for key, _ in sel.select():
            fo = key.fileobj
            if fo is proc.stdin:
                try:
                    pending = pending[os.write(proc.stdin.fileno(), pending[:_READ]):]
                except BrokenPipeError:
                    pending = pending[:0]
                if not pending:
                    sel.unregister(fo)
                    proc.stdin.close()
                continue
            chunk = os.read(key.fd, _READ)
            if chunk:
                log.feed(fds[key.fd], chunk)
            else:
                sel.unregister(fo)
                open_fds -= 1
    if pending:
        sel.unregister(proc.stdin)
        proc.stdin.close()
    sel.close()
    proc.stdout.close()
    proc.stderr.close()
