"""The web UI in the system Chromium (Playwright) against a real peer and a real corpus:
submit the seed pipeline through the form, watch it finish, open its results (audio, MFCC
heatmap, metrics), verified fetches (a tampered block is refused), field errors, cancel,
the mesh view, any peer's UI showing a job submitted on another, live, and no console
errors anywhere."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PeerProc, start_peer
from tests.helpers import wait_mesh
from tests.integration.webui_helpers import (
    CANVAS_STATS,
    CORPUS_ZIP,
    DESKTOP,
    PHONE,
    SPEAKER,
    Console,
    api,
    build_corpus,
    launched_chromium,
    require_browser,
    serve_corpus,
    shot,
    stop_ui_peer,
)

sync_api = require_browser()

BAD_REQUEST = "status of 400"  # Chromium logs every 4xx fetch; expected where the API rejects input
MESH_NAME = f"webui-{uuid.uuid4().hex[:12]}"  # this module's peers form their own mesh


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def corpus_url() -> Iterator[str]:
    d = build_corpus()
    with serve_corpus(d) as base:
        yield base


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerProc]:
    # Warm workers on (as a peer runs by default): its forkserver warms EXTRACT_MFCC up once
    # while the browser starts, instead of each of the seed job's two workers.
    p = start_peer(tmp_path_factory.mktemp("webui") / "p0", "--slots", "2",
                   "--fetch-allow", "127.0.0.1/32", mesh=MESH_NAME,  # the corpus server
                   env={"BANZAI_WARM_WORKERS": "1"})
    yield p
    stop_ui_peer(p)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launched_chromium() as b:
        yield b


class Tab:
    """A fresh browser context + page with console-error collection."""

    def __init__(self, browser: Any, base: str, viewport: dict[str, int] = DESKTOP,
                 login: str | None = None) -> None:
        self.base = base
        self.context = browser.new_context(viewport=viewport)
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.console = Console()
        self.console.attach(self.page)
        if login:  # the printed login URL: the session cookie, then the UI
            self.page.goto(login)

    def go(self, route: str) -> Any:
        self.page.goto(f"{self.base}/#{route}")
        return self.page

    def close(self) -> None:
        self.context.close()

    def assert_clean(self) -> None:
        assert self.console.unexpected() == [], "\n".join(self.console.unexpected())


@pytest.fixture
def tab(browser: Any, peer: PeerProc) -> Iterator[Tab]:
    t = Tab(browser, peer.url, login=peer.login_url)
    yield t
    try:
        t.assert_clean()
    finally:
        t.close()


def _state_and_progress(page: Any) -> tuple[str, int]:
    """The job page's state and its bar's percentage, read in one evaluation: two reads could
    straddle a render and pair a stale percentage with a newer state."""
    state, v = page.evaluate("""() => [
        document.querySelector('.job-page')?.dataset.state ?? '',
        document.querySelector('.job-summary [role="progressbar"]')
            ?.getAttribute('aria-valuenow') ?? null]""")
    return state, int(v) if v is not None else -1


@pytest.fixture(scope="module")
def seed_job(browser: Any, peer: PeerProc, corpus_url: str) -> Iterator[dict[str, Any]]:
    """Submit the seed pipeline through the form (URL pointed at the local corpus) and
    watch the job page until it is done; returns what was observed."""
    t = Tab(browser, peer.url, login=peer.login_url)
    page = t.go("/submit")
    url_input = page.locator("#t0-arg-urls-0")
    url_input.wait_for()
    prefilled = url_input.input_value()
    url_input.fill(f"{corpus_url}{CORPUS_ZIP}")
    page.click("#submit-pipeline")
    page.wait_for_url(re.compile(r"#/jobs/j[0-9a-f]+(\.[0-9a-f]+)?$"))
    job = page.url.rsplit("/", 1)[1]
    seen: list[int] = []
    state = ""
    deadline = time.monotonic() + 100
    while time.monotonic() < deadline:
        if page.locator(".job-summary").count():
            state, pct = _state_and_progress(page)
            seen.append(pct)
            if state in ("done", "failed", "cancelled"):
                break
        page.wait_for_timeout(100)
    view = api(peer.url, f"jobs/{job}")
    yield {"job": job, "tab": t, "seen": seen, "state": state, "view": view,
           "prefilled": prefilled}
    try:
        t.assert_clean()
    finally:
        t.close()


def _canvas(page: Any, selector: str, *, ours: bool = True) -> dict[str, Any]:
    """Pixel statistics of the first canvas matching `selector`, once it is drawn.

    A canvas of ours (charts.js' Canvas) says `data-drawn` after its first drawing: until
    then it is a blank 300 x 150 element. uPlot's canvases are drawn as they are made.
    """
    loc = page.locator(f"{selector}[data-drawn]" if ours else selector).first
    loc.wait_for()
    stats: dict[str, Any] = loc.evaluate(CANVAS_STATS)
    return stats


def _listing(base: str, cid: str, path: str = "") -> dict[str, Any]:
    req = urllib.request.Request(f"{base}/ipfs/{cid}{'/' + path if path else ''}",
                                 headers={"Accept": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        listing: dict[str, Any] = json.loads(r.read())
    return listing


# ------------------------------------------------------------------ tests


def test_seed_pipeline_submitted_through_the_form_reaches_100(seed_job: dict[str, Any]) -> None:
    assert seed_job["prefilled"].endswith(CORPUS_ZIP)  # the seed pipeline is prefilled
    assert seed_job["state"] == "done", seed_job["view"]
    seen = [v for v in seed_job["seen"] if v >= 0]
    assert seen[-1] == 100
    assert seen == sorted(seen), "progress went backwards"
    assert any(0 <= v < 100 for v in seen), "never saw the job before it finished"
    wf = seed_job["view"]["workflow"]["tasks"]
    assert [t["call"] for t in wf] == ["FETCH_FESTVOX", "FILTER_LONGER", "EXTRACT_MFCC", "LEARN"]
    assert wf[2]["params"]["fft_size"] == 32 and wf[1]["params"]["seconds"] == 5.0

    page = seed_job["tab"].page
    expect = sync_api.expect  # assertions that wait: the page renders after SSE events
    cards = page.locator(".task-card")
    expect(cards).to_have_count(4)
    for i in range(4):
        expect(cards.nth(i)).to_have_class(re.compile(r"\bstate-done\b"))
        bar = cards.nth(i).locator('.progress-row [role="progressbar"]')
        expect(bar).to_have_attribute("aria-valuenow", "100")
    expect(page.locator(".dag-node.state-done")).to_have_count(4)
    # which peer ran which chunk
    peer_id = seed_job["view"]["submitted_by"]
    expect(page.locator(f'.chunk-table a[title="{peer_id}"]').first).to_be_visible()
    # the log of a task
    learn = page.locator('.task-card[data-task="learn"]')
    learn.locator(".log-disclosure > summary").click()
    expect(learn.locator("pre.log")).to_contain_text("LEARN:")
    # live metrics of LEARN from GET .../metrics
    stats = _canvas(page, '.task-card[data-task="learn"] .metrics-disclosure canvas', ours=False)
    assert stats["painted"] > 0.01 and stats["colours"] > 3
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "job-1280", docs=True)
    shot(page, "job-1280-full", full_page=True)
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(300)
    page.evaluate("window.scrollTo(0, 0)")
    expect(page.locator("svg.dag")).to_have_count(1)
    shot(page, "job-phone", docs=True)
    page.set_viewport_size(DESKTOP)
    # "Edit & resubmit" loads the job's workflow back into the form, as the seed's list form
    page.click("text=Edit & resubmit")
    page.wait_for_url(re.compile(r"#/submit$"))
    expect(page.locator("#t0-arg-urls-0")).to_have_value(
        seed_job["view"]["workflow"]["tasks"][0]["params"]["urls"][0])
    page.click(".preview > summary")
    sent = json.loads(page.locator(".preview pre").inner_text())
    assert [t["call"] for t in sent] == ["FETCH_FESTVOX", "FILTER_LONGER", "EXTRACT_MFCC", "LEARN"]


def test_result_browser_metrics_audio_and_mfcc(seed_job: dict[str, Any], tab: Tab) -> None:
    assert seed_job["state"] == "done"
    outputs = seed_job["view"]["outputs"]
    page = tab.go(f"/jobs/{seed_job['job']}")
    page.click("a.open-result")
    page.wait_for_url(re.compile(rf"#/ipfs/{outputs['learn']}$"))
    expect = sync_api.expect
    expect(page.locator('.preview-head [data-verify="ok"]')).to_be_visible()
    expect(page.locator(".metrics-panel")).to_contain_text("held-out")
    stats = _canvas(page, ".metrics-panel .chart canvas", ours=False)
    assert stats["painted"] > 0.01 and stats["colours"] > 3, stats
    names = page.locator(".dir-table .entry").evaluate_all("els => els.map(e => e.dataset.name)")
    assert {"metrics.json", "model.json", "model.npz", "report.md"} <= set(names)
    # a directory download is a CAR from the gateway
    car = page.locator("a", has_text="Download directory (.car)")
    assert "format=car" in (car.get_attribute("href") or "")
    shot(page, "result-1280", docs=True)
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(300)
    shot(page, "result-phone", docs=True)
    page.set_viewport_size(DESKTOP)

    # audio: the filtered WAVs, streamed from the gateway into an <audio> element
    wavs = [link["Name"] for link in _listing(tab.base, outputs["filter_longer"], SPEAKER)["Links"]
            if link["Name"].endswith(".wav")]
    assert wavs
    page = tab.go(f"/ipfs/{outputs['filter_longer']}")
    page.click(f'.dir-table a.entry-dir[data-name="{SPEAKER}"]')
    def is_media(r: Any) -> bool:
        return bool(r.url.endswith(f"/{wavs[0]}") and r.request.resource_type == "media")

    with page.expect_response(is_media) as resp_info:
        page.click(f'.dir-table a.entry[data-name="{wavs[0]}"]')
    resp = resp_info.value
    assert resp.status in (200, 206)
    assert resp.headers["content-type"].startswith("audio/")
    page.wait_for_function("() => { const a = document.querySelector('audio');"
                           " return a && a.readyState >= 1 && a.duration > 0; }")
    duration = page.evaluate("document.querySelector('audio').duration")
    assert duration >= 5.0  # FILTER_LONGER 5 kept only utterances of 5 s or more
    expect(page.locator('.audio-preview [data-verify="ok"]')).to_be_visible()
    assert _canvas(page, ".wave-canvas")["painted"] > 0.01
    shot(page, "audio-1280")

    # the MFCC heatmap of one utterance, parsed from the .npy in the browser
    npys = [link["Name"] for link in _listing(tab.base, outputs["extract_mfcc"], SPEAKER)["Links"]
            if link["Name"].endswith(".npy")]
    page = tab.go(f"/ipfs/{outputs['extract_mfcc']}/{SPEAKER}/{npys[0]}")
    expect(page.locator('.npy-preview [data-verify="ok"]')).to_be_visible()
    expect(page.locator(".npy-preview")).to_contain_text("× 13 coefficients")
    stats = _canvas(page, ".heatmap-canvas")
    assert stats["painted"] > 0.3 and stats["colours"] > 20, stats
    shot(page, "mfcc-1280", docs=True)


def test_tampered_block_is_refused(seed_job: dict[str, Any], tab: Tab) -> None:
    outputs = seed_job["view"]["outputs"]
    links = _listing(tab.base, outputs["filter_longer"], SPEAKER)["Links"]
    victim = next(link for link in links if link["Name"].endswith(".wav"))
    tampered: list[str] = []

    def tamper(route: Any) -> None:
        resp = route.fetch()
        body = bytearray(resp.body())
        body[len(body) // 2] ^= 0xFF
        tampered.append(route.request.url)
        route.fulfill(response=resp, body=bytes(body))

    page = tab.page
    page.route(re.compile(rf"/ipfs/{victim['Hash']}\?format=raw"), tamper)
    tab.go(f"/ipfs/{outputs['filter_longer']}/{SPEAKER}/{victim['Name']}")
    expect = sync_api.expect
    expect(page.locator('[data-verify="bad"]')).to_be_visible()
    expect(page.locator(".verify-error")).to_contain_text("hash mismatch")
    expect(page.locator(".verify-error")).to_contain_text(victim["Hash"])
    assert tampered
    assert page.locator("audio").count() == 0  # refused: nothing from that response is played
    assert page.locator(".wave-canvas").count() == 0
    shot(page, "tampered-1280")
    # the same file through an honest gateway is verified
    page.unroute(re.compile(rf"/ipfs/{victim['Hash']}\?format=raw"))
    page.reload()
    expect(page.locator('.audio-preview [data-verify="ok"]')).to_be_visible()


def test_bad_pipeline_shows_the_error_at_the_field(tab: Tab) -> None:
    tab.console.allow.append(BAD_REQUEST)
    expect = sync_api.expect
    page = tab.go("/submit")
    page.locator("#t1-arg-seconds").fill("-1")
    page.click("#submit-pipeline")
    err = page.locator('[data-field-error="t1-arg-seconds"]')
    expect(err).to_contain_text(">= 0")
    expect(page.locator("#t1-arg-seconds")).to_have_attribute("aria-invalid", "true")
    expect(page.locator(".submit-error")).to_have_attribute("data-field", "tasks[1].args[0]")
    # focus moves there (in an effect after the render: wait for it, do not sample it)
    expect(page.locator("#t1-arg-seconds")).to_be_focused()
    shot(page, "field-error-1280")
    # a wrong type on another step, and a missing required value
    page.locator("#t1-arg-seconds").fill("5")
    page.locator("#t2-arg-fft_size").fill("many")
    page.click("#submit-pipeline")
    expect(page.locator('[data-field-error="t2-arg-fft_size"]')).to_contain_text("must be int")
    expect(page.locator('[data-field-error="t1-arg-seconds"]')).to_have_count(0)
    page.locator("#t2-arg-fft_size").fill("")
    page.locator("#t0-arg-urls-0").fill("")
    page.click("#submit-pipeline")
    expect(page.locator('[data-field-error="t0-arg-urls-0"]')).to_contain_text("urls")
    # YAML pasted in the text editor: the error names the field
    page.click("#tab-text")
    page.locator("#pipeline-text").fill(
        "- call: FETCH_FESTVOX\n  args: [\"https://corpus.example/a.zip\"]\n- call: NOPE\n")
    page.click("#submit-pipeline")
    expect(page.locator('[data-field-error="text"]')).to_contain_text("tasks[1].call")
    assert "#/submit" in page.url


def test_cancel_a_running_job_from_the_ui(tab: Tab) -> None:
    expect = sync_api.expect
    page = tab.go("/submit")
    page.click("#tab-text")
    page.locator("#pipeline-text").fill("- call: T_SLEEP\n  args: [3600]\n")
    page.click("#submit-pipeline")
    page.wait_for_url(re.compile(r"#/jobs/j[0-9a-f]+(\.[0-9a-f]+)?$"))
    job = page.url.rsplit("/", 1)[1]
    expect(page.locator(".job-page")).to_have_attribute("data-state", "running", timeout=30_000)
    # keyboard only: focus the button, Enter, then confirm with Enter (focus moves to "Yes")
    page.locator("button", has_text="Cancel job").focus()
    page.keyboard.press("Enter")
    expect(page.locator(".confirm")).to_be_visible()
    expect(page.locator("button", has_text="Yes, cancel job")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator(".job-page")).to_have_attribute("data-state", "cancelled")
    # the job's banner; the task panel may add its own "Stopped: cancelled" alert
    expect(page.locator(".alert-warn", has_text="Job cancelled")).to_be_visible()
    assert api(tab.base, f"jobs/{job}")["state"] == "cancelled"
    shot(page, "cancelled-1280")


def test_cid_decoding_and_verified_reads_match_the_store(tab: Tab, tmp_path: Path) -> None:
    """CIDv0 (dag-pb leaves) and CIDv1 (raw leaves) multi-block files read and verified in JS."""
    data = os.urandom(700_000)  # 3 chunks of 256 KiB: a root node with links
    digest = hashlib.sha256(data).hexdigest()
    v0 = api(tab.base, "add?cid-version=0&name=blob.bin", body=data,
             content_type="application/octet-stream")["cid"]
    v1 = api(tab.base, "add?cid-version=1&name=blob.bin", body=data,
             content_type="application/octet-stream")["cid"]
    assert v0.startswith("Qm") and v1.startswith("bafy")
    small = api(tab.base, "add?cid-version=1&name=s.txt", body=b"hello banzai\n",
                content_type="application/octet-stream")["cid"]
    page = tab.go("/browse")
    result = page.evaluate(
        """async ([v0, v1, small]) => {
          const cid = await import('./ui/js/cid.js');
          const v = await import('./ui/js/verify.js');
          const sha = await import('./ui/js/sha256.js');
          const hexOf = async (b) => cid.hex(await sha.sha256(b));
          const p0 = cid.parseCid(v0), p1 = cid.parseCid(v1), ps = cid.parseCid(small);
          const b0 = await v.readFile(v0), b1 = await v.readFile(v1);
          const vectors = {};
          for (const n of [0, 3, 55, 56, 63, 64, 65, 1000]) {
            const d = new Uint8Array(n).map((_, i) => (i * 7 + 3) & 255);
            vectors[n] = [cid.hex(sha.sha256js(d)), await hexOf(d)];
          }
          return {
            v0: [p0.version, p0.codecName, p0.multihash.name, p0.string === v0,
                 cid.cidFromBytes(p0.bytes).string === v0],
            v1: [p1.version, p1.codecName, p1.multihash.name, p1.string === v1],
            small: [ps.codecName, cid.hex(ps.multihash.digest)],
            len0: b0.length, len1: b1.length, h0: await hexOf(b0), h1: await hexOf(b1),
            vectors, b58: cid.base58Encode(cid.base58Decode('1112')),
            bad: (() => {
              try { cid.parseCid('bafyINVALID'); return 'parsed'; } catch (e) { return e.name; }
            })(),
          };
        }""", [v0, v1, small])
    assert result["v0"] == [0, "dag-pb", "sha2-256", True, True]
    assert result["v1"] == [1, "dag-pb", "sha2-256", True]
    assert result["small"] == ["raw", hashlib.sha256(b"hello banzai\n").hexdigest()]
    assert result["len0"] == result["len1"] == len(data)
    assert result["h0"] == result["h1"] == digest
    for n, (js, webcrypto) in result["vectors"].items():
        expected = hashlib.sha256(bytes((i * 7 + 3) & 255 for i in range(int(n)))).hexdigest()
        assert js == webcrypto == expected, n
    assert result["b58"] == "1112"
    assert result["bad"] == "CidError"
    # the browser page of a CIDv0 file says verified
    tab.go(f"/ipfs/{v0}")
    sync_api.expect(tab.page.locator('[data-verify="ok"]')).to_be_visible()


def test_the_job_list_pages_newest_first(tab: Tab, peer: PeerProc) -> None:
    """`#/jobs?limit=2`: two rows a page, Older and Newer walk the API's pages in order."""
    expect = sync_api.expect
    for i in range(3):
        api(peer.url, "jobs", body=json.dumps([{"call": "ECHO", "args": [f"page {i}"]}]).encode())
    newest = [j["id"] for j in api(peer.url, "jobs")["jobs"]]
    page = tab.go("/jobs?limit=2")
    rows = page.locator("tr.job-row")
    expect(rows).to_have_count(2)
    assert [rows.nth(i).get_attribute("data-job") for i in range(2)] == newest[:2]
    expect(page.locator(".jobs-count")).to_contain_text("Jobs 1–2, newest first")
    expect(page.locator('[data-pager="newer"]')).to_be_disabled()
    page.click('[data-pager="older"]')
    expect(page.locator(".pager")).to_contain_text("Page 2")
    expect(rows.first).to_have_attribute("data-job", newest[2])
    page.click('[data-pager="newer"]')
    expect(rows.first).to_have_attribute("data-job", newest[0])


def test_readable_error_states(tab: Tab, browser: Any, peer: PeerProc) -> None:
    """Job failed, peer unreachable, gateway unreachable: each says so in words."""
    expect = sync_api.expect
    # a failed job
    job = api(peer.url, "jobs", body=json.dumps([{"call": "T_RAISE", "args": ["boom at step one"]}])
              .encode())["job"]
    page = tab.go(f"/jobs/{job}")
    expect(page.locator(".job-page")).to_have_attribute("data-state", "failed", timeout=30_000)
    expect(page.locator(".job-summary .alert-error")).to_contain_text("boom at step one")
    # its log panel shows what the run printed before it failed (stored: session 51)
    card = page.locator('[data-task="t_raise"]')
    card.locator(".log-disclosure summary").click()
    log = card.locator("pre.log")
    expect(log).to_contain_text("about to fail")
    expect(log).to_contain_text("attempt 0 failed: ValueError: boom at step one")
    shot(page, "failed-1280")

    # the gateway set in Settings is unreachable (a closed port on loopback)
    tab.console.allow.append("net::ERR_CONNECTION_REFUSED")
    outputs = {}
    for j in api(peer.url, "jobs")["jobs"]:
        outputs.update(j["outputs"])
    cid = next(iter(outputs.values()))
    with socket.socket() as sock:  # a free port, closed again: connections are refused
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    page.click('button[title="Settings"]')
    page.locator("#gateway-url").fill(closed)
    page.click('.dialog button[type="submit"]')
    tab.go(f"/ipfs/{cid}")
    expect(page.locator(".alert-error")).to_contain_text("Gateway unreachable")
    expect(page.locator('[data-verify="unreachable"]')).to_be_visible()
    assert page.evaluate("localStorage.getItem('banzai.gateway')") == closed
    page.click('button[title="Settings"]')
    page.click("text=Use this peer")
    page.click('.dialog button[type="submit"]')
    page.reload()
    expect(page.locator('[data-verify="ok"]').first).to_be_visible()

    # the peer that served the page goes away: every /api request fails
    tab.console.allow.append("net::ERR_FAILED")
    page.route("**/api/**", lambda route: route.abort())
    tab.go("/jobs")
    page.reload()
    expect(page.locator(".banner")).to_contain_text("Peer unreachable")
    expect(page.locator(".alert-error").last).to_contain_text("cannot reach this peer")
    shot(page, "offline-1280")
    page.unroute("**/api/**")
    page.click(".banner button")
    expect(page.locator(".banner")).to_have_count(0, timeout=15_000)


def test_any_peer_same_view(browser: Any, peer_factory: Any) -> None:
    """A job submitted through peer A's API shows up in peer B's UI and finishes there,
    live: B's job list gets the row and B's job page goes from running to done (progress
    on the way, 100 % at the end) without a reload."""
    expect = sync_api.expect
    with ThreadPoolExecutor(2) as pool:  # at once: a start is mostly the peer's own imports
        a, b = pool.map(lambda name: peer_factory(name, "--slots", "1"), ("a", "b"))
    wait_mesh([a, b], 2)  # mDNS on loopback: each sees both alive
    a_id = api(a.url, "health")["peer"]
    t = Tab(browser, b.url, login=b.login_url)
    try:
        page = t.go("/jobs")
        expect(page.locator(".conn")).to_contain_text("Live")  # B's event stream is open
        expect(page.locator(".empty")).to_contain_text("No jobs yet")  # B's list is loaded
        page.evaluate("window.__noReload = true")  # a reload or a new document drops it
        job = api(a.url, "jobs", body=json.dumps(
            [{"call": "T_SLEEP", "args": [4]}]).encode())["job"]
        row = page.locator(f'tr.job-row[data-job="{job}"]')
        expect(row).to_be_visible(timeout=10_000)  # pushed to B's list (it polls every 15 s)
        row.locator("a.job-link").click()
        page.wait_for_url(re.compile(rf"#/jobs/{job}$"))
        state = page.locator(".job-page")
        expect(state).to_have_attribute("data-state", re.compile(r"^(pending|running)$"))
        seen: list[int] = []
        deadline = time.monotonic() + 30
        while True:
            b_state, pct = _state_and_progress(page)
            seen.append(pct)
            if b_state == "done":
                break
            assert time.monotonic() < deadline, f"B's page never showed done: {seen}"
            page.wait_for_timeout(100)
        expect(page.locator(".job-summary .job-state")).to_have_text("done")
        expect(page.locator('.job-summary [role="progressbar"]')).to_have_attribute(
            "aria-valuenow", "100")
        assert any(0 < v < 100 for v in seen), f"no progress seen while running: {seen}"
        assert seen == sorted(seen), f"progress went backwards: {seen}"
        assert page.evaluate("window.__noReload === true"), "B's page was reloaded"
        # the job B shows is A's: submitted by A, the same view through either API
        expect(page.locator(f'.page-head [title="{a_id}"]')).to_be_visible()
        view_a, view_b = api(a.url, f"jobs/{job}"), api(b.url, f"jobs/{job}")
        assert view_b["state"] == view_a["state"] == "done"
        assert view_b["outputs"] == view_a["outputs"] and view_b["outputs"]
        shot(page, "same-view-1280")
        t.assert_clean()
    finally:
        t.close()


def test_mesh_view_shows_every_peer(tab: Tab, peer: PeerProc,
                                    tmp_path_factory: pytest.TempPathFactory) -> None:
    """A second peer joins the mesh (mDNS on loopback): both show up, live (runs last)."""
    expect = sync_api.expect
    page = tab.go("/")
    me = page.locator(".peer-card").first
    expect(me).to_contain_text("this peer")
    expect(me).to_contain_text("/ 2")  # slots
    me.locator("summary", has_text="Capabilities").click()
    expect(me).to_contain_text("EXTRACT_MFCC")
    expect(page.locator(".conn")).to_contain_text("Live")
    other = start_peer(tmp_path_factory.mktemp("webui") / "p1", "--slots", "1",
                       "--fetch-allow", "127.0.0.1/32", mesh=MESH_NAME)
    try:
        expect(page.locator(".peer-card")).to_have_count(2, timeout=45_000)
        card = page.locator(".peer-card").nth(1)
        expect(card.locator(".peer-state")).to_have_text("alive", timeout=30_000)
        expect(card.locator("a", has_text="Open its UI")).to_have_attribute(
            "href", f"{other.url}/")
        expect(card).to_contain_text("/ 1")
        shot(page, "mesh-1280", docs=True)
        page.set_viewport_size(PHONE)
        shot(page, "mesh-phone")
        # the other peer serves the same UI, talking to itself (relative URLs)
        tab.page.goto(f"{other.url}/#/")
        expect(page.locator(".peer-card").first).to_contain_text("this peer")
        expect(page.locator(".peer-card")).to_have_count(2, timeout=30_000)
    finally:
        other.kill(signal.SIGTERM)
        time.sleep(0.2)
        if other.proc.stdout is not None:
            other.proc.stdout.close()


ATTACK_PAGE = b"""<!DOCTYPE html><html><head><title>page</title></head><body>
<script>
document.title = "script ran";
fetch("/api/jobs", {method: "POST", headers: {"Content-Type": "text/plain"},
                    body: '[{"call": "ECHO", "args": ["from the page"]}]'});
const x = new XMLHttpRequest();
x.open("POST", "/api/jobs"); x.send('[{"call": "ECHO", "args": ["xhr"]}]');
</script></body></html>"""


def test_uploaded_html_page_cannot_call_the_api(tab: Tab) -> None:
    """An HTML page added through the API and opened at its /ipfs/ URL is a sandbox: its
    script does not run (so neither its fetch nor its XHR to /api/jobs is ever sent), its
    origin is opaque (no cookies, nothing same-origin with the UI), and no job appears."""
    before = len(api(tab.base, "jobs")["jobs"])
    cid = api(tab.base, "add?name=page.html", body=ATTACK_PAGE,
              content_type="application/octet-stream")["cid"]
    tab.console.allow.append("Blocked script execution")  # Chromium reports the sandbox
    resp = tab.page.goto(f"{tab.base}/ipfs/{cid}?filename=page.html")
    assert resp is not None and resp.status == 200
    assert resp.headers["content-security-policy"] == "sandbox"
    assert resp.headers["x-content-type-options"] == "nosniff"
    tab.page.wait_for_load_state("load")  # an inline script runs before "load" or never
    assert tab.page.title() == "page"
    assert tab.page.evaluate("self.origin") == "null"  # an opaque origin
    assert tab.page.evaluate(
        "(() => { try { return document.cookie; } catch (e) { return e.name; } })()"
    ) == "SecurityError"
    assert len(api(tab.base, "jobs")["jobs"]) == before  # no job was created


def test_job_page_shows_the_published_ipns_name(seed_job: dict[str, Any], tab: Tab) -> None:
    """`banzai submit --wait --publish KEY` publishes the final output (name/publish): the job
    view carries the name and the job page links /ipns/NAME (gateway) and its content."""
    assert seed_job["state"] == "done"
    job, final = seed_job["job"], seed_job["view"]["outputs"]["learn"]
    req = urllib.request.Request(f"{tab.base}/api/v0/name/publish?arg=/ipfs/{final}&key=self",
                                 method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        name = json.loads(r.read())["Name"]
    assert api(tab.base, f"jobs/{job}")["published"] == [
        {"name": name, "value": f"/ipfs/{final}", "task": "learn"}]
    expect = sync_api.expect
    page = tab.go(f"/jobs/{job}")
    link = page.locator(".published a.ipns-name")
    expect(link).to_have_text(f"/ipns/{name}")
    with urllib.request.urlopen(f"{tab.base}/{link.get_attribute('href')}", timeout=30) as r:
        assert r.status == 200 and r.headers["X-Ipfs-Roots"].startswith(final)
    page.click(".published a.browse-ipns")
    page.wait_for_url(re.compile(rf"#/ipfs/{final}$"))
    expect(page.locator(".browse-page")).to_be_visible()


def test_a_job_page_served_by_a_member_says_so_and_asks_again(tab: Tab) -> None:
    """Partial replication (lanes: off in a running peer until LANES_FEATURE is announced, so
    this peer's answers are stood in for at the page's network layer): a peer that holds none
    of a lanes job's task events answers its view as a member gave it (`served_by`), or 503
    naming the members; no event of the job reaches the page, so it must not wait for one:
    it shows the 503's words, asks again every few seconds, and says where the view came from."""
    expect = sync_api.expect
    tab.console.allow.append("status of 503")
    job, member = "j00000000f0f0", "a1" * 8
    answers: list[int] = []
    view = {"id": job, "name": "remote", "state": "running", "submitted_by": member,
            "submitted_ms": int(time.time() * 1000), "finished_ms": None, "duration_s": None,
            "progress": 0.5, "outputs": {}, "published": [], "served_by": member,
            "workflow": {"name": "remote", "tasks": [{"name": "t0", "call": "T_SLEEP"}]},
            "tasks": [{"name": "t0", "call": "T_SLEEP", "params": {}, "depends": [], "cid": None,
                       "state": "running", "progress": 0.5, "attempts": 1, "peers": [member],
                       "output": None, "partial": None, "cached": False, "warning": None,
                       "error": None, "started_ms": None, "finished_ms": None,
                       "duration_s": None, "waiting": None, "chunks": [], "chunks_total": 0,
                       "chunks_from": 0}]}

    def answer(route: Any) -> None:
        answers.append(1)
        if len(answers) == 1:
            route.fulfill(status=503, content_type="application/json", body=json.dumps({
                "error": "Unavailable", "field": "members",
                "message": f"job {job}'s view is held by its members only ({member}: not "
                           "live)"}))
        else:
            route.fulfill(status=200, content_type="application/json", body=json.dumps(view))

    page = tab.page
    page.route(f"**/api/jobs/{job}", answer)
    tab.go(f"/jobs/{job}")
    expect(page.locator(".alert-error")).to_contain_text(f"{member}: not live")
    expect(page.locator(".served-by")).to_contain_text("holds none of this job's task events",
                                                       timeout=15_000)
    expect(page.locator(".job-page")).to_have_attribute("data-state", "running")
    n = len(answers)
    deadline = time.monotonic() + 15
    while len(answers) <= n and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    assert len(answers) > n, "the page did not ask again"
    page.unroute(f"**/api/jobs/{job}")


def test_a_job_page_does_not_ask_again_on_a_503_other_than_the_members_one(tab: Tab) -> None:
    """Review r2, finding 5: the page asked again every 3 s on any 503 (with lanes off too:
    the HTTP gate's, a compacted job's record not held), each ask making the peer try every
    live peer in turn. Only a view `served_by` a member, or the 503 naming the members
    (`field: "members"`), is asked again."""
    expect = sync_api.expect
    tab.console.allow.append("status of 503")
    job = "j00000000f0f1"
    answers: list[int] = []

    def answer(route: Any) -> None:
        answers.append(1)
        route.fulfill(status=503, content_type="application/json", body=json.dumps({
            "error": "Unavailable", "field": "job",
            "message": f"job {job!r} has ended and its record is not held here"}))

    page = tab.page
    page.route(f"**/api/jobs/{job}", answer)
    tab.go(f"/jobs/{job}")
    expect(page.locator(".alert-error")).to_contain_text("its record is not held here")
    page.wait_for_timeout(7000)  # (over twice the members' poll period)
    # (one more ask at most: the one a live view makes once when the event stream opens
    # after it appeared, session 49 helper c; a poll every 3 s would make it 3 or more)
    assert len(answers) <= 2, f"the page asked again: {len(answers)} asks"
    page.unroute(f"**/api/jobs/{job}")
