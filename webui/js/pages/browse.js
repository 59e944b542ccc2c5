// CID browser: directories and files through the gateway, every block verified against its
// CID; WAV playback, MFCC heatmaps from .npy, LEARN metrics, downloads (files and CARs).

import { useEffect, useRef, useState } from "preact/hooks";
import { useLive } from "../api.js";
import { Canvas, drawHeatmap } from "../charts.js";
import { parseCid } from "../cid.js";
import { MetricsPanel } from "../metrics.js";
import { parseNpy } from "../npy.js";
import { OpenCid } from "../opencid.js";
import { gatewayBase, gatewayLabel, gwUrl } from "../settings.js";
import { CidChip, CopyButton, Empty, ErrorBox, Spinner, fmtBytes, fmtDuration, html, shortCid, usePageTitle } from "../ui.js";
import { BoundError, GatewayError, VerifyError, dirLister, readFile, resolvePath, statNode } from "../verify.js";

const AUTO_VERIFY_BYTES = 64 * 1024 * 1024;
const TEXT_EXT = new Set(["json", "md", "txt", "csv", "yaml", "yml", "toml", "log", "tsv", "xml", "html"]);
const AUDIO_EXT = new Set(["wav", "flac", "mp3", "ogg"]);
// "Recent outputs": the newest jobs with outputs among this many newest (session 49, review
// rr S6: each refetch asked for the whole list, up to 1,000 entries, for 8 cards)
const OUTPUT_JOBS = 50;
// Entries a page of a directory's listing shows, and asks the gateway's JSON listing for
// (`?limit=&after=`): a directory of a million entries is read a page at a time, at the
// "more" control, never whole into the tab (session 52, helper d)
export const DIR_PAGE = 500;
// a gateway's listing rows kept unmatched, and its pages asked for one page of entries: past
// either, the gateway is not asked again for that directory; kinds and sizes come from the
// verified blocks (review r2 of session 52, finding 3: a gateway padding its pages, or
// answering a row at a time, held any number of rows in the tab and cost a request an entry)
export const GW_ROWS_KEPT = 4 * DIR_PAGE;
export const GW_ASKS_PER_PAGE = 8;

const ext = (name) => (name.includes(".") ? name.split(".").pop().toLowerCase() : "");
const joinPath = (path, name) => (path ? `${path}/${name}` : name);
const hrefOf = (root, path) => `#/ipfs/${root}${path ? "/" + path.split("/").map(encodeURIComponent).join("/") : ""}`;

// ------------------------------------------------------------------ verification badge

export function VerifyBadge({ state, detail }) {
  const label = {
    pending: "Verifying…", ok: "Verified", bad: "Hash mismatch — refused", unreachable: "Not verified: gateway unreachable",
    error: "Not verified", skipped: "Not verified yet",
  }[state];
  const icon = { ok: "✓", bad: "✗", pending: "…" }[state] || "!";
  return html`<span class=${`verify verify-${state}`} data-verify=${state} role="status" title=${detail || label}>
    <span aria-hidden="true">${icon}</span> ${label}${state === "ok" && detail ? html`<span class="verify-detail"> · ${detail}</span>` : null}
  </span>`;
}

function errorState(err) {
  if (err instanceof VerifyError) return "bad";
  if (err instanceof GatewayError && err.network) return "unreachable";
  return "error";
}

function GatewayProblem({ err }) {
  if (!err) return null;
  if (err instanceof BoundError) {
    return html`<div class="alert alert-warn verify-error verify-bound" role="alert"><strong>Not read in the browser.</strong>
      <span class="pre-wrap"> ${err.message}</span></div>`;
  }
  if (err instanceof VerifyError) {
    return html`<div class="alert alert-error verify-error" role="alert"><strong>Refused: the content does not match its CID.</strong>
      <span class="pre-wrap"> ${err.message}</span>
      <div class="small">The gateway (${gatewayLabel()}) sent altered or wrong bytes; nothing from it is shown.</div></div>`;
  }
  if (err instanceof GatewayError && err.network) {
    return html`<div class="alert alert-error" role="alert"><strong>Gateway unreachable.</strong> ${err.message}.
      <span class="small"> Check the gateway in Settings (⚙) or that the peer is running.</span></div>`;
  }
  if (err instanceof GatewayError && err.status === 404) {
    return html`<div class="alert alert-error" role="alert"><strong>Not found.</strong> ${err.message}</div>`;
  }
  return html`<${ErrorBox} error=${err} />`;
}

/** Read a file's bytes verified; returns {state, bytes, err, blocks}. */
function useVerifiedFile(cid, size, enabled = true) {
  const [st, setSt] = useState({ state: enabled ? "pending" : "skipped", bytes: null, err: null, read: 0 });
  const [go, setGo] = useState(enabled && (size === null || size <= AUTO_VERIFY_BYTES));
  useEffect(() => {
    if (!go || !cid) return undefined;
    let alive = true, read = 0, last = 0;
    setSt({ state: "pending", bytes: null, err: null, read: 0 });
    readFile(cid, (n) => {
      read += n;
      if (alive && Date.now() - last > 200) { last = Date.now(); setSt((s) => ({ ...s, read })); }
    }).then((bytes) => alive && setSt({ state: "ok", bytes, err: null, read: bytes.length }))
      .catch((err) => alive && setSt({ state: errorState(err), bytes: null, err, read }));
    return () => { alive = false; };
  }, [cid, go]);
  return { ...st, start: () => setGo(true), started: go };
}

// ------------------------------------------------------------------ previews

function parseWav(bytes) {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const tag = (o) => String.fromCharCode(bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]);
  if (bytes.length < 12 || tag(0) !== "RIFF" || tag(8) !== "WAVE") return null;
  let o = 12, fmt = null, data = null;
  while (o + 8 <= bytes.length) {
    const id = tag(o), len = dv.getUint32(o + 4, true);
    if (id === "fmt ") fmt = { format: dv.getUint16(o + 8, true), channels: dv.getUint16(o + 10, true),
                                rate: dv.getUint32(o + 12, true), bits: dv.getUint16(o + 22, true) };
    if (id === "data") { data = { offset: o + 8, length: Math.min(len, bytes.length - o - 8) }; break; }
    o += 8 + len + (len % 2);
  }
  if (!fmt || !data) return null;
  const frameBytes = (fmt.bits / 8) * fmt.channels;
  return { ...fmt, data, duration: frameBytes ? data.length / frameBytes / fmt.rate : 0 };
}

function drawWave(canvas, bytes, info) {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(200, canvas.clientWidth), h = 72;
  canvas.width = w * dpr; canvas.height = h * dpr; canvas.style.height = `${h}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  if (info.bits !== 16) return;
  const dv = new DataView(bytes.buffer, bytes.byteOffset + info.data.offset, info.data.length);
  const n = Math.floor(info.data.length / 2 / info.channels);
  ctx.fillStyle = getComputedStyle(document.documentElement).getPropertyValue("--accent").trim() || "#2f6fde";
  for (let x = 0; x < w; x++) {
    const a = Math.floor((x * n) / w), b = Math.max(a + 1, Math.floor(((x + 1) * n) / w));
    let lo = 0, hi = 0;
    for (let i = a; i < b; i += Math.max(1, Math.floor((b - a) / 64))) {
      const v = dv.getInt16(i * 2 * info.channels, true) / 32768;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    ctx.fillRect(x, h / 2 - hi * (h / 2), 1, Math.max(1, (hi - lo) * (h / 2)));
  }
}

function AudioPreview({ root, path, cid, size }) {
  const v = useVerifiedFile(cid, size);
  const info = v.bytes ? parseWav(v.bytes) : null;
  const refused = v.state === "bad";
  return html`<div class="preview audio-preview">
    <div class="preview-head"><h2 class="small-title">Audio</h2><${VerifyBadge} state=${v.state} detail=${v.state === "ok" ? `${fmtBytes(v.read)} hashed` : v.err?.message} /></div>
    ${refused ? null : html`<audio class="player" controls preload="auto" src=${gwUrl(root, path)}
      aria-label=${`Play ${path.split("/").pop()}`}></audio>`}
    ${info ? html`<${Canvas} className="wave-canvas" label="waveform" deps=${[cid]} draw=${(c) => drawWave(c, v.bytes, info)} />
      <p class="muted small">${info.rate} Hz · ${info.channels} channel${info.channels === 1 ? "" : "s"} · ${info.bits}-bit · ${fmtDuration(info.duration)}</p>` : null}
    <${GatewayProblem} err=${v.err} />
  </div>`;
}

function NpyPreview({ cid, size, name }) {
  const v = useVerifiedFile(cid, size);
  const [norm, setNorm] = useState(true);
  let arr = null, perr = null;
  if (v.bytes) {
    try { arr = parseNpy(v.bytes); } catch (e) { perr = e; }
  }
  const is2d = arr && arr.shape.length === 2;
  return html`<div class="preview npy-preview">
    <div class="preview-head"><h2 class="small-title">${is2d ? "MFCC heatmap" : "Array"}</h2>
      <${VerifyBadge} state=${v.state} detail=${v.state === "ok" ? `${fmtBytes(v.read)} hashed` : v.err?.message} /></div>
    ${v.state === "pending" ? html`<${Spinner} label="Fetching and verifying…" />` : null}
    ${arr ? html`<p class="muted small">${arr.dtype} · shape (${arr.shape.join(" × ")})${is2d ? ` · ${arr.shape[0]} frames × ${arr.shape[1]} coefficients` : ""}</p>` : null}
    ${is2d ? html`<div>
      <label class="check small"><input type="checkbox" checked=${norm} onChange=${(e) => setNorm(e.currentTarget.checked)} />
        Scale each coefficient to its own range</label>
      <${Canvas} className="heatmap-canvas" label=${`MFCC heatmap of ${name}`} deps=${[cid, norm]}
        draw=${(c) => drawHeatmap(c, arr, { normalize: norm })} />
    </div>` : null}
    ${arr && !is2d ? html`<pre class="code">${Array.from(arr.data.slice(0, 200)).join(", ")}${arr.data.length > 200 ? ", …" : ""}</pre>` : null}
    ${perr ? html`<${ErrorBox} error=${perr} title="Cannot read this .npy file." />` : null}
    <${GatewayProblem} err=${v.err} />
  </div>`;
}

function TextPreview({ cid, size, name }) {
  const v = useVerifiedFile(cid, size);
  let body = null, metrics = null;
  if (v.bytes) {
    const text = new TextDecoder().decode(v.bytes.subarray(0, 256 * 1024));
    body = text + (v.bytes.length > 256 * 1024 ? "\n…" : "");
    if (name === "metrics.json") {
      try { metrics = JSON.parse(text); } catch { metrics = null; }
    } else if (ext(name) === "json") {
      try { body = JSON.stringify(JSON.parse(text), null, 2); } catch { /* show as is */ }
    }
  }
  return html`<div class="preview text-preview">
    <div class="preview-head"><h2 class="small-title">Content</h2>
      <${VerifyBadge} state=${v.state} detail=${v.state === "ok" ? `${fmtBytes(v.read)} hashed` : v.err?.message} /></div>
    ${v.state === "pending" ? html`<${Spinner} label="Fetching and verifying…" />` : null}
    ${metrics && metrics.curves ? html`<${MetricsPanel} metrics=${metrics} />` : null}
    ${body !== null ? html`<details class="disclosure" open=${!metrics}><summary>${metrics ? "Raw metrics.json" : name}</summary>
      <pre class="code" tabindex="0">${body}</pre></details>` : null}
    <${GatewayProblem} err=${v.err} />
  </div>`;
}

function OtherPreview({ cid, size }) {
  const v = useVerifiedFile(cid, size);
  return html`<div class="preview">
    <div class="preview-head"><h2 class="small-title">No preview for this file type</h2>
      <${VerifyBadge} state=${v.state} detail=${v.state === "ok" ? `${fmtBytes(v.read)} hashed` : v.err?.message} /></div>
    ${!v.started ? html`<button class="btn" type="button" onClick=${v.start}>Verify (${fmtBytes(size)})</button>` : null}
    <${GatewayProblem} err=${v.err} />
  </div>`;
}

function FileView({ root, path, cid, size }) {
  const name = path ? path.split("/").pop() : cid;
  const e = ext(name);
  if (AUDIO_EXT.has(e)) return html`<${AudioPreview} root=${root} path=${path} cid=${cid} size=${size} />`;
  if (e === "npy") return html`<${NpyPreview} cid=${cid} size=${size} name=${name} />`;
  if (TEXT_EXT.has(e)) return html`<${TextPreview} cid=${cid} size=${size} name=${name} />`;
  return html`<${OtherPreview} cid=${cid} size=${size} />`;
}

// ------------------------------------------------------------------ directories

/** One page of the gateway's JSON listing of `cid` after the entry named `after` (null: from
 *  the first): {links, next} (`next`: the next page's cursor, null after the last, undefined
 *  when the gateway does not page: its answer is the whole listing), or null if it cannot
 *  be read (then each entry's own block says its kind). */
async function gatewayPage(cid, after) {
  try {
    const q = `limit=${DIR_PAGE}${after === null ? "" : `&after=${encodeURIComponent(after)}`}`;
    const r = await fetch(gwUrl(cid, "", q), { headers: { Accept: "application/json" } });
    if (!r.ok) return null;
    const d = await r.json();
    if (!Array.isArray(d.Links)) return null;
    return { links: d.Links, next: typeof d.Next === "string" || d.Next === null ? d.Next : undefined };
  } catch {
    return null;
  }
}

/** A directory listed a page at a time: `await d.page()` gives the next DIR_PAGE entries
 *  [{name, cid, tsize, kind, size}], their names and CIDs from the verified blocks
 *  (`dirLister`), their kinds and sizes from the gateway's listing, asked for as far as the
 *  entries shown (a row the gateway lists otherwise is a VerifyError); `d.done` after the
 *  last; `d.note`: why the gateway's listing is no longer asked (null while it is). */
async function dirPages(cid) {
  const lister = await dirLister(cid);
  const rows = new Map(); // the gateway's rows read and not yet matched, by name
  let after = null, gwEnd = false, gwOff = false, asks = 0;
  const pager = { done: lister.done, note: null };
  const off = (note) => {
    gwOff = true;
    rows.clear();
    pager.note = note;
    return null;
  };
  const gatewayRow = async (name) => {
    // (the peer's pages come in the verified order: the row is on the next page at most;
    // a few pages more for a gateway that orders otherwise, never without end)
    for (let asked = 0; !rows.has(name) && !gwEnd && asked < 4; asked++) {
      if (asks >= GW_ASKS_PER_PAGE) {
        return off(`The gateway's listing took more than ${GW_ASKS_PER_PAGE} requests for a page; kinds and sizes are read from the verified blocks.`);
      }
      asks++;
      const p = await gatewayPage(cid, after);
      if (!p) {
        gwOff = true;
        return null;
      }
      for (const l of p.links) rows.set(l.Name, l);
      if (rows.size > GW_ROWS_KEPT) {
        return off(`The gateway's listing sent more than ${GW_ROWS_KEPT.toLocaleString("en-US")} rows not yet shown; kinds and sizes are read from the verified blocks.`);
      }
      if (typeof p.next === "string" && p.links.length && p.next !== after) after = p.next;
      else gwEnd = true;
    }
    const l = rows.get(name);
    rows.delete(name);
    return l;
  };
  return Object.assign(pager, {
    async page() {
      asks = 0;
      const out = [];
      for (const e of await lister.next(DIR_PAGE)) {
        const l = gwOff ? null : await gatewayRow(e.name);
        if (!gwOff && (!l || l.Hash !== e.cid)) {
          throw new VerifyError(`the gateway's listing of ${cid} does not match its verified directory block (${e.name})`, cid);
        }
        let kind = l ? l.Type : parseCid(e.cid).codec === 0x55 ? "file" : null;
        let size = l ? l.Size : e.tsize;
        if (!kind) {
          const st = await statNode(e.cid);
          kind = st.kind;
          if (st.size !== null) size = st.size;
        }
        out.push({ ...e, kind, size });
      }
      this.done = lister.done;
      return out;
    },
  });
}

const byKindThenName = (a, b) => (a.kind === b.kind ? (a.name < b.name ? -1 : 1) : a.kind === "dir" ? -1 : 1);

function DirView({ root, path, cid }) {
  // entries: those shown, in the listing's order (a directory of one page: dirs first, by
  // name); more: the pager while entries are left, else null; busy: a page being read
  // (mounted afresh for each directory, `key`ed by its CID; a page read is applied only while
  // its pager is still the one shown: review r2 of session 52, finding 1, another
  // directory's page, error or pager would go into the one opened meanwhile were this view
  // kept mounted across navigation; app.js's key on BrowsePage is what prevented it)
  const [st, setSt] = useState({ entries: null, err: null, more: null, busy: false, note: null });
  const alive = useRef(true);
  useEffect(() => () => { alive.current = false; }, []);
  useEffect(() => {
    let live = true;
    (async () => {
      const pages = await dirPages(cid);
      const first = await pages.page();
      if (live) setSt({ entries: pages.done ? first.sort(byKindThenName) : first, err: null, more: pages.done ? null : pages, busy: false, note: pages.note });
    })().catch((err) => live && setSt({ entries: null, err, more: null, busy: false, note: null }));
    return () => { live = false; };
  }, [cid]);
  const showMore = () => {
    const pages = st.more;
    if (!pages || st.busy) return;
    setSt((s) => ({ ...s, busy: true }));
    const apply = (f) => alive.current && setSt((s) => (s.more === pages ? f(s) : s));
    pages.page().then((next) => apply((s) => ({ entries: [...s.entries, ...next], err: null, more: pages.done ? null : pages, busy: false, note: pages.note })))
      .catch((err) => apply((s) => ({ ...s, err, more: null, busy: false })));
  };
  const entries = st.entries;
  const metrics = entries && entries.find((e) => e.name === "metrics.json" && e.kind === "file");
  const state = st.err ? errorState(st.err) : entries ? "ok" : "pending";
  const files = entries ? entries.filter((e) => e.kind === "file").length : 0;
  const paged = entries && (st.more || entries.length > DIR_PAGE);
  return html`<div>
    <div class="preview-head"><h2 class="small-title">${entries ? `${entries.length.toLocaleString("en-US")} entr${entries.length === 1 ? "y" : "ies"}${st.more ? " shown" : ""}${files ? ` · ${files} file${files === 1 ? "" : "s"}` : ""}` : "Directory"}</h2>
      <${VerifyBadge} state=${state} detail=${state === "ok" ? `directory block${paged ? "s" : ""} hashed; listing matches` : st.err?.message} /></div>
    <${GatewayProblem} err=${st.err} />
    ${st.note ? html`<p class="muted small dir-note">${st.note}</p>` : null}
    ${!entries && !st.err ? html`<${Spinner} label="Listing…" />` : null}
    ${metrics ? html`<${MetricsFile} cid=${metrics.cid} size=${metrics.size} />` : null}
    ${entries && !entries.length ? html`<${Empty}>Empty directory.</${Empty}>` : null}
    ${entries && entries.length ? html`<div class="table-wrap"><table class="table dir-table">
      <caption class="sr-only">Directory entries</caption>
      <thead><tr><th scope="col">Name</th><th scope="col">Size</th><th scope="col">CID</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
      <tbody>${entries.map((e) => html`<tr key=${e.name}>
        <td data-label="Name"><a href=${hrefOf(root, joinPath(path, e.name))} class=${`entry entry-${e.kind}`} data-name=${e.name}>
          <span class="entry-icon" aria-hidden="true">${e.kind === "dir" ? "▸" : "·"}</span>${e.name}${e.kind === "dir" ? "/" : ""}</a></td>
        <td data-label="Size" class="tabnum">${fmtBytes(e.size)}</td>
        <td data-label="CID" class="mono small"><span title=${e.cid}>${shortCid(e.cid)}</span> <${CopyButton} text=${e.cid} /></td>
        <td data-label="" class="row-actions">
          <a class="btn btn-small btn-ghost" href=${e.kind === "dir" ? gwUrl(e.cid, "", "format=car&download=true") : gwUrl(e.cid, "", `download=true&filename=${encodeURIComponent(e.name)}`)}
            download=${e.kind === "dir" ? `${e.name}.car` : e.name} aria-label=${`Download ${e.name}`}>Download${e.kind === "dir" ? " .car" : ""}</a>
        </td>
      </tr>`)}</tbody>
    </table></div>` : null}
    ${st.more ? html`<p class="dir-more-row"><button class="btn dir-more" type="button" disabled=${st.busy} onClick=${showMore}>
      ${st.busy ? "Listing…" : `Show ${DIR_PAGE} more`}</button>
      <span class="muted small"> The directory is listed a page at a time, in its listing order.</span></p>` : null}
  </div>`;
}

function MetricsFile({ cid, size }) {
  const v = useVerifiedFile(cid, size);
  let m = null;
  if (v.bytes) {
    try { m = JSON.parse(new TextDecoder().decode(v.bytes)); } catch { m = null; }
  }
  if (v.err) return html`<${GatewayProblem} err=${v.err} />`;
  if (!m || !m.curves) return null;
  return html`<${MetricsPanel} metrics=${m} />`;
}

// ------------------------------------------------------------------ page

function Landing() {
  const jobs = useLive(`jobs?limit=${OUTPUT_JOBS}`, { filter: (ev) => ev.type === "task_done" || ev.type === "job_submitted", throttleMs: 1000 });
  const recent = (jobs.data ? jobs.data.jobs : []).filter((j) => Object.keys(j.outputs).length).slice(0, 8);
  return html`<div class="page">
    <h1>Browse by CID</h1>
    <p class="muted">Reads content through ${gatewayLabel()} and checks every block against its CID in this browser.</p>
    <div class="card"><${OpenCid} /></div>
    <section class="section" aria-labelledby="recent-out">
      <h2 id="recent-out">Recent outputs</h2>
      ${jobs.error ? html`<${ErrorBox} error=${jobs.error} />` : null}
      ${jobs.data && !recent.length ? html`<${Empty}>No outputs yet.</${Empty}>` : null}
      ${recent.map((j) => html`<div class="card recent-outputs">
        <h3><a href=${`#/jobs/${j.id}`}>${j.name}</a> <span class="mono muted small">${j.id}</span></h3>
        <ul class="outputs">${Object.entries(j.outputs).map(([t, c]) => html`<li><span class="out-name">${t}</span> <${CidChip} cid=${c} name=${t} /></li>`)}</ul>
      </div>`)}
    </section>
  </div>`;
}

export function BrowsePage({ cid, path }) {
  usePageTitle(cid ? `${path ? path.split("/").pop() : shortCid(cid)}` : "Browse");
  const [st, setSt] = useState({ phase: "loading" });
  useEffect(() => {
    if (!cid) return undefined;
    let alive = true;
    (async () => {
      parseCid(cid);
      const target = await resolvePath(cid, path);
      const node = await statNode(target);
      if (alive) setSt({ phase: "ready", target, kind: node.kind, size: node.size });
    })().catch((err) => alive && setSt({ phase: "error", err }));
    return () => { alive = false; };
  }, [cid, path, gatewayBase()]);
  if (!cid) return html`<${Landing} />`;
  const segs = path ? path.split("/") : [];
  const name = segs.length ? segs[segs.length - 1] : "";
  return html`<div class="page browse-page">
    <nav class="crumbs" aria-label="Path">
      <a href=${hrefOf(cid, "")} class="mono" title=${cid}>${shortCid(cid)}</a>
      ${segs.map((s, i) => html`<span aria-hidden="true"> / </span>${i === segs.length - 1
        ? html`<span aria-current="page">${s}</span>`
        : html`<a href=${hrefOf(cid, segs.slice(0, i + 1).join("/"))}>${s}</a>`}`)}
    </nav>
    <div class="page-head">
      <div class="min0">
        <h1 class="break">${name || html`<span class="cid-title">${shortCid(cid)}</span>`}</h1>
        ${st.phase === "ready" ? html`<p class="muted node-meta">${st.kind === "dir" ? "Directory" : `File · ${fmtBytes(st.size)}`}
          <span aria-hidden="true"> · </span><${CidChip} cid=${st.target} full=${false} /></p>` : null}
      </div>
      ${st.phase === "ready" ? html`<div class="head-actions">
        ${st.kind === "dir"
          ? html`<a class="btn" href=${gwUrl(cid, path, "format=car&download=true")} download=${`${name || st.target}.car`}>Download directory (.car)</a>`
          : html`<a class="btn" href=${gwUrl(cid, path, `download=true${name ? `&filename=${encodeURIComponent(name)}` : ""}`)} download=${name || st.target}>Download</a>`}
      </div>` : null}
    </div>
    ${st.phase === "loading" ? html`<${Spinner} label="Resolving and verifying…" />` : null}
    ${st.phase === "error" ? html`<div>${st.err.status === 404 ? null : html`<${VerifyBadge} state=${errorState(st.err)} detail=${st.err.message} />`}<${GatewayProblem} err=${st.err} /></div>` : null}
    ${st.phase === "ready" && st.kind === "dir" ? html`<${DirView} key=${st.target} root=${cid} path=${path} cid=${st.target} />` : null}
    ${st.phase === "ready" && st.kind === "file" ? html`<${FileView} root=${cid} path=${path} cid=${st.target} size=${st.size} />` : null}
  </div>`;
}
