// Mesh view: every peer with capabilities, slots and load, running work, data, last heard.

import { useLive, useTick } from "../api.js";
import { Boundary, Empty, ErrorBox, Progress, Spinner, StateBadge, fmtAgo, fmtDuration, html, safeHttpUrl, shortId, usePageTitle } from "../ui.js";

const PEER_EVENTS = new Set(["member", "claim", "chunk_done", "chunk_failed", "task_done", "provide",
                             "job_cancelled", "task_split"]);
// The "Recent jobs" rows: the list asks for these only (session 49, review rr S6: each
// refetch asked for the whole list, up to 1,000 entries made on the peer's loop, for 6)
const RECENT_JOBS = 6;
// Members that left, are not heard from, or are revoked stay in the list for good (a
// member is never forgotten): the grid shows this many of them, the last heard first
// (a tab left open for months on a mesh with identity churn drew a card for each)
const GONE_SHOWN = 12;
const GONE = new Set(["dead", "left", "revoked"]);

/** The peers the grid shows: this peer, every live one, and the GONE_SHOWN last heard of
 *  the gone ones; and how many gone ones are left out. */
export function shownPeers(peers) {
  const here = peers.filter((p) => !GONE.has(p.state))
    .sort((a, b) => (b.self ? 1 : 0) - (a.self ? 1 : 0));
  const heard = (p) => (typeof p.last_heard_s === "number" ? p.last_heard_s : Infinity);
  const gone = peers.filter((p) => GONE.has(p.state)).sort((a, b) => heard(a) - heard(b));
  return { shown: [...here, ...gone.slice(0, GONE_SHOWN)], hidden: Math.max(0, gone.length - GONE_SHOWN) };
}

// One card per peer, each in its own boundary: a member's bad value costs its card only.
function PeerCard({ p }) {
  return html`<${Boundary} resetKey=${p} what="peer card"><${PeerCardBody} p=${p} /></${Boundary}>`;
}

// A running chunk as /api/peers serves it, an attempt key [job, task, chunk, attempt] (review
// r1 F4: read as an object, every one showed "· · chunk"; {job, task, chunk} is read too),
// else null: an entry of a member's heartbeat is anything that member sent (F2: `[null]`
// threw here).
function runningEntry(r) {
  const [job, task, chunk] = Array.isArray(r) ? r : r && typeof r === "object" ? [r.job, r.task, r.chunk] : [];
  if (typeof job !== "string" || !job) return null;
  return { job, task: typeof task === "string" ? task : "?", chunk: Number.isInteger(chunk) ? chunk : "?" };
}

function PeerCardBody({ p }) {
  const busy = p.free_slots === null || p.free_slots === undefined ? null : p.slots - p.free_slots;
  const load = busy === null ? null : busy / Math.max(1, p.slots);
  const heard = p.self ? "now (this peer)"
    : typeof p.last_heard_s === "number" ? (p.last_heard_s < 1 ? "just now" : `${fmtDuration(p.last_heard_s)} ago`)
    : p.last_heard_ms ? fmtAgo(p.last_heard_ms) : "never";
  const running = (Array.isArray(p.running) ? p.running : []).map(runningEntry).filter(Boolean);
  return html`<article class="card peer-card" aria-labelledby=${`peer-${p.id}`}>
    <header class="card-head">
      <div>
        <h3 id=${`peer-${p.id}`} class="peer-title">
          <span class=${`status-dot ${p.state}`} aria-hidden="true"></span>${p.name || shortId(p.id)}
          ${p.self ? html`<span class="tag">this peer</span>` : null}
        </h3>
        <div class="mono muted small" title="peer id">${p.id}</div>
      </div>
      ${!p.self && safeHttpUrl(p.http) ? html`<a class="btn btn-small" href=${safeHttpUrl(p.http)}
          target="_blank" rel="noopener noreferrer">Open its UI ↗</a>` : null}
    </header>
    <dl class="kv">
      <div><dt>State</dt><dd class=${`peer-state peer-${p.state}`}>${p.state}</dd></div>
      <div><dt>Last heard</dt><dd>${heard}</dd></div>
      <div><dt>Slots</dt><dd>${busy === null ? `${p.slots} (load unknown)` : `${busy} busy / ${p.slots}`}</dd></div>
      <div><dt>Machine</dt><dd>${p.cores ?? "?"} cores · ${p.mem_mb ? `${(p.mem_mb / 1024).toFixed(1)} GiB` : "? GiB"}${p.gpu ? " · GPU" : ""}</dd></div>
      <div><dt>Provides</dt><dd>${p.provides ?? 0} CID${p.provides === 1 ? "" : "s"}</dd></div>
      <div class="kv-wide"><dt>Address</dt><dd class="mono small">${p.http || "–"}</dd></div>
    </dl>
    ${load !== null ? html`<div class="load">
      <span class="small muted">Load ${Math.round(load * 100)}%</span>
      <${Progress} value=${load} state=${load >= 1 ? "failed" : "running"} label=${`load of ${p.name}`} />
    </div>` : null}
    <div class="peer-section">
      <h4>Running</h4>
      ${running.length ? html`<ul class="running-list">
        ${running.map((r) => html`<li><a href=${`#/jobs/${r.job}`}>${r.job}</a>
          <span class="muted"> · ${r.task} · chunk ${r.chunk}</span></li>`)}
      </ul>` : html`<p class="muted small">${p.state === "dead" ? "Unknown (peer not heard from)." : "Idle."}</p>`}
    </div>
    <details class="peer-section">
      <summary>Capabilities (${(p.calls || []).length} tasks)</summary>
      <div class="chips">${(p.calls || []).map((c) => html`<span class="chip mono">${c}</span>`)}</div>
    </details>
  </article>`;
}

export function MeshPage() {
  usePageTitle("Mesh");
  useTick(5000);
  const peers = useLive("peers", { filter: (ev) => PEER_EVENTS.has(ev.type), pollMs: 5000, throttleMs: 500 });
  const jobs = useLive(`jobs?limit=${RECENT_JOBS}`, { filter: (ev) => ev.job && ev.type !== "renew", throttleMs: 800 });
  const list = peers.data ? peers.data.peers : [];
  const { shown, hidden } = shownPeers(list);
  const slots = list.reduce((s, p) => s + (p.slots || 0), 0);
  const free = list.reduce((s, p) => s + (p.free_slots ?? 0), 0);
  const running = list.reduce((s, p) => s + (p.running ? p.running.length : 0), 0);
  const recent = jobs.data ? jobs.data.jobs.slice(0, RECENT_JOBS) : [];
  return html`<div class="page">
    <div class="page-head">
      <div>
        <h1>Mesh</h1>
        <p class="muted">${peers.data ? `${list.length} peer${list.length === 1 ? "" : "s"} · ${slots} slots · ${free} free · ${running} chunk${running === 1 ? "" : "s"} running` : "Peers of this mesh"}</p>
      </div>
      <a class="btn btn-primary" href="#/submit">New pipeline</a>
    </div>
    ${peers.error ? html`<${ErrorBox} error=${peers.error} title="Cannot list peers." />` : null}
    ${peers.loading && !peers.data ? html`<${Spinner} />` : null}
    <div class="grid peers-grid">${shown.map((p) => html`<${PeerCard} key=${p.id} p=${p} />`)}</div>
    ${hidden ? html`<p class="muted small peers-hidden">${`Not shown: ${hidden} more gone peer${hidden === 1 ? "" : "s"} (left, revoked or not heard from); the ${GONE_SHOWN} last heard of them are above.`}</p>` : null}
    <section class="section" aria-labelledby="recent-title">
      <div class="section-head">
        <h2 id="recent-title">Recent jobs</h2>
        <a href="#/jobs">All jobs →</a>
      </div>
      ${jobs.data && !recent.length ? html`<${Empty}>No jobs yet. <a href="#/submit">Submit a pipeline</a>.</${Empty}>` : null}
      <ul class="recent-jobs">
        ${recent.map((j) => html`<li>
          <a href=${`#/jobs/${j.id}`} class="recent-name">${j.name}</a>
          <span class="mono muted small">${j.id}</span>
          <${StateBadge} state=${j.state} small=${true} />
          <div class="recent-progress"><${Progress} value=${j.progress} state=${j.state} label=${`${j.name} progress`} /></div>
          <span class="muted small">${j.duration_s !== null ? fmtDuration(j.duration_s) : fmtAgo(j.submitted_ms)}</span>
        </li>`)}
      </ul>
    </section>
  </div>`;
}
