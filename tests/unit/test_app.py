"""The REST handlers of peer/http/app.py over a real (not started) Node, through aiohttp's
test client: bad input from the network is a 4xx JSON error naming its field, never a 500
(uploads: the Kubo RPC's add too, which shares their code in peer/ipfs/rpc.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from peer.config import PeerConfig
from peer.node import Node

Client = TestClient[Any, Any]
DEEP = b"[" * 100_000
V0 = "QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR"


@pytest.fixture
def client(served_node: tuple[Client, Node]) -> Client:
    """The app of a loopback peer, every request with its token."""
    return served_node[0]


async def _error(r: Any, status: int) -> dict[str, Any]:
    body: dict[str, Any] = await r.json()
    assert r.status == status, body
    assert body["message"], body
    return body


@pytest.mark.parametrize("path", ["/api/car", "/api/mesh/revoke"])
@pytest.mark.parametrize(("body", "message"), [
    (DEEP, "the body is nested too deeply"),
    (b"[" + b"9" * 5000 + b"]", "invalid JSON: "),  # over Python's digit limit
    (b'{"cids": ', "invalid JSON at line 1, column 10"),
    (b'{"cids": ["\xff"]}', "the body is not UTF-8 text (bad byte at offset 11)"),
])
async def test_malformed_json_bodies_are_400_naming_the_body(client: Client, path: str,
                                                             body: bytes, message: str) -> None:
    r = await client.post(path, data=body, headers={"Content-Type": "application/json"})
    err = await _error(r, 400)
    assert err["error"] == "ArgError" and err["field"] == "body" and message in err["message"]


@pytest.mark.parametrize(("cids", "shown"), [
    ([[1]], "got list"), ([{"/": "x"}], "got object"), ([7], "got integer"),
    ([None], "got null"),
])
async def test_car_cids_must_be_strings(client: Client, cids: list[Any], shown: str) -> None:
    r = await client.post("/api/car", data=json.dumps({"cids": [V0, *cids]}))
    err = await _error(r, 400)
    assert err["field"] == "cids[1]"
    assert err["message"] == f"cids[1]: a CID must be a string, {shown}"


B = "BND"
MULTIPART = f"multipart/form-data; boundary={B}"


def _multipart(*names: str | bytes) -> bytes:
    """A multipart body of one-byte files; a name given as bytes is sent as they are."""
    parts = [b'--%s\r\nContent-Disposition: form-data; name="file"; filename="%s"\r\n\r\n'
             b"x\r\n" % (B.encode(), n if isinstance(n, bytes) else n.encode()) for n in names]
    return b"".join(parts) + f"--{B}--\r\n".encode()


BAD_UPLOADS = [  # query, Content-Type, body; the field and message of the error
    ("?name=a%00b", "application/octet-stream", b"x", "filename", "bad file name 'a\\x00b'"),
    ("?name=" + "a" * 300, "application/octet-stream", b"x", "filename",
     "is too long for the file system"),
    ("", MULTIPART, _multipart("d/" + "a" * 300), "filename", "is too long for the file system"),
    ("", MULTIPART, _multipart("%00"), "filename", "bad file name '\\x00'"),
    ("", MULTIPART, _multipart("a", "a/b"), "filename",
     "file name 'a/b' collides with an earlier part's"),
    ("", MULTIPART, _multipart("a/b", "a"), "filename",
     "file name 'a' collides with an earlier part's"),
    ("", MULTIPART, _multipart("a/b/c", "a/b"), "filename", "file name 'a/b' collides"),
    # a header byte that is not UTF-8 (aiohttp reads it as a lone surrogate): the store cannot
    # name a file so, and the JSON answer cannot hold it (fuzz30's hfuzz)
    ("", MULTIPART, _multipart(b"d/\xff/x"), "filename",
     "file name 'd/\\xff/x' is not UTF-8"),
    ("", MULTIPART, _multipart(b"a\xffb"), "filename", "file name 'a\\xffb' is not UTF-8"),
    # nor %-escaped (it was read as U+FFFD: another name than the one sent, another CID)
    ("", MULTIPART, _multipart("d/%FF/x"), "filename", "file name 'd/%FF/x' is not UTF-8"),
    # nor in the query's name= (aiohttp's query reads it as U+FFFD)
    ("?name=a%FFb", "application/octet-stream", b"x", "filename",
     "file name 'a\\xffb' is not UTF-8"),
    ("", "multipart/form-data", b"x", "body", "malformed multipart body: boundary missed"),
    ("", "multipart/form-data; boundary=zz", b"garbage\r\n", "body",
     "malformed multipart body: Could not find starting boundary"),
    ("", MULTIPART, _multipart("a")[:-len(f"--{B}--\r\n")], "body",
     "malformed multipart body"),  # cut short
]


@pytest.mark.parametrize(("query", "ctype", "body", "field", "message"), BAD_UPLOADS)
async def test_bad_uploads_are_400_naming_the_file_or_the_body(
        client: Client, query: str, ctype: str, body: bytes, field: str, message: str) -> None:
    r = await client.post("/api/add" + query, data=body, headers={"Content-Type": ctype})
    err = await _error(r, 400)
    assert err["field"] == field and message in err["message"], err


@pytest.mark.parametrize(("ctype", "body", "message"),
                         [(c, b, m) for _, c, b, _, m in BAD_UPLOADS if c.startswith("multipart")])
async def test_kubo_add_refuses_them_too(client: Client, ctype: str, body: bytes,
                                         message: str) -> None:
    r = await client.post("/api/v0/add", data=body, headers={"Content-Type": ctype})
    err = await r.json()
    assert r.status == 400 and err["Code"] == 1 and message in err["Message"], err


async def test_good_uploads_still_land(client: Client) -> None:
    r = await client.post("/api/add", data=_multipart("d/a", "d/b/c"),
                          headers={"Content-Type": MULTIPART})
    assert r.status == 201 and (await r.json())["name"] == "d"


async def test_a_bad_file_name_is_answered_without_a_server_path(client: Client,
                                                                 tmp_path: Path) -> None:
    """`d/\\xff/x` was a 500 whose message named the upload's temporary directory."""
    r = await client.post("/api/add", data=_multipart(b"d/\xff/x"),
                          headers={"Content-Type": MULTIPART})
    err = await _error(r, 400)
    assert str(tmp_path) not in json.dumps(err) and "kubo-add" not in json.dumps(err), err


async def test_kubo_add_names_with_other_scripts_land(client: Client) -> None:
    r = await client.post("/api/v0/add", data=_multipart("d/é/x", "d/%E2%82%AC"),
                          headers={"Content-Type": MULTIPART})
    assert r.status == 200, await r.text()
    names = [json.loads(line)["Name"] for line in (await r.text()).splitlines()]
    assert names == ["d/é/x", "d/€", "d/é", "d"]


def _big(digits: int, base: str) -> str:
    """A YAML integer of about `digits` digits in `base` (hex, binary or base 60)."""
    if base == "hex":
        return "0x" + "f" * digits
    if base == "bin":
        return "0b" + "1" * digits
    return "1" + ":59" * digits  # sexagesimal: 1:59:59:...


@pytest.mark.parametrize("base", ["hex", "bin", "sexagesimal"])
@pytest.mark.parametrize(("where", "field"), [
    ("args", "tasks[0].args[0]"), ("requires", "tasks[0].requires.mem_mb")])
async def test_a_huge_yaml_integer_is_a_400_naming_its_field(client: Client, base: str,
                                                             where: str, field: str) -> None:
    """YAML reads 0x..., 0b... and 1:2:3 integers of any size (Python's digit limit bounds
    decimal text only): one of 4,000 digits made a 500 (its str(), in an error message or
    the stored JSON, raised ValueError). fuzz30/runs/bigint.yaml."""
    value = _big(4000, base)
    task = (f"- call: ECHO\n  args: [{value}]\n" if where == "args"
            else f"- call: ECHO\n  args: [x]\n  requires: {{mem_mb: {value}}}\n")
    r = await client.post("/api/jobs", data=task.encode(),
                          headers={"Content-Type": "application/yaml"})
    err = await _error(r, 400)
    assert err["field"] == field, err
    assert err["message"].startswith(f"{field}: an integer of ") and "64 bits" in err["message"]


@pytest.mark.parametrize(("stored", "shown"), [
    (DEEP + b"]" * 100_000, "is nested too deeply: deeper than 64 levels"),
    (b"\xff\xfe", "is not UTF-8 text"), (b"[1, 2]", "has no log list"),
    (b'{"log": "one line"}', "has no log list"), (b'{"metrics": []}', "has no log list"),
])
async def test_a_run_record_that_is_not_one_is_a_line_naming_its_cid(
        tmp_path: Path, stored: bytes, shown: str) -> None:
    """A task's log and metrics are read from the run records its CHUNK_DONE or its job's
    record names: CIDs a member chose, whose bytes are any content. Such bytes are a line
    naming the CID and what is wrong, not a 500 (a KeyError, a TypeError, a RecursionError);
    the other records are served (was a 422 for the whole log: session 51, helper g, RR-2)."""
    from peer.http.app import _archived_lists

    node = Node(PeerConfig(data_dir=tmp_path / "peer", slots=1, mdns=False))
    try:
        good = node.store.add_bytes(b'{"log": ["a", "b"], "metrics": [{"m": 1}]}')
        bad = node.store.add_bytes(stored)
        record = {"id": "j1", "tasks": [{"name": "t", "logs": [good, bad]}]}
        *lines, said = (await _archived_lists(node, record, "t", "log"))[1]
        assert lines == ["a", "b"]
        assert said.startswith(f"[banzai] the run record {bad} is no run record ({shown}")
        assert said.endswith("): its lines are not shown")
        assert (await _archived_lists(node, record, "t", "metrics"))[1] == [{"m": 1}]
    finally:
        node.log.close()


async def test_a_deep_upload_is_refused_and_its_files_removed(client: Client,
                                                            tmp_path: Path) -> None:
    """A file 1,100 directories deep was a 500 (pathlib's mkdir(parents=True) recursed:
    RecursionError): a name deeper than a DAG the peer reads back is refused, naming it, and
    the upload's temporary directory is removed."""
    r = await client.post("/api/add", data=_multipart("d/" * 1100 + "f"),
                          headers={"Content-Type": MULTIPART})
    err = await _error(r, 400)
    assert err["field"] == "filename" and "1101 levels deep, more than 64" in err["message"]
    assert not [p for p in tmp_path.rglob("upload-*") if p.is_dir()]
