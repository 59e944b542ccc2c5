"""The web UI in the system Chromium (Playwright) against a real peer, fed what a hostile
member or content can put in front of a person (session 49, review r1): a bad heartbeat
entry costs one card, not the app (F2); the Mesh page's running chunks as the peer serves
them (F4); DAGs that link one block over and over are refused by the Browse page's verified
reader, the tab lives (F8); another page of the same host name cannot frame the UI, and
the UI's pages run under its Content-Security-Policy (F6). Each test fails on 6c66b4c1."""

from __future__ import annotations

import functools
import http.server
import json
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PeerProc, start_peer
from tests.helpers import car_form
from tests.integration.webui_helpers import (
    api,
    launched_chromium,
    require_browser,
    stop_ui_peer,
)

sync_api = require_browser()

from tests.integration.test_webui import Tab  # noqa: E402  (after the skips: it imports playwright)

MESH_NAME = f"webui-hostile-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerProc]:
    p = start_peer(tmp_path_factory.mktemp("webui-hostile") / "p0", "--slots", "2",
                   mesh=MESH_NAME)
    yield p
    stop_ui_peer(p)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launched_chromium() as b:
        yield b


@pytest.fixture
def tab(browser: Any, peer: PeerProc) -> Iterator[Tab]:
    t = Tab(browser, peer.url, login=peer.login_url)
    yield t
    try:
        t.assert_clean()
    finally:
        t.close()


def _with_member(page: Any, member: dict[str, Any]) -> None:
    """/api/peers as the peer answers it, with `member` added (a member's heartbeat and
    MEMBER payload stood in for at the page's network layer). The page is reloaded: the
    login URL already opened the Mesh page, and #/ again is no navigation."""
    def answer(route: Any) -> None:
        got = route.fetch()
        body = got.json()
        body["peers"].append(member)
        route.fulfill(response=got, body=json.dumps(body))
    page.route("**/api/peers", answer)
    page.reload()


HOSTILE = {"id": "e5" * 10, "name": "hostile", "http": "http://127.0.0.1:9/", "self": False,
           "state": "alive", "slots": 1, "free_slots": 1, "provides": 0, "last_heard_s": 0.5,
           "calls": ["T_SLEEP"], "running": [None, 5, "x", {"job": None}, [None]]}


def test_a_members_bad_running_entries_are_skipped_and_the_app_lives(tab: Tab) -> None:
    """Review r1 F2: one member's heartbeat `running: [null]` made the Mesh page throw, and
    every page after it rendered empty. Its card shows, idle; the other pages still work."""
    expect = sync_api.expect
    page = tab.page
    _with_member(page, HOSTILE)
    tab.go("/")
    expect(page.locator(".peer-card")).to_have_count(2)
    card = page.locator(".peer-card", has_text="hostile")
    expect(card.locator(".running-list li")).to_have_count(0)
    expect(card).to_contain_text("Idle.")
    page.click("nav >> text=Jobs")
    expect(page.locator("main h1")).to_have_text("Jobs")
    page.click("nav >> text=Mesh")
    expect(page.locator("main h1")).to_have_text("Mesh")
    expect(page.locator(".peer-card")).to_have_count(2)


def test_a_card_that_cannot_render_costs_that_card_only(tab: Tab) -> None:
    """Review r1 F2: no error boundary, so one throw anywhere blanked the app. A member whose
    entry breaks its card (here `calls` not a list: `.map` throws) shows "could not render"
    in its card's place; this peer's card, the page and the other pages stay."""
    expect = sync_api.expect
    page = tab.page
    tab.console.allow.append("calls")  # (the throw, reported by the boundary)
    _with_member(page, {**HOSTILE, "running": [], "calls": 5})
    tab.go("/")
    expect(page.locator(".panel-error")).to_contain_text("This peer card could not render:")
    expect(page.locator(".peer-card")).to_have_count(1)
    expect(page.locator(".peer-card").first).to_contain_text("this peer")
    expect(page.locator("main h1")).to_have_text("Mesh")
    page.click("nav >> text=Submit")
    expect(page.locator("main h1")).to_have_text("Submit a pipeline")


def test_a_page_that_cannot_render_shows_why_and_the_app_lives(tab: Tab) -> None:
    """Review r1 F2: the page's own boundary: a job page whose view throws (its `tasks` not
    a list) says why, and the nav leads to working pages."""
    expect = sync_api.expect
    page = tab.page
    tab.console.allow.append("tasks")
    job = "j00000000f0f2"
    page.route(f"**/api/jobs/{job}", lambda route: route.fulfill(
        status=200, content_type="application/json", body=json.dumps({
            "id": job, "name": "broken", "state": "running", "progress": 0.5,
            "submitted_by": "a1" * 8, "submitted_ms": 1, "outputs": {}, "tasks": 7})))
    tab.go(f"/jobs/{job}")
    expect(page.locator(".panel-error")).to_contain_text("This page could not render:")
    page.click("nav >> text=Jobs")
    expect(page.locator("main h1")).to_have_text("Jobs")


def test_the_mesh_page_lists_a_running_chunk_with_its_job_link(tab: Tab,
                                                              tmp_path: Path) -> None:
    """Review r1 F4: /api/peers serves each running chunk as [job, task, chunk, attempt];
    the page read `r.job` of a list: "· · chunk" linking to #/jobs/undefined."""
    expect = sync_api.expect
    job = api(tab.base, "jobs", body=json.dumps({"name": "napping", "tasks": [
        {"name": "nap", "call": "T_SLEEP", "args": [120]}]}).encode())["job"]
    try:
        page = tab.go("/")
        li = page.locator(".peer-card").first.locator(".running-list li")
        expect(li).to_have_count(1, timeout=30_000)
        expect(li.locator("a")).to_have_attribute("href", f"#/jobs/{job}")
        expect(li).to_contain_text(f"{job} · nap · chunk 0")
        li.locator("a").click()
        expect(page.locator("main h1")).to_contain_text("napping")
    finally:
        api(tab.base, f"jobs/{job}/cancel", body=b"{}", method="POST")


# -- F8: DAGs that expand without bound in the Browse page's verified reader


def _import_car(base: str, blocks: list[tuple[Any, bytes]], root: Any) -> None:
    """`blocks` into the peer by POST /api/v0/dag/import (pinned), as any user may."""
    body, headers = car_form(blocks, root)
    req = urllib.request.Request(
        f"{base}/api/v0/dag/import?pin-roots=true", data=body, method="POST", headers=headers)
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 200


def _file_bomb(width: int, levels: int, leaf: bytes, sizes: bool) -> tuple[Any, list[Any]]:
    """The reviewer's shape (/tmp/s49r1/filebomb.py): `levels` file nodes, each linking one
    child `width` times; `sizes`: with consistent blocksizes (then the root declares the
    true size), else none and a root that claims 10 bytes. In a directory as report.txt:
    (directory CID, blocks)."""
    from peer.cids import sha256_cid
    from peer.ipfs import dagpb
    from peer.ipfs.dagpb import DataType, PBLink, PBNode, UnixFSData, encode_node, encode_unixfs

    c = sha256_cid(leaf, "raw", 1)
    blocks = [(c, leaf)]
    size = len(leaf)
    for lvl in range(levels):
        top = lvl == levels - 1
        fs = encode_unixfs(UnixFSData(DataType.FILE, None, size * width if sizes else
                                      10 if top else None, (size,) * width if sizes else ()))
        node = encode_node(PBNode(tuple(PBLink(c.binary, "", 1) for _ in range(width)), fs))
        c = sha256_cid(node, "dag-pb", 1)
        blocks.append((c, node))
        size *= width
    d = dagpb.dir_node([("report.txt", c.binary, 10)])
    dc = sha256_cid(d, "dag-pb", 1)
    return dc, [*blocks, (dc, d)]


def test_a_file_dag_linking_one_child_over_and_over_is_refused_and_the_tab_lives(
        tab: Tab) -> None:
    """Review r1 F8: the reviewer's 133 KB DAG (1,000 links to one child, 3 levels, the root
    claiming 10 bytes: auto-verified) hung the Browse page and crashed the tab after 112 s.
    Now its root is checked before any child is fetched (no blocksizes for its links)."""
    expect = sync_api.expect
    root, blocks = _file_bomb(1000, 3, b"x" * 1024, sizes=False)
    _import_car(tab.base, blocks, root)
    page = tab.go(f"/ipfs/{root}/report.txt")
    expect(page.locator(".verify-error")).to_contain_text("0 blocksizes for 1000 links")
    assert page.evaluate("1 + 1") == 2  # (the tab answers)


def test_a_file_dag_of_empty_leaves_repeated_is_cut_at_the_repeat_allowance(tab: Tab) -> None:
    """Review r1 F8, with consistent sizes: a file of 0 bytes made of 10^9 links to one empty
    leaf (3 levels of 1,000): its sizes add up, so only the bound on blocks read again stops
    it (as the peer's exports bound them: beyond the distinct blocks' bytes)."""
    expect = sync_api.expect
    root, blocks = _file_bomb(1000, 3, b"", sizes=True)
    _import_car(tab.base, blocks, root)
    page = tab.go(f"/ipfs/{root}/report.txt")
    expect(page.locator(".verify-bound")).to_contain_text(
        "links the same blocks over and over", timeout=60_000)
    assert page.evaluate("1 + 1") == 2


def test_a_hamt_whose_buckets_link_one_shard_is_refused(tab: Tab) -> None:
    """Review r1 F8, the directory side (by reading): every bucket of a HAMT linking ONE
    sub-shard lists 256^k entries from k+1 blocks. A sub-shard linked twice is refused."""
    from peer.cids import sha256_cid
    from peer.ipfs.dagpb import DataType, PBLink, PBNode, UnixFSData, encode_node, encode_unixfs

    blocks: list[tuple[Any, bytes]] = []

    def put(data: bytes, codec: str) -> Any:
        c = sha256_cid(data, codec, 1)
        blocks.append((c, data))
        return c

    def shard(links: list[PBLink], bits: bytes) -> Any:
        fs = encode_unixfs(UnixFSData(DataType.HAMT_SHARD, bits, None, (), 0x22, 256))
        return put(encode_node(PBNode(tuple(links), fs)), "dag-pb")

    entry = put(b"hello", "raw")
    bottom = shard([PBLink(entry.binary, "00a", 5)], bytes(31) + b"\x01")
    level = bottom
    for _ in range(2):  # 256^2 entries named "a" from 3 shards (the peer's own listing of
        # it, which the page asks for beside, walks them all: kept small)
        level = shard([PBLink(level.binary, f"{i:02X}", 1) for i in range(256)], b"\xff" * 32)
    _import_car(tab.base, blocks, level)
    expect = sync_api.expect
    page = tab.go(f"/ipfs/{level}")
    expect(page.locator(".verify-error")).to_contain_text("is linked more than once")
    assert page.evaluate("1 + 1") == 2


# -- F6: framing and the Content-Security-Policy


def test_another_page_of_the_same_host_cannot_frame_the_logged_in_ui(
        tab: Tab, tmp_path: Path) -> None:
    """Review r1 F6: a page on another port of 127.0.0.1 (same site: the Strict session
    cookie goes along) framed the logged-in UI, every button acting with the session. Now
    the UI's CSP says frame-ancestors 'none' (and X-Frame-Options DENY): the frame stays
    empty."""
    (tmp_path / "frame.html").write_text(
        f'<!doctype html><iframe id="f" src="{tab.base}/#/jobs"></iframe>')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    tab.console.allow.append("frame-ancestors")  # (Chromium reports the refusal)
    tab.console.allow.append("status of 404")  # (the scratch server has no favicon)
    page = tab.page
    try:
        page.goto(f"http://127.0.0.1:{srv.server_address[1]}/frame.html")
        page.wait_for_load_state("load")
        framed = [f for f in page.frames if f is not page.main_frame]
        assert len(framed) == 1
        assert not framed[0].url.startswith(tab.base), framed[0].url  # an error page
        assert framed[0].query_selector("#app") is None
    finally:
        srv.shutdown()
        srv.server_close()


def test_every_page_runs_under_the_csp(tab: Tab) -> None:
    """The policy refuses nothing the UI does (a refusal is a console error, which the tab
    fixture fails on): each page renders its heading."""
    expect = sync_api.expect
    page = tab.go("/")
    expect(page.locator("main h1")).to_have_text("Mesh")
    csp = page.evaluate("() => fetch('./').then(r => r.headers.get('content-security-policy'))")
    assert csp is not None and "frame-ancestors 'none'" in csp
    for route, h1 in (("/jobs", "Jobs"), ("/submit", "Submit a pipeline"),
                      ("/browse", "Browse by CID")):
        tab.go(route)
        expect(page.locator("main h1")).to_have_text(h1)
