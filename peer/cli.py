"""`banzai`: the client CLI. Exit codes: 0 success, 1 job failed/unreachable, 2 bad input."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import ssl
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from peer.config import default_runtime_dir
from peer.http.tokens import find_token, read_token

# Every string a peer sends (job, task and peer names, errors, addresses: any member's or
# user's text, review r1 of session 49, F1) is printed as plain text: no console markup, emoji
# codes or highlighting, and its control characters made visible (`shown`); the CLI's own
# styles are Text spans.
console = Console(stderr=True, markup=False, emoji=False, highlight=False)
out = Console(soft_wrap=True, markup=False, emoji=False,  # machine-readable lines (CIDs,
              highlight=False)  # URLs) are never wrapped
FINAL = ("done", "failed", "cancelled")
# C0 but TAB and LF, DEL, C1, and the bidirectional overrides and isolates: what moves the
# cursor, sets a title or the clipboard (OSC 52), links text (OSC 8) or reorders a line
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CELL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")  # and TAB, LF
SHOWN_CHARS = 4096  # of one string from a peer, at most (an error may be 1 MiB)


def _visible(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def shown(v: object, most: int = SHOWN_CHARS, lines: bool = True) -> str:
    """A peer's value as the CLI prints it: its text cut to `most` characters, each control
    character written as a visible escape (ESC as \\x1b; TAB and LF kept if `lines`)."""
    s = v if isinstance(v, str) else str(v)
    if len(s) > most:
        s = f"{s[:most]}... ({len(s) - most} characters cut)"
    return (_CONTROL if lines else _CELL).sub(_visible, s)


def text(v: object, style: str = "", lines: bool = False) -> Text:
    """`shown(v)` as a rich Text (never read as markup), in `style`; one line (a table
    cell's) unless `lines`."""
    return Text(shown(v, lines=lines), style=style)


class CliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class Client:
    """A thin async client of one peer's API."""

    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base.rstrip("/")
        self.s = session

    async def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            async with self.s.request(method, self.base + path, **kw) as r:
                body = await r.read()
                if r.status >= 400:
                    try:
                        err = json.loads(body)
                        msg = err.get("message") or err.get("Message") or body.decode(
                            errors="replace")  # the REST API's or the Kubo RPC's shape
                        if err.get("field"):
                            msg += f" [at {err['field']}]"
                    except ValueError:
                        msg = body.decode(errors="replace")
                    if r.status == 401:
                        msg += ("\n(run banzai on the peer's machine as its user, or pass "
                                "--token-file DATA_DIR/http-token)")
                    raise CliError(msg, 2 if 400 <= r.status < 500 else 1)
                return json.loads(body) if body else None
        except aiohttp.ClientConnectionError as e:
            raise CliError(f"cannot reach the peer at {self.base}: {e}", 1) from None


async def cmd_submit(c: Client, a: argparse.Namespace) -> int:
    try:
        body = Path(a.file).read_bytes() if a.file != "-" else sys.stdin.buffer.read()
    except OSError as e:
        raise CliError(f"cannot read {a.file}: {e.strerror}", 2) from None
    ctype = "application/yaml" if a.file.endswith((".yaml", ".yml")) else "application/json"
    path = "/api/jobs?cache=false" if a.no_cache else "/api/jobs"
    r = await c.call("POST", path, data=body, headers={"Content-Type": ctype})
    job = r["job"]
    console.print(Text.assemble("submitted job ", text(job, "bold")))
    if not a.wait:
        out.print(shown(job))
        return 0
    view = await watch(c, job)
    print_outputs(view, c.base)
    if view["state"] != "done":
        return 1
    if a.publish:  # the final output under the key's IPNS name (by the peer holding the key)
        final = [t["output"] for t in view["tasks"] if t.get("output")][-1:]
        if not final:
            raise CliError(f"job {job} has no output to publish", 1)
        q = f"arg=/ipfs/{final[0]}&key={quote(a.publish)}"
        p = await c.call("POST", f"/api/v0/name/publish?{q}")
        out.print(shown(f"/ipns/{p['Name']} -> {p['Value']}"))
    return 0


async def watch(c: Client, job: str) -> dict[str, Any]:
    """Show a live progress bar per task until the job ends; return the final view."""
    cols = (TextColumn("{task.description:<22}", markup=False), BarColumn(),
            TextColumn("{task.percentage:>5.1f}%", markup=False),
            TextColumn("{task.fields[state]:<9}", markup=False), TimeElapsedColumn())
    with Progress(*cols, console=console, transient=False) as bar:
        ids: dict[str, Any] = {}
        printed: dict[str, str] = {}  # task -> the partial output CID printed last
        while True:
            view = await c.call("GET", f"/api/jobs/{job}")
            for t in view["tasks"]:
                if t["name"] not in ids:
                    ids[t["name"]] = bar.add_task(shown(t["name"], 64, False), total=1.0, state="")
                bar.update(ids[t["name"]], completed=t["progress"],
                           state=shown(t["state"], 16, False))
                part = t.get("partial")
                if part and printed.get(t["name"]) != part["output"]:
                    printed[t["name"]] = part["output"]  # progressive answers, as they come
                    out.print(shown(f"{t['name']}\tpartial {part['items']}/{part['of']}\t"
                                    f"{part['output']}\t{c.base}/ipfs/{part['output']}/"))
            if view["state"] in FINAL:
                return dict(view)
            await asyncio.sleep(0.25)


def print_outputs(view: dict[str, Any], base: str) -> None:
    console.print(Text.assemble(f"job {shown(view['id'])}: ", text(view["state"], "bold")))
    for t in view["tasks"]:
        if t.get("error"):
            console.print(Text.assemble(f"  {shown(t['name'])}: ",
                                        text(t["error"], "red", lines=True)))
            if t["state"] == "failed":  # what its runs printed before they failed
                console.print(shown(f"    its log: {base}/api/jobs/{quote(view['id'], safe='')}"
                                    f"/tasks/{quote(t['name'], safe='')}/log?format=text"),
                              markup=False, soft_wrap=True)
        if t.get("output"):
            out.print(shown(f"{t['name']}\t{t['output']}\t{base}/ipfs/{t['output']}/"))


async def cmd_status(c: Client, a: argparse.Namespace) -> int:
    if a.job:
        view = await c.call("GET", f"/api/jobs/{a.job}")
        table = Table("task", "call", "state", "progress", "attempts", "peers", "output/error")
        for t in view["tasks"]:
            table.add_row(text(t["name"]), text(t["call"] or "(cid)"), text(t["state"]),
                          f"{t['progress']:.0%}", text(t["attempts"]),
                          text(",".join(p[:8] for p in t["peers"])),
                          text(t["output"] or t["error"] or t.get("waiting") or ""))
        out.print(shown(f"job {view['id']} {view['state']} {view['progress']:.0%}"))
        if view.get("served_by"):  # a lanes job this peer holds none of the task events of
            out.print(shown(f"(as its member {str(view['served_by'])[:20]} gave it: task "
                            "states, peers and outputs unverified)"), style="yellow")
        out.print(table)
        for t in view["tasks"]:  # whole lines: a reason is too long for a table cell
            if t.get("waiting") and t["state"] not in FINAL:
                out.print(shown(f"{t['name']} {t['waiting']}"))
        return 0 if view["state"] != "failed" else 1
    table = Table("job", "name", "state", "progress")
    for j in await all_jobs(c):
        table.add_row(text(j["id"]), text(j["name"]), text(j["state"]), f"{j['progress']:.0%}")
    out.print(table)
    return 0


JOBS_PAGE = 1000  # jobs per GET /api/jobs of `banzai status` (the API's largest page)


async def all_jobs(c: Client) -> list[dict[str, Any]]:
    """Every job, newest first: GET /api/jobs a page at a time, following `next` until the
    last page (a peer whose list has no `next`, of an earlier release, gives all at once);
    a cursor given twice ends the walk (no loop without end on a peer's fault)."""
    jobs: list[dict[str, Any]] = []
    path, seen = f"/api/jobs?limit={JOBS_PAGE}", set()
    while True:
        page = await c.call("GET", path)
        jobs += page["jobs"]
        cursor = page.get("next")
        if not cursor or cursor in seen:
            return jobs
        seen.add(cursor)
        path = f"/api/jobs?limit={JOBS_PAGE}&cursor={quote(cursor, safe='')}"


async def cmd_cancel(c: Client, a: argparse.Namespace) -> int:
    await c.call("POST", f"/api/jobs/{a.job}/cancel")
    out.print(shown(f"cancelled {a.job}"))
    return 0


async def cmd_add(c: Client, a: argparse.Namespace) -> int:
    p = Path(a.path)
    if not p.exists():
        raise CliError(f"no such file or directory: {p}", 2)
    q = f"?cid-version={a.cid_version}"
    if p.is_file():
        with p.open("rb") as f:
            r = await c.call("POST", f"/api/add{q}&name={p.name}", data=f,
                             headers={"Content-Type": "application/octet-stream"})
    else:
        form = aiohttp.FormData()
        files = sorted(x for x in p.rglob("*") if x.is_file())
        if not files:
            raise CliError(f"{p} holds no files", 2)
        handles = [x.open("rb") for x in files]
        try:
            for x, h in zip(files, handles, strict=True):
                rel = f"{p.name}/{x.relative_to(p).as_posix()}"
                form.add_field("file", h, filename=rel, content_type="application/octet-stream")
            r = await c.call("POST", f"/api/add{q}", data=form)
        finally:
            for h in handles:
                h.close()
    out.print(shown(r["cid"]))
    return 0


async def cmd_get(c: Client, a: argparse.Namespace) -> int:
    """Fetch a CID as a CAR (trustless: every block verified) and write it out."""
    from peer.ipfs import EmbeddedStore

    dest = Path(a.output or a.cid)
    try:
        async with c.s.get(f"{c.base}/ipfs/{a.cid}?format=car") as r:
            if r.status >= 400:
                raise CliError(f"{a.cid}: {(await r.text())[:300]}", 2 if r.status < 500 else 1)
            data = await r.read()
    except aiohttp.ClientConnectionError as e:
        raise CliError(f"cannot reach the peer at {c.base}: {e}", 1) from None
    with tempfile.TemporaryDirectory(prefix="banzai-get-") as tmp:
        store = EmbeddedStore(Path(tmp))
        try:
            await asyncio.to_thread(store.import_car, [data])
            await asyncio.to_thread(store.materialize, a.cid, dest)
        except Exception as e:
            raise CliError(f"{a.cid}: {e}", 1) from None
    out.print(shown(str(dest)))
    return 0


async def cmd_pin(c: Client, a: argparse.Namespace) -> int:
    """pin add|rm|ls through the Kubo RPC subset (a pin rm's blocks go at the next gc)."""
    if a.action == "ls":
        keys = (await c.call("POST", "/api/v0/pin/ls?type=recursive"))["Keys"]
        for cid in sorted(keys):
            out.print(shown(cid))
        return 0
    if not a.cids:
        raise CliError(f"pin {a.action}: give at least one CID", 2)
    q = "&".join(f"arg={cid}" for cid in a.cids)
    r = await c.call("POST", f"/api/v0/pin/{a.action}?{q}")
    notes = r.get("Notes", {})  # (pin rm of a pin an earlier release made: why it is taken)
    for cid in r["Pins"]:
        out.print(shown(f"{'pinned' if a.action == 'add' else 'unpinned'} {cid}"
                        + (f" ({notes[cid]})" if cid in notes else "")))
    return 0


async def cmd_gc(c: Client, a: argparse.Namespace) -> int:
    """One storage cycle now: old job records, retention, garbage collection."""
    r = await c.call("POST", "/api/gc")
    out.print(shown(f"freed {r['blocks']} blocks, {r['bytes']} bytes; unpinned "
                    f"{len(r['unpinned'])} output(s); deleted {len(r['deleted_jobs'])} job "
                    "record(s)"))
    return 0


async def cmd_jobs(c: Client, a: argparse.Namespace) -> int:
    for job in a.jobs:
        await c.call("DELETE", f"/api/jobs/{job}")
        out.print(shown(f"deleted {job}"))
    return 0


async def cmd_tasks(c: Client, a: argparse.Namespace) -> int:
    table = Table("call", "kind", "arguments", "doc")
    for t in (await c.call("GET", "/api/tasks"))["tasks"]:
        args = ", ".join(f"{x['name']}:{x['type']}" + ("" if x["required"] else
                         f"={x.get('default')}") for x in t["args"])
        table.add_row(text(t["call"]), "per-item" if t["per_item"] else "whole", text(args),
                      text(t["doc"]))
    out.print(table)
    return 0


async def cmd_peers(c: Client, a: argparse.Namespace) -> int:
    table = Table("peer", "name", "http", "slots", "free", "running", "state")
    for p in (await c.call("GET", "/api/peers"))["peers"]:
        table.add_row(text(p["id"]), text(p.get("name", "")), text(p.get("http", "")),
                      text(p.get("slots")), text(p.get("free_slots")),
                      text(len(p.get("running", []))), text(p["state"]))
    out.print(table)
    return 0


async def cmd_mesh(c: Client, a: argparse.Namespace) -> int:
    r = await c.call("POST", "/api/mesh/revoke", json={"peer": a.peer_id, "reason": a.reason})
    out.print(shown(f"revoked {r['peer']}"))
    return 0


async def cmd_key(c: Client, a: argparse.Namespace) -> int:
    """key gen NAME | key ls: the peer's named Ed25519 keys (IPNS names)."""
    if a.action == "gen":
        if not a.name:
            raise CliError("key gen: give a NAME", 2)
        r = await c.call("POST", f"/api/v0/key/gen?arg={quote(a.name)}&type=ed25519")
        out.print(shown(f"{r['Id']}  {r['Name']}"))
        return 0
    for k in (await c.call("POST", "/api/v0/key/list"))["Keys"]:
        out.print(shown(f"{k['Id']}  {k['Name']}"))
    return 0


async def cmd_publish(c: Client, a: argparse.Namespace) -> int:
    """publish --key NAME CID: a signed IPNS record, held by every peer; prints /ipns/NAME."""
    path = a.cid if a.cid.startswith("/ipfs/") else f"/ipfs/{a.cid}"
    q = f"arg={quote(path)}&key={quote(a.key)}&lifetime={quote(a.lifetime)}"
    r = await c.call("POST", f"/api/v0/name/publish?{q}")
    out.print(shown(f"/ipns/{r['Name']} -> {r['Value']}"))
    out.print(shown(f"{c.base}/ipns/{r['Name']}"))
    return 0


COMMANDS = {"submit": cmd_submit, "status": cmd_status, "cancel": cmd_cancel, "add": cmd_add,
            "get": cmd_get, "tasks": cmd_tasks, "peers": cmd_peers, "pin": cmd_pin,
            "gc": cmd_gc, "jobs": cmd_jobs, "mesh": cmd_mesh, "key": cmd_key,
            "publish": cmd_publish}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="banzai", description="Client of a Banzai peer.")
    p.add_argument("--peer", default=os.environ.get("BANZAI_PEER", "http://127.0.0.1:8700"),
                   help="URL of the peer (default $BANZAI_PEER or http://127.0.0.1:8700)")
    p.add_argument("--token-file", type=Path, default=os.environ.get("BANZAI_TOKEN_FILE"),
                   help="file with the peer's token (default $BANZAI_TOKEN_FILE, else the "
                   "token of the peer at --peer if it runs on this machine as this user)")
    p.add_argument("--cacert", type=Path, default=os.environ.get("BANZAI_CACERT"),
                   help="PEM certificate(s) to trust for an https peer, e.g. its self-signed "
                   "--tls-cert (default $BANZAI_CACERT, else the system's)")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("submit", help="submit a pipeline file (JSON or YAML; - for stdin)")
    s.add_argument("file")
    s.add_argument("--wait", action="store_true", help="show progress until the job ends")
    s.add_argument("--no-cache", action="store_true",
                   help="run every task again: nothing is taken from or put into the cache "
                   "(for work that is not deterministic)")
    s.add_argument("--publish", metavar="KEY", help="with --wait: publish the job's final "
                   "output under KEY's IPNS name (a key of that peer: banzai key gen KEY)")
    s = sub.add_parser("status", help="list jobs, or show one job")
    s.add_argument("job", nargs="?")
    s = sub.add_parser("cancel", help="cancel a job")
    s.add_argument("job")
    s = sub.add_parser("add", help="add a file or directory to the store; prints its CID")
    s.add_argument("path")
    s.add_argument("--cid-version", type=int, choices=[0, 1], default=1)
    s = sub.add_parser("get", help="fetch a CID (verified) into a file or directory")
    s.add_argument("cid")
    s.add_argument("-o", "--output")
    s = sub.add_parser("pin", help="pin add|rm|ls: explicit pins (retention keeps them)")
    s.add_argument("action", choices=["add", "rm", "ls"])
    s.add_argument("cids", nargs="*", metavar="CID")
    sub.add_parser("gc", help="delete old job records, unpin outputs past the retention "
                              "bounds and collect garbage now; prints what was freed")
    s = sub.add_parser("jobs", help="jobs rm JOB...: delete finished jobs' records")
    s.add_argument("action", choices=["rm"])
    s.add_argument("jobs", nargs="+", metavar="JOB")
    sub.add_parser("tasks", help="list the task catalog")
    sub.add_parser("peers", help="list the peers of the mesh")
    s = sub.add_parser("key", help="key gen NAME | key ls: named Ed25519 keys for IPNS names "
                       "(kept in the peer's data dir; `self` is the peer's identity)")
    s.add_argument("action", choices=["gen", "ls"])
    s.add_argument("name", nargs="?", metavar="NAME")
    s = sub.add_parser("publish", help="publish CID under a key's IPNS name (/ipns/KEY-ID on "
                       "every peer; republished before it expires)")
    s.add_argument("cid", metavar="CID")
    s.add_argument("--key", default="self", help="key name (default self)")
    s.add_argument("--lifetime", default="48h", help="validity of the record (Go duration, "
                   "default 48h)")
    s = sub.add_parser("mesh", help="manage the mesh's members")
    msub = s.add_subparsers(dest="mesh_cmd", required=True)
    s = msub.add_parser("revoke", help="revoke a member: every peer refuses its later events "
                        "and frames")
    s.add_argument("peer_id", metavar="PEER")
    s.add_argument("--reason", default="revoked by a user")
    return p


def _token(a: argparse.Namespace) -> str | None:
    """--token-file, else the runtime file of a peer of this user serving --peer."""
    if a.token_file is not None:
        token = read_token(a.token_file)
        if token is None:
            raise CliError(f"cannot read the token file {a.token_file}", 2)
        return token
    runtime = Path(os.environ.get("BANZAI_RUNTIME_DIR") or default_runtime_dir())
    return find_token(a.peer, runtime)


async def _run(a: argparse.Namespace) -> int:
    timeout = aiohttp.ClientTimeout(total=None, connect=10)
    token = _token(a)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    ssl_ctx = ssl.create_default_context(cafile=a.cacert) if a.cacert else None
    connector = aiohttp.TCPConnector(ssl=ssl_ctx) if ssl_ctx else None
    async with aiohttp.ClientSession(timeout=timeout, headers=headers,
                                     connector=connector) as s:
        return await COMMANDS[a.cmd](Client(a.peer, s), a)


def report(e: CliError) -> None:
    """An error, as plain red text (it quotes the peer's message, which quotes the value)."""
    console.print(text(f"banzai: {e}", "red", lines=True))


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    a = parser.parse_args(argv)
    if a.cmd == "submit" and a.publish and not a.wait:
        parser.error("submit --publish needs --wait")
    try:
        code = asyncio.run(_run(a))
    except CliError as e:
        report(e)
        code = e.code
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
