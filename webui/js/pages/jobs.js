// Jobs list: state, progress, duration; live; paged (`limit` a page, newest first; the API's
// `next` cursor goes one page older, the cursors seen go back).

import { useState } from "preact/hooks";
import { useLive, useTick } from "../api.js";
import { Empty, ErrorBox, Progress, Spinner, StateBadge, fmtAgo, fmtDuration, fmtTime, html, shortId, usePageTitle } from "../ui.js";

export function jobDuration(j) {
  if (j.duration_s !== null && j.duration_s !== undefined) return j.duration_s;
  if (j.state === "running" || j.state === "pending") return (Date.now() - j.submitted_ms) / 1000;
  return null;
}

function TaskDots({ tasks }) {
  return html`<span class="task-dots" aria-label=${tasks.map((t) => `${t.name} ${t.state}`).join(", ")}>
    ${tasks.map((t) => html`<span class=${`task-dot state-${t.state}`} title=${`${t.name}: ${t.state} ${Math.round(t.progress * 100)}%`}></span>`)}
  </span>`;
}

function Pager({ page, next, onNewer, onOlder }) {
  return html`<nav class="pager" aria-label="Job pages">
    <button type="button" class="btn" data-pager="newer" disabled=${page === 1} onClick=${onNewer}>Newer</button>
    <span class="muted small tabnum">Page ${page}</span>
    <button type="button" class="btn" data-pager="older" disabled=${!next} onClick=${onOlder}>Older</button>
  </nav>`;
}

export function JobsPage({ limit = 50 }) {
  usePageTitle("Jobs");
  useTick(1000);
  const [cursors, setCursors] = useState([null]); // the cursor of each page down to this one
  const cursor = cursors[cursors.length - 1];
  const path = `jobs?limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
  const jobs = useLive(path, { filter: (ev) => ev.job && ev.type !== "renew", throttleMs: 500, pollMs: 15000 });
  const list = jobs.data ? jobs.data.jobs : [];
  const next = jobs.data ? jobs.data.next : null;
  const page = cursors.length;
  const first = (page - 1) * limit + 1;
  const paged = page > 1 || Boolean(next);
  const count = !jobs.data ? "" : paged
    ? `Jobs ${first}–${first + list.length - 1}, newest first`
    : `${list.length} job${list.length === 1 ? "" : "s"} known to the mesh, newest first`;
  return html`<div class="page">
    <div class="page-head">
      <div>
        <h1>Jobs</h1>
        <p class="muted jobs-count">${count}</p>
      </div>
      <a class="btn btn-primary" href="#/submit">New pipeline</a>
    </div>
    ${jobs.error ? html`<${ErrorBox} error=${jobs.error} title="Cannot list jobs." />` : null}
    ${jobs.loading && !jobs.data ? html`<${Spinner} />` : null}
    ${jobs.data && !list.length ? html`<${Empty}>No jobs yet. <a href="#/submit">Submit a pipeline</a>.</${Empty}>` : null}
    ${list.length ? html`<div class="table-wrap"><table class="table jobs-table">
      <thead><tr>
        <th scope="col">Job</th><th scope="col">State</th><th scope="col" class="col-progress">Progress</th>
        <th scope="col">Tasks</th><th scope="col">Submitted</th><th scope="col">Duration</th>
      </tr></thead>
      <tbody>${list.map((j) => html`<tr key=${j.id} class=${`job-row state-${j.state}`} data-job=${j.id}>
        <td data-label="Job"><a href=${`#/jobs/${j.id}`} class="job-link">${j.name}</a>
          <div class="mono muted small">${j.id}</div></td>
        <td data-label="State"><${StateBadge} state=${j.state} /></td>
        <td data-label="Progress" class="col-progress"><div class="progress-cell">
          <${Progress} value=${j.progress} state=${j.state} label=${`${j.name} progress`} />
          <span class="small tabnum">${Math.round(j.progress * 100)}%</span></div></td>
        <td data-label="Tasks"><${TaskDots} tasks=${j.tasks} /></td>
        <td data-label="Submitted"><span title=${fmtTime(j.submitted_ms)}>${fmtAgo(j.submitted_ms)}</span>
          <div class="muted small">by <span class="mono">${shortId(j.submitted_by)}</span></div></td>
        <td data-label="Duration" class="tabnum">${fmtDuration(jobDuration(j))}</td>
      </tr>`)}</tbody>
    </table></div>` : null}
    ${paged ? html`<${Pager} page=${page} next=${next}
      onNewer=${() => setCursors(cursors.slice(0, -1))} onOlder=${() => setCursors([...cursors, next])} />` : null}
  </div>`;
}
