"""The OpenAPI 3.1 document of the REST API (a test checks it matches the routes)."""

from __future__ import annotations

from typing import Any

from peer import __version__

_ERR = {"description": "error", "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/Error"}}}}


def _op(summary: str, ok: str = "200", params: tuple[str, ...] = (),
        body: str | None = None, errors: tuple[str, ...] = ("400",),
        query: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary,
                          "responses": {ok: {"description": "success"},
                                        **{e: _ERR for e in errors}}}
    ps = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
          for p in params]
    ps += [{"name": q, "in": "query", "required": False, "description": d,
            "schema": {"type": "string"}} for q, d in query]
    if ps:
        op["parameters"] = ps
    if body:
        op["requestBody"] = {"required": True, "content": {body: {"schema": {}}}}
    return op


def _health_op() -> dict[str, Any]:
    """/api/health: 503 with its usual body while the peer cannot store events or run work."""
    op = _op("Health and identity of this peer", errors=())
    op["responses"]["503"] = {"description": "not healthy: the same body, `ok` false and "
                                             "`reason` naming why (events cannot be stored: "
                                             "the event log's writes or fsyncs fail; or no "
                                             "usable worker slot)"}
    return op


# The Kubo RPC subset (peer/ipfs/rpc.py): Kubo's request and response shapes.
_KUBO_RPC = {
    "add": "add files/directories (multipart) -> ndjson {Name, Hash, Size}",
    "cat": "file bytes (arg, offset, length)",
    "pin/add": "pin recursively (arg)", "pin/ls": "list pins {Keys}",
    "pin/rm": "unpin (arg) {Pins}, {Notes: {cid: why}} for pins an earlier release made "
              "under a CID refused now; an error if not pinned",
    "repo/gc": "collect unpinned blocks -> ndjson {Key: {/: cid}}",
    "dag/put": "store nodes (multipart; input-codec, store-codec, pin) -> ndjson {Cid}; "
               "non-canonical DAG-CBOR is refused",
    "dag/export": "CAR of a DAG (arg)", "dag/import": "import a CAR (multipart) {Root}",
    "block/get": "one block's bytes (arg)", "id": "peer identity", "version": "API version",
    "routing/put": "keep a signed IPNS record (arg /ipns/NAME, multipart record)",
    "name/resolve": "the path an IPNS name's record holds (arg) {Path}",
    "name/publish": "publish /ipfs/PATH (arg) under key (key, lifetime, ttl) {Name, Value}",
    "key/gen": "a new Ed25519 key (arg NAME, type ed25519) {Name, Id}",
    "key/list": "this peer's keys {Keys: [{Name, Id}]}", "key/ls": "as key/list",
}

JOB = ("job",)
TASK = ("job", "task")

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Banzai peer API", "version": __version__},
    "paths": {
        "/api/health": {"get": _health_op()},
        "/api/tasks": {"get": _op("The task catalog with argument schemas and docs",
                                  errors=())},
        "/api/jobs": {
            "get": _op("The jobs known to the mesh, newest first, one page at a time: "
                       "`jobs` and `next`, the cursor of the following page (null on the "
                       "last); without limit, the first 1000 (the list has a ceiling: follow "
                       "`next` for the rest)", query=(
                           ("limit", "at most this many jobs (1..1000; default 1000)"),
                           ("cursor", "the `next` of the previous page"))),
            "post": _op("Submit a pipeline (the seed's list or a DAG; JSON or YAML); "
                        "returns once the job is in the durable log", ok="201",
                        body="application/json", errors=("400", "408", "413"),
                        query=(("cache", "false: run every task again, nothing taken from or "
                                         "put into the cache (banzai submit --no-cache)"),)),
        },
        "/api/jobs/{job}": {
            "get": _op("One job with its tasks, chunks, attempts, peers, outputs and errors, "
                       "and `published`: the IPNS names whose record here names an output "
                       "([{name, value, task}]); a task lists at most 1000 of its chunks, "
                       "from `chunks_from` on (`chunks_total`: how many it has); of a "
                       "lanes job whose task events this peer does not hold (partial "
                       "replication, off until lanes-v1), the view a member gave, checked "
                       "against the job's submission, with `served_by` and `unverified`: "
                       "true (its states, runners and outputs are that member's word; 503 "
                       "naming the members if none gave one that passed)", params=JOB,
                       errors=("400", "404", "503"), query=(
                           ("chunks_from", "the index of each task's first chunk listed "
                                           "(default 0)"),)),
            "delete": _op("Delete a finished job's record on every peer (its outputs stay "
                          "while pinned)", params=JOB, errors=("404", "409"))},
        "/api/jobs/{job}/cancel": {"post": _op("Cancel a job on every peer", params=JOB,
                                               errors=("404", "409"))},
        "/api/jobs/{job}/tasks/{task}/log": {"get": _op(
            "Log lines of a task (all chunks): `lines`, and `total`, how many it has",
            params=TASK, errors=("400", "404"),
            query=(("format", "text for plain text"),
                   ("tail", "only the last this many lines (1..1000000)")))},
        "/api/jobs/{job}/tasks/{task}/metrics": {"get": _op(
            "Metrics of a task as [name, step, value] (`metrics`), and `cut`: where a run's "
            "points were cut ({at: the index of the first point after the cut, points: how "
            "many, note}; a run keeps its first and its last 10,000)", params=TASK,
            errors=("404",))},
        "/api/add": {"post": _op(
            "Upload a file (raw body, ?name=) or a directory (multipart, names with '/'); "
            "stores, pins and returns its CID", ok="201", body="multipart/form-data",
            errors=("400", "408", "413"), query=(("cid-version", "0 or 1 (default 1)"),
                                          ("name", "file name of a raw upload")))},
        "/api/car": {"post": _op(
            'One CAR (application/vnd.ipld.car) of the DAGs of {"cids": [...]} that this '
            "peer holds, each block once (at most 1024 CIDs; peers fetch many small items "
            "with it)", body="application/json", errors=("400", "404", "413"))},
        "/api/gc": {"post": _op(
            "One storage cycle now: delete old job records, unpin outputs past the retention "
            "bounds, collect garbage; returns what it freed {blocks, bytes, unpinned, "
            "deleted_jobs}", errors=())},
        "/api/events": {"get": _op(
            "Server-sent events of state changes (503 past http_max_event_streams at once): "
            "each a summary {type, origin, hlc} with the scalar payload fields job, task, "
            "chunk, attempt, progress, output, error, kind, cached and name, a text cut to "
            "4 KiB around a marker", errors=("503",))},
        "/api/snapshot": {"get": _op(
            "This peer's signed snapshot of compacted jobs (records, cache entries, providers, "
            "compaction floors, as of its heads) and the events its log holds, for a peer "
            "behind the compaction horizon; `?digest=1`: only {heads, floors, digest}; "
            "`?v=2`: as a stream of lines; `?v=3`: as frames, thin job rows (peer.log."
            "snapframe); `?v=3&record=JOB`: a compacted job's full texts [summary, record, "
            "facts] (404 if not held in full); `?v=3&view=JOB` (partial replication, off "
            "until lanes-v1): a lanes job's view made here, for a peer that holds none of "
            "its task events (404 if this peer holds none either); 503 past "
            "http_max_snapshot_serves at once "
            "(after http_snapshot_wait_s). Open to the mesh credential",
            errors=("404", "503"))},
        "/api/peers": {"get": _op("Members of the mesh with capabilities and load",
                                  errors=())},
        "/api/mesh/revoke": {"post": _op(
            'Revoke a member of the mesh ({"peer": id, "reason": text}): a signed REVOKE '
            "event; every peer refuses its later events and frames", body="application/json",
            errors=("400", "404", "409"))},
        "/api/openapi.json": {"get": _op("This document", errors=())},
        "/api/session": {"get": _op(
            "Whether this browser is logged in (session cookie from /login), its CSRF token "
            "for the X-CSRF-Token header, and whether reads need a login", errors=())},
        **{f"/api/v0/{name}": {"post": _op(f"Kubo RPC compatible: {doc}",
                                           errors=("400", "413", "501"))}
           for name, doc in _KUBO_RPC.items()},
    },
    # Writes need the peer's token (Bearer, or the session cookie plus X-CSRF-Token);
    # reads too when the peer is bound beyond loopback (peer/http/auth.py).
    "security": [{"bearer": []}, {"session": []}],
    "components": {"securitySchemes": {
        "bearer": {"type": "http", "scheme": "bearer",
                   "description": "the token in the peer's data dir (file http-token)"},
        "session": {"type": "apiKey", "in": "cookie", "name": "banzai-session-PORT",
                    "description": "set by /login; writes also send X-CSRF-Token"}},
                   "schemas": {"Error": {
        "type": "object", "required": ["error", "message"],
        "properties": {"error": {"type": "string"}, "message": {"type": "string"},
                       "field": {"type": "string"}}}}},
}
