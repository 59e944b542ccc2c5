// One job: the pipeline as a graph, live per-task progress, chunks (attempts, peers, errors),
// logs and metrics of each task, outputs, cancel.

import { useEffect, useRef, useState } from "preact/hooks";
import { api, hub, useLive, useTick } from "../api.js";
import { MetricsSeries } from "../metrics.js";
import { gatewayBase } from "../settings.js";
import { CidChip, CopyButton, ErrorBox, Progress, Spinner, StateBadge, fmtDuration, fmtTime, html, shortId, usePageTitle } from "../ui.js";
import { jobDuration } from "./jobs.js";

const ACTIVE = new Set(["pending", "running"]);
// A peer that holds none of a lanes job's task events (partial replication) answers its view
// as one of its members gave it (`served_by`), or 503 naming the members when none did
// (`field: "members"`): no event of the job comes to this peer, so the page asks again this
// often, and says so; after each answer in a row that gave no view, twice as long (at most
// MEMBER_POLL_MAX_MS: each ask may wait on every member in turn). Any other 503 (the HTTP
// gate's, a compacted job's record not held) is not asked again by itself.
const MEMBER_POLL_MS = 3000;
const MEMBER_POLL_MAX_MS = 30000;
// A task's log panel shows its newest lines only, this many (it is refetched as the task
// runs: a tab left open on a long task held and re-rendered every line, session 49)
const LOG_LINES = 1000;

// ------------------------------------------------------------------ IPNS names

/** The IPNS names whose record names an output of this job (`banzai submit --publish`,
 *  `banzai publish`): /ipns/NAME on the gateway, and the content it names in the browser. */
function Published({ names }) {
  if (!names || !names.length) return null;
  return html`<ul class="published" aria-label="Published IPNS names">${names.map((p) => html`<li>
    <span class="muted small">Published as</span>
    <a class="ipns-name mono" href=${`${gatewayBase()}ipns/${p.name}/`} target="_blank" rel="noopener"
       title=${`/ipns/${p.name} names ${p.value} (the output of ${p.task}); opens on the gateway`}>/ipns/${p.name}</a>
    <${CopyButton} text=${`/ipns/${p.name}`} label="Copy" />
    <a class="btn btn-small btn-ghost browse-ipns" href=${`#${p.value}`} title=${`Browse ${p.value}`}>Browse</a>
    <span class="muted small">${p.task}</span>
  </li>`)}</ul>`;
}

// ------------------------------------------------------------------ DAG

function layout(tasks) {
  const byName = new Map(tasks.map((t, i) => [t.name, { t, i }]));
  const level = new Map();
  const lv = (name, seen = new Set()) => {
    if (level.has(name)) return level.get(name);
    if (seen.has(name)) return 0;
    seen.add(name);
    const t = byName.get(name);
    const deps = t ? t.t.depends.filter((d) => byName.has(d)) : [];
    const v = deps.length ? 1 + Math.max(...deps.map((d) => lv(d, seen))) : 0;
    level.set(name, v);
    return v;
  };
  tasks.forEach((t) => lv(t.name));
  const cols = [];
  tasks.forEach((t) => { (cols[level.get(t.name)] ||= []).push(t); });
  return { cols, level };
}

function Dag({ tasks, vertical, onSelect }) {
  const W = vertical ? 240 : 188, H = 66, GX = vertical ? 24 : 56, GY = vertical ? 34 : 20, PAD = 6;
  const { cols } = layout(tasks);
  const pos = new Map();
  const maxRows = Math.max(...cols.map((c) => c.length));
  cols.forEach((col, ci) => col.forEach((t, ri) => {
    const off = ((maxRows - col.length) * (vertical ? W + GX : H + GY)) / 2;
    const x = vertical ? PAD + off + ri * (W + GX) : PAD + ci * (W + GX);
    const y = vertical ? PAD + ci * (H + GY) : PAD + off + ri * (H + GY);
    pos.set(t.name, { x, y });
  }));
  const width = vertical ? PAD * 2 + maxRows * (W + GX) - GX : PAD * 2 + cols.length * (W + GX) - GX;
  const height = vertical ? PAD * 2 + cols.length * (H + GY) - GY : PAD * 2 + maxRows * (H + GY) - GY;
  const edges = [];
  for (const t of tasks) {
    for (const d of t.depends) {
      const a = pos.get(d), b = pos.get(t.name);
      if (!a || !b) continue;
      const done = tasks.find((x) => x.name === d)?.state === "done";
      const path = vertical
        ? `M${a.x + W / 2},${a.y + H} C${a.x + W / 2},${a.y + H + GY / 2} ${b.x + W / 2},${b.y - GY / 2} ${b.x + W / 2},${b.y - 4}`
        : `M${a.x + W},${a.y + H / 2} C${a.x + W + GX / 2},${a.y + H / 2} ${b.x - GX / 2},${b.y + H / 2} ${b.x - 4},${b.y + H / 2}`;
      edges.push(html`<path d=${path} class=${`edge${done ? " edge-done" : ""}`} marker-end="url(#arrow)" />`);
    }
  }
  return html`<div class="dag-wrap">
    <svg class="dag" width=${width} height=${height} viewBox=${`0 0 ${width} ${height}`}
        role="group" aria-label="Pipeline graph">
      <defs><marker id="arrow" viewBox="0 0 10 10" refX="8" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
        <path d="M0,0 L10,5 L0,10 z" class="arrow-head" /></marker></defs>
      ${edges}
      ${tasks.map((t) => {
        const p = pos.get(t.name);
        const pct = Math.round(t.progress * 100);
        const label = `${t.name}: ${t.call || "CID source"}, ${t.state}, ${pct}%`;
        const act = () => onSelect(t.name);
        return html`<g class=${`dag-node state-${t.state}`} transform=${`translate(${p.x},${p.y})`}
            tabindex="0" role="button" aria-label=${label} data-task=${t.name}
            onClick=${act} onKeyDown=${(e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); act(); } }}>
          <title>${label}</title>
          <rect class="node-box" width=${W} height=${H} rx="8" />
          <rect class="node-stripe" width="5" height=${H} rx="2" />
          <text x="16" y="22" class="node-name">${t.name.length > 20 ? t.name.slice(0, 19) + "…" : t.name}</text>
          <text x="16" y="39" class="node-call">${(t.call || "CID source").slice(0, 16)}</text>
          <text x=${W - 10} y="22" class="node-pct" text-anchor="end">${t.state === "done" ? "✓" : t.state === "failed" ? "✗" : t.state === "cancelled" ? "–" : `${pct}%`}</text>
          ${t.cached || (t.duration_s !== null && t.duration_s !== undefined) ? html`<text x=${W - 10} y="39" class="node-time" text-anchor="end">${t.cached ? "cached" : fmtDuration(t.duration_s)}</text>` : null}
          <rect x="16" y=${H - 16} width=${W - 28} height="6" rx="3" class="node-track" />
          <rect x="16" y=${H - 16} width=${((W - 28) * pct) / 100} height="6" rx="3" class="node-fill" />
        </g>`;
      })}
    </svg>
  </div>`;
}

// ------------------------------------------------------------------ task parts

function useTaskRefresh(job, task, active, load) {
  useEffect(() => {
    if (!active) return undefined;
    let timer = null;
    const unsub = hub.subscribe((ev) => {
      if (ev.job !== job || (ev.task && ev.task !== task)) return;
      if (!timer) timer = setTimeout(() => { timer = null; load(); }, 700);
    });
    return () => { unsub(); clearTimeout(timer); };
  }, [job, task, active]);
}

function TaskLog({ job, task, live, taskState }) {
  const [state, setState] = useState({ lines: null, total: 0, error: null });
  const path = `jobs/${job}/tasks/${encodeURIComponent(task)}/log`;
  const load = async () => {
    try {
      const d = await api(`${path}?tail=${LOG_LINES}`);
      setState({ lines: d.lines.slice(-LOG_LINES), total: d.total ?? d.lines.length, error: null });
    } catch (error) {
      setState((s) => ({ ...s, error }));
    }
  };
  useEffect(() => { load(); }, [job, task, taskState]);
  useTaskRefresh(job, task, live, load);
  if (state.error) return html`<${ErrorBox} error=${state.error} title="Cannot load the log." />`;
  if (!state.lines) return html`<${Spinner} label="Loading log…" />`;
  if (!state.lines.length) return html`<p class="muted small">No log lines${live ? " yet" : ""}.</p>`;
  const note = `Showing the last ${state.lines.length.toLocaleString()} of ${state.total.toLocaleString()} lines · `;
  return html`${state.total > state.lines.length ? html`<p class="muted small log-note">${note}<a
      href=${`api/${path}?format=text`} target="_blank" rel="noopener">whole log</a></p>` : null}
    <pre class="log" tabindex="0" aria-label=${`log of ${task}`}>${state.lines.join("\n")}</pre>`;
}

function TaskMetrics({ job, task, live, taskState }) {
  const [state, setState] = useState({ m: null, error: null });
  const load = async () => {
    try {
      const d = await api(`jobs/${job}/tasks/${encodeURIComponent(task)}/metrics`);
      setState({ m: d.metrics, cut: d.cut || [], error: null });
    } catch (error) {
      setState((s) => ({ ...s, error }));
    }
  };
  useEffect(() => { load(); }, [job, task, taskState]);
  useTaskRefresh(job, task, live, load);
  if (state.error) return html`<${ErrorBox} error=${state.error} title="Cannot load metrics." />`;
  if (!state.m) return html`<${Spinner} label="Loading metrics…" />`;
  // where a long run's points were cut (it keeps its first and its last 10,000), as the log's marker line
  const cut = (state.cut || []).map((c) => html`<p class="muted small metrics-cut">${c.note}</p>`);
  return html`${cut}<${MetricsSeries} triples=${state.m} />`;
}

/** A <details> whose body mounts only once opened (controlled, keyboard friendly). */
function Disclosure({ summary, open: initial = false, children, className = "" }) {
  const [open, setOpen] = useState(initial);
  return html`<details class=${`disclosure ${className}`} open=${open}
      onToggle=${(e) => setOpen(e.currentTarget.open)}>
    <summary>${summary}</summary>
    ${open ? html`<div class="disclosure-body">${typeof children === "function" ? children() : children}</div>` : null}
  </details>`;
}

function paramsText(params) {
  return Object.entries(params || {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join("  ");
}

/** A chunk still "running" in a task that is over was overtaken (cache hit, cancel, other attempt). */
function chunkState(c, task) {
  if (c.state !== "running" && c.state !== "pending") return c.state;
  if (task.state === "done") return "skipped";
  if (task.state === "cancelled" || task.state === "failed") return "cancelled";
  return c.state;
}

function ChunkTable({ chunks, task }) {
  return html`<div class="table-wrap"><table class="table chunk-table">
    <caption class="sr-only">Chunks</caption>
    <thead><tr><th scope="col">#</th><th scope="col">State</th><th scope="col">Progress</th><th scope="col">Attempt</th>
      <th scope="col">Peer</th><th scope="col">Items</th><th scope="col">Time</th><th scope="col">Error</th></tr></thead>
    <tbody>${chunks.map((c, i) => {
      const st = chunkState(c, task);
      const over = st !== c.state;
      return html`<tr class=${`state-${st}`}>
      <td data-label="#">${i + (task.chunks_from || 0)}</td>
      <td data-label="State"><${StateBadge} state=${st} small=${true} /></td>
      <td data-label="Progress"><div class="progress-cell"><${Progress} value=${c.progress} state=${c.state} label=${`chunk ${i} progress`} />
        <span class="small tabnum">${Math.round(c.progress * 100)}%</span></div></td>
      <td data-label="Attempt" class="tabnum">${c.attempts ? `${c.attempt + 1} (${c.attempts} tried)` : "–"}</td>
      <td data-label="Peer" class="mono small">${c.peer ? html`<a href="#/" title=${c.peer}>${shortId(c.peer)}</a>` : "–"}</td>
      <td data-label="Items" class="tabnum">${c.items || "–"}</td>
      <td data-label="Time" class="tabnum">${c.started_ms && !over ? fmtDuration(((c.finished_ms || Date.now()) - c.started_ms) / 1000) : "–"}</td>
      <td data-label="Error" class="error-cell">${c.error || (over && st === "skipped" ? html`<span class="muted">not needed: ${task.cached ? "output found in the cache" : "task finished"}</span>` : "")}</td>
    </tr>`;
    })}</tbody>
  </table></div>`;
}

function TaskCard({ job, t, highlight }) {
  const live = ACTIVE.has(t.state);
  const dur = t.duration_s ?? (t.started_ms && live ? (Date.now() - t.started_ms) / 1000 : null);
  const pct = Math.round(t.progress * 100);
  // The view lists at most 1,000 chunks of a task (`chunks_total`: how many it has; a
  // compacted job's record lists none)
  const nChunks = t.chunks_total ?? t.chunks.length;
  return html`<article id=${`task-${t.name}`} class=${`card task-card state-${t.state}${highlight ? " highlight" : ""}`}
      tabindex="-1" aria-labelledby=${`task-title-${t.name}`} data-task=${t.name}>
    <header class="task-head">
      <div class="task-title">
        <h3 id=${`task-title-${t.name}`}>${t.name}</h3>
        <span class="muted mono small">${t.call || "CID source"}</span>
        ${t.cached ? html`<span class="tag" title="output reused from the cache">cached</span>` : null}
      </div>
      <${StateBadge} state=${t.state} />
    </header>
    <div class="progress-row">
      <${Progress} value=${t.progress} state=${t.state} label=${`${t.name} progress`} />
      <span class="tabnum pct">${pct}%</span>
    </div>
    <dl class="kv kv-inline">
      <div><dt>Duration</dt><dd class="tabnum">${fmtDuration(dur)}</dd></div>
      <div><dt>Attempts</dt><dd class="tabnum">${t.attempts || "–"}</dd></div>
      <div><dt>Chunks</dt><dd class="tabnum">${nChunks || "–"}</dd></div>
      <div><dt>Peers</dt><dd class="mono small">${t.peers.length ? t.peers.map((p) => html`<span title=${p}>${shortId(p)} </span>`) : "–"}</dd></div>
      ${t.depends.length ? html`<div><dt>Input</dt><dd>${t.depends.join(", ")}</dd></div>` : null}
    </dl>
    ${Object.keys(t.params || {}).length ? html`<div class="params mono small" title="parameters">${paramsText(t.params)}</div>` : null}
    ${t.error && t.state === "cancelled" ? html`<div class="alert alert-warn" role="status"><strong>Stopped:</strong> <span class="pre-wrap">${t.error}</span></div>` : null}
    ${t.error && t.state !== "cancelled" ? html`<div class="alert alert-error" role="alert"><strong>Failed:</strong> <span class="pre-wrap">${t.error}</span></div>` : null}
    ${t.waiting && ACTIVE.has(t.state) ? html`<div class="alert alert-warn task-waiting" role="status"><strong>Waiting:</strong> <span class="pre-wrap">${t.waiting}</span></div>` : null}
    ${t.partial && !t.output ? html`<div class="output-row partial-row"><span class="muted small" title="the results so far; the output grows as chunks finish">Partial output (${t.partial.items} of ${t.partial.of} items)</span> <${CidChip} cid=${t.partial.output} name=${`${t.name} (partial)`} /> <a class="btn btn-small open-partial" href=${`#/ipfs/${t.partial.output}`}>Open</a></div>` : null}
    ${t.output || t.cid ? html`<div class="output-row"><span class="muted small">Output</span> <${CidChip} cid=${t.output || t.cid} name=${t.name} /></div>` : null}
    ${t.chunks.length ? html`<${Disclosure} summary=${`Chunks (${t.chunks.length < nChunks ? `${t.chunks.length} of ${nChunks} shown` : nChunks})`} open=${t.chunks.length <= 4}>
      <${ChunkTable} chunks=${t.chunks} task=${t} /></${Disclosure}>` : null}
    ${t.call ? html`<${Disclosure} summary="Log" className="log-disclosure">
      ${() => html`<${TaskLog} job=${job} task=${t.name} live=${live} taskState=${t.state} />`}</${Disclosure}>` : null}
    ${t.call && t.state !== "pending" ? html`<${Disclosure} summary="Metrics" open=${t.call === "LEARN"} className="metrics-disclosure">
      ${() => html`<${TaskMetrics} job=${job} task=${t.name} live=${live} taskState=${t.state} />`}</${Disclosure}>` : null}
  </article>`;
}

// ------------------------------------------------------------------ cancel

function CancelControl({ job, onDone }) {
  const [step, setStep] = useState("idle"); // idle | confirm | busy
  const [error, setError] = useState(null);
  const yes = useRef(null);
  useEffect(() => { if (step === "confirm" && yes.current) yes.current.focus(); }, [step]);
  const cancel = async () => {
    setStep("busy");
    try {
      await api(`jobs/${job}/cancel`, { method: "POST" });
      setError(null);
      onDone();
    } catch (err) {
      setError(err);
    }
    setStep("idle");
  };
  if (step === "confirm") {
    return html`<div class="confirm" role="group" aria-label="Confirm cancellation">
      <span>Cancel this job on every peer?</span>
      <button ref=${yes} class="btn btn-danger" type="button" onClick=${cancel}>Yes, cancel job</button>
      <button class="btn" type="button" onClick=${() => setStep("idle")}>Keep running</button>
    </div>`;
  }
  return html`<div class="cancel-wrap">
    <button class="btn btn-danger-outline" type="button" disabled=${step === "busy"}
      onClick=${() => setStep("confirm")}>${step === "busy" ? "Cancelling…" : "Cancel job"}</button>
    ${error ? html`<${ErrorBox} error=${error} title="Cancel failed." />` : null}
  </div>`;
}

function resubmit(workflow) {
  try { sessionStorage.setItem("banzai.draft", JSON.stringify(workflow)); } catch { /* ignore */ }
  location.hash = "#/submit";
}

// ------------------------------------------------------------------ page

function useNarrow(px = 720) {
  const q = window.matchMedia(`(max-width: ${px}px)`);
  const [narrow, setNarrow] = useState(q.matches);
  useEffect(() => {
    const on = () => setNarrow(q.matches);
    q.addEventListener("change", on);
    return () => q.removeEventListener("change", on);
  }, []);
  return narrow;
}

export function JobPage({ id }) {
  usePageTitle(`Job ${id}`);
  useTick(1000);
  const narrow = useNarrow();
  const [hl, setHl] = useState(null);
  const job = useLive(`jobs/${encodeURIComponent(id)}`, { filter: (ev) => ev.job === id, throttleMs: 250 });
  const j = job.data;
  const noMember = Boolean(job.error && job.error.status === 503 && job.error.field === "members");
  const remote = Boolean(j && j.served_by) || noMember;
  const misses = useRef(0); // answers in a row that gave no view (the poll backs off)
  useEffect(() => {
    misses.current = !remote ? 0 : job.error ? misses.current + 1 : 0;
    if (!remote) return undefined;
    const wait = Math.min(MEMBER_POLL_MS * 2 ** Math.max(misses.current - 1, 0), MEMBER_POLL_MAX_MS);
    const t = setTimeout(job.reload, wait);
    return () => clearTimeout(t);
  }, [remote, j, job.error]);
  const select = (name) => {
    const el = document.getElementById(`task-${name}`);
    if (el) {
      el.scrollIntoView({ behavior: "smooth", block: "start" });
      el.focus({ preventScroll: true });
    }
    setHl(name);
    setTimeout(() => setHl(null), 1500);
  };
  if (job.error && !j) {
    const nf = job.error.status === 404;
    return html`<div class="page"><h1>Job ${id}</h1>
      <${ErrorBox} error=${job.error} title=${nf ? "No such job." : "Cannot load the job."} />
      <p><a href="#/jobs">← All jobs</a></p></div>`;
  }
  if (!j) return html`<div class="page"><h1>Job ${id}</h1><${Spinner} /></div>`;
  const failed = j.tasks.filter((t) => t.state === "failed");
  const outputs = j.tasks.filter((t) => t.output);
  const final = j.tasks.length ? j.tasks[j.tasks.length - 1] : null;
  return html`<div class="page job-page" data-state=${j.state}>
    <nav class="crumbs" aria-label="Breadcrumb"><a href="#/jobs">Jobs</a> <span aria-hidden="true">/</span> <span class="mono">${j.id}</span></nav>
    <div class="page-head">
      <div>
        <h1>${j.name} <${StateBadge} state=${j.state} /></h1>
        <p class="muted">Submitted ${fmtTime(j.submitted_ms)} by <span class="mono" title=${j.submitted_by}>${shortId(j.submitted_by)}</span>${
          ` · ${j.tasks.length} task${j.tasks.length === 1 ? "" : "s"}`}</p>
      </div>
      <div class="head-actions">
        ${ACTIVE.has(j.state) ? html`<${CancelControl} job=${j.id} onDone=${job.reload} />` : null}
        <button class="btn" type="button" onClick=${() => resubmit(j.workflow)}>Edit & resubmit</button>
      </div>
    </div>
    ${job.error ? html`<${ErrorBox} error=${job.error} title="Live refresh failed; showing the last known state." />` : null}
    ${j.served_by ? html`<div class="alert alert-warn served-by" role="status">This peer holds none of this job's task events (partial replication): shown as its member <span class="mono" title=${j.served_by}>${shortId(j.served_by)}</span> gave it, asked again every ${MEMBER_POLL_MS / 1000} s. Its name, tasks and dependencies are checked against the job's submission; <strong>its task states, runners and outputs are unverified</strong> (that member's word).</div>` : null}
    <div class="card job-summary">
      <div class="progress-row big">
        <${Progress} value=${j.progress} state=${j.state} label="job progress" />
        <span class="tabnum pct job-pct">${Math.round(j.progress * 100)}%</span>
      </div>
      <dl class="kv kv-inline">
        <div><dt>State</dt><dd class="job-state">${j.state}</dd></div>
        <div><dt>Duration</dt><dd class="tabnum">${fmtDuration(jobDuration(j))}</dd></div>
        <div><dt>Finished</dt><dd>${j.finished_ms ? fmtTime(j.finished_ms) : "–"}</dd></div>
        <div><dt>Outputs</dt><dd>${outputs.length} / ${j.tasks.length}</dd></div>
      </dl>
      ${j.state === "failed" ? html`<div class="alert alert-error" role="alert"><strong>Job failed.</strong>
        ${failed.map((t) => html`<div>Task <a href=${`#/jobs/${j.id}`} onClick=${(e) => { e.preventDefault(); select(t.name); }}>${t.name}</a>: <span class="pre-wrap">${t.error || "failed"}</span></div>`)}</div>` : null}
      ${j.state === "cancelled" ? html`<div class="alert alert-warn" role="status"><strong>Job cancelled.</strong> Finished tasks keep their outputs.</div>` : null}
      ${j.state === "done" && final && final.output ? html`<div class="alert alert-ok result-callout">
        <strong>Done.</strong><span>Result of <em>${final.name}</em>:</span>
        <${CidChip} cid=${final.output} name=${final.name} />
        <a class="btn btn-primary btn-small open-result" href=${`#/ipfs/${final.output}`}>Open result</a>
      </div>` : null}
      <${Published} names=${j.published} />
    </div>
    <section class="section" aria-labelledby="graph-title">
      <h2 id="graph-title">Pipeline</h2>
      <${Dag} tasks=${j.tasks} vertical=${narrow} onSelect=${select} />
    </section>
    <section class="section" aria-labelledby="tasks-title">
      <h2 id="tasks-title">Tasks</h2>
      <div class="tasks">${j.tasks.map((t) => html`<${TaskCard} key=${t.name} job=${j.id} t=${t} highlight=${hl === t.name} />`)}</div>
    </section>
    ${outputs.length ? html`<section class="section" aria-labelledby="outputs-title">
      <h2 id="outputs-title">Outputs</h2>
      <ul class="outputs">${outputs.map((t) => html`<li><span class="out-name">${t.name}</span> <${CidChip} cid=${t.output} name=${t.name} full=${!narrow} /></li>`)}</ul>
    </section>` : null}
  </div>`;
}
