"""The `container` kind: a command in a container image, run with podman (or docker's
compatible CLI), input mounted read-only at /in, output at /out, no network unless the task
asks and the peer allows it, memory and CPU bounded. `invoke` runs in an executor worker and
blocks it; `remove` and `sweep` (daemon side, in a thread) remove containers a killed run or
a killed peer left, found by their labels; `images` lists what a peer holds.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peer.errors import BanzaiError
from peer.jobs import kinds
from peer.jobs.kind_shell import (
    DEFAULT_LOG_BYTES,
    CommandFailed,
    read_only,
    resolve_env,
    run_process,
    writable,
)
from tasks.registry import TaskContext, TaskDef

OWNER_LABEL = "banzai.owner"  # the peer id: its leftovers are swept at its start
RUN_LABEL = "banzai.run"  # the run's key (job/task/chunk/attempt): removed when it is killed
_CLI_TIMEOUT_S = 60.0
DIGEST_RE = re.compile(r"(?:.*@)?sha256:([0-9a-f]{64})")


class ImageMissing(BanzaiError):
    """A container task's image is not held by this peer."""


def image_id(image: str) -> str | None:
    """The sha256 hex of `name@sha256:HEX` or `sha256:HEX`; None for a tag."""
    m = DIGEST_RE.fullmatch(image)
    return m.group(1) if m else None


def invoke(tdef: TaskDef, ctx: TaskContext, inp: Path | None, out: Path,
           params: Mapping[str, Any]) -> None:
    """Run the container to its end (removed by --rm; by `remove` if the run is killed)."""
    cfg = kinds.settings(ctx)
    runtime = str(cfg.get("runtime", "podman"))
    if inp is None:
        inp = ctx.workdir / "input"
        inp.mkdir()
    read_only(inp)
    env: dict[str, str] = {}
    secrets = resolve_env(params.get("env") or {}, cfg, env)
    secret_names = {k for k, v in (params.get("env") or {}).items() if isinstance(v, Mapping)}
    argv = [runtime, "run", "--rm", "--name", f"banzai-{uuid.uuid4().hex[:16]}",
            "--label", f"{OWNER_LABEL}={cfg.get('owner', '')}",
            "--label", f"{RUN_LABEL}={cfg.get('run', '')}",
            "-v", f"{inp}:/in:ro", "-v", f"{out}:/out", "--workdir", "/out",
            *_limits(params, cfg)]
    for k, v in env.items():  # secrets by name only: their values stay out of argv
        argv += ["-e", k if k in secret_names else f"{k}={v}"]
    if params.get("stdin"):
        argv.append("-i")
    argv += [_reference(params["image"]), *params.get("command", [])]
    proc_env = {k: v for k, v in os.environ.items() if k not in secret_names}
    proc_env.update({k: env[k] for k in secret_names})
    try:
        run_process(argv, ctx, cwd=ctx.workdir, env=proc_env, stdin=params.get("stdin", ""),
                    secrets=secrets, what="the container",
                    max_log_bytes=int(cfg.get("log_max_bytes", DEFAULT_LOG_BYTES)))
    except CommandFailed as e:
        if "status 137" in e.message:
            raise CommandFailed(e.message.replace("status 137", "status 137 (killed: out of "
                                                  f"memory at --memory {_mem(params, cfg)} MiB?)"
                                                  )) from None
        if "status 125" in e.message and "image not known" in e.message:
            raise ImageMissing(f"image {params['image']} is not held by this peer") from None
        raise
    finally:
        writable(inp)


def _mem(params: Mapping[str, Any], cfg: Mapping[str, Any]) -> int:
    peer = int(cfg.get("mem_mb") or 0)
    task = params.get("mem_mb")
    return min(int(task), peer) if task and peer else int(task or peer)


def _limits(params: Mapping[str, Any], cfg: Mapping[str, Any]) -> list[str]:
    out = []
    if params.get("network") and cfg.get("allow_network"):
        out += ["--network", "slirp4netns" if os.getuid() else "bridge"]
    else:
        out += ["--network", "none"]
    if mem := _mem(params, cfg):
        out += ["--memory", f"{mem}m", "--memory-swap", f"{mem}m"]
    if params.get("cpus"):
        out += ["--cpus", f"{float(params['cpus']):g}"]
    return out


def _reference(image: str) -> str:
    """What to run: the image id of a digest reference (the digest is what counts), else
    the name."""
    hexid = image_id(image)
    return hexid if hexid is not None else image


def _cli(runtime: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([runtime, *args], capture_output=True, text=True,
                          timeout=_CLI_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL)


def remove(runtime: str, label: str, value: str) -> list[str]:
    """Remove (force) every container labelled `label=value`; returns their ids."""
    try:
        found = _cli(runtime, "ps", "-aq", "--filter", f"label={label}={value}")
        ids = found.stdout.split()
        if ids:  # podman: no stop timeout (docker's rm -f kills at once and has no -t)
            _cli(runtime, "rm", "-f", *(("-t", "0") if runtime == "podman" else ()), *ids)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return ids


def sweep(runtime: str, owner: str) -> list[str]:
    """At start: remove the containers a killed earlier run of peer `owner` left."""
    return remove(runtime, OWNER_LABEL, owner)


def images(runtime: str) -> dict[str, str]:
    """The images this machine holds: `name:tag` -> `sha256:ID` (an image without a name is
    left out); {} when the runtime cannot run."""
    try:
        r = _cli(runtime, "images", "--no-trunc", "--format", "json")
        text = r.stdout.strip() if r.returncode == 0 else ""
        # podman: one JSON list; docker: one JSON object per line
        rows = json.loads(text) if text.startswith("[") else [
            json.loads(line) for line in text.splitlines() if line.strip()]
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return {}
    out: dict[str, str] = {}
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, dict):
            continue
        ident = str(row.get("Id") or row.get("ID") or "")
        ident = ident if ident.startswith("sha256:") else f"sha256:{ident}"
        names = row.get("Names") or ([f"{row['Repository']}:{row.get('Tag', 'latest')}"]
                                     if row.get("Repository") not in (None, "<none>") else [])
        for name in names:
            if isinstance(name, str) and DIGEST_RE.fullmatch(ident):
                out[name] = ident
    return out


def usable(runtime: str) -> str | None:
    """None if the runtime can run a container here, else why not."""
    try:
        r = _cli(runtime, "info", "--format", "json")
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{runtime}: {e}"
    return None if r.returncode == 0 else f"{runtime} info failed: {r.stderr.strip()[-300:]}"


def held(image: str, have: Mapping[str, str]) -> bool:
    """True if a peer holding `have` (name -> sha256:ID) can run `image` (by digest)."""
    hexid = image_id(image)
    return hexid is not None and f"sha256:{hexid}" in have.values()


def resolve(image: str, holders: Mapping[str, Mapping[str, str]]) -> str:
    """`image` (a tag or name@sha256:...) as `name@sha256:ID` from the images peers announce
    (peer -> name -> id); BanzaiError naming the peers if none holds it or they disagree."""
    if image_id(image) is not None:
        if not any(held(image, have) for have in holders.values()):
            raise ImageMissing(f"image {image}: no peer holds an image of this digest")
        return image
    name = image if ":" in image.rsplit("/", 1)[-1] else f"{image}:latest"
    seen: dict[str, list[str]] = {}
    for peer, have in sorted(holders.items()):
        for n in (name, f"localhost/{name}", f"docker.io/{name}", f"docker.io/library/{name}"):
            if n in have:
                seen.setdefault(have[n], []).append(peer)
                break
    if not seen:
        raise ImageMissing(f"image {image} is held by no peer that runs containers (build or "
                           "load it on one; no registry is asked)")
    if len(seen) > 1:
        listed = "; ".join(f"{d[:19]}... on {', '.join(ps)}" for d, ps in sorted(seen.items()))
        raise ImageMissing(f"image {image} has different digests on different peers: {listed}; "
                           "name one as IMAGE@sha256:...")
    return f"{image.split('@')[0]}@{next(iter(seen))}"


