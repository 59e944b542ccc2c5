// Shared components and formatting helpers.

import htm from "htm";
import { Component, h } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { gwUrl } from "./settings.js";

export const html = htm.bind(h);

export function fmtDuration(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "–";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60), sec = Math.round(s % 60);
  if (m < 60) return `${m} min ${sec} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function fmtAgo(ms) {
  if (!ms) return "–";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(ms).toLocaleDateString();
}

export function fmtTime(ms) {
  return ms ? new Date(ms).toLocaleString() : "–";
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  if (n < 1024) return `${n} B`;
  const u = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024, i = 0;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${u[i]}`;
}

export function shortId(id, n = 8) {
  return id && id.length > n ? id.slice(0, n) : id || "";
}

export function shortCid(cid) {
  return cid && cid.length > 20 ? `${cid.slice(0, 10)}…${cid.slice(-6)}` : cid || "";
}

export const STATE_LABEL = { pending: "pending", running: "running", done: "done", failed: "failed",
                             cancelled: "cancelled", skipped: "skipped" };

export function StateBadge({ state, small }) {
  return html`<span class=${`badge state-${state}${small ? " small" : ""}`}>${STATE_LABEL[state] || state}</span>`;
}

export function Progress({ value, state, label }) {
  const pct = Math.round((value || 0) * 100);
  return html`<div class=${`progress state-${state || "running"}`} role="progressbar"
      aria-valuemin="0" aria-valuemax="100" aria-valuenow=${pct} aria-label=${label || "progress"}>
    <div class="progress-fill" style=${{ width: `${pct}%` }}></div>
  </div>`;
}

export async function copyText(text) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch { /* fall back below */ }
  const ta = document.createElement("textarea");
  ta.value = text;
  ta.setAttribute("readonly", "");
  ta.style.position = "fixed";
  ta.style.opacity = "0";
  document.body.appendChild(ta);
  ta.select();
  let ok = false;
  try { ok = document.execCommand("copy"); } catch { ok = false; }
  ta.remove();
  return ok;
}

export function CopyButton({ text, label = "Copy" }) {
  const [done, setDone] = useState("");
  const timer = useRef(null);
  useEffect(() => () => clearTimeout(timer.current), []);
  const onClick = async () => {
    const ok = await copyText(text);
    setDone(ok ? "Copied" : "Copy failed");
    clearTimeout(timer.current);
    timer.current = setTimeout(() => setDone(""), 1500);
  };
  return html`<button type="button" class="btn btn-small btn-ghost copy-btn" onClick=${onClick}
      title=${`Copy ${text}`} aria-label=${`${label} ${text}`}>
    ${done || label}<span class="sr-only" aria-live="polite">${done}</span>
  </button>`;
}

/** A CID with copy, browse (in-app verified browser) and raw gateway links. */
export function CidChip({ cid, name = "", full = false }) {
  if (!cid) return null;
  return html`<span class="cid-chip">
    <a class="cid mono" href=${`#/ipfs/${cid}`} title=${`Browse ${cid}`}>${full ? cid : shortCid(cid)}</a>
    <${CopyButton} text=${cid} label="Copy" />
    <a class="btn btn-small btn-ghost" href=${gwUrl(cid)} target="_blank" rel="noopener"
       title="Open on the gateway" aria-label=${`Open ${name || cid} on the gateway`}>Gateway ↗</a>
  </span>`;
}

export function ErrorBox({ error, title, children }) {
  if (!error && !children) return null;
  const msg = error ? (error.message || String(error)) : "";
  return html`<div class="alert alert-error" role="alert">
    <strong>${title || (error && error.network ? "Unreachable" : "Error")}</strong>
    ${msg ? html`<span> ${msg}</span>` : null}
    ${children}
  </div>`;
}

export function Spinner({ label = "Loading…" }) {
  return html`<div class="loading" role="status"><span class="spinner" aria-hidden="true"></span>${label}</div>`;
}

export function Empty({ children }) {
  return html`<div class="empty">${children}</div>`;
}

/** Set the page title and move focus to the main heading on navigation. */
export function usePageTitle(title) {
  useEffect(() => { document.title = title ? `${title} · Banzai` : "Banzai"; }, [title]);
}

/**
 * A link target built from gossiped data (a peer's `http` value): its base URL ending in "/"
 * if it is an http: or https: URL, else null (javascript:, data: and the rest are shown as
 * text, never as links).
 */
export function safeHttpUrl(value) {
  if (typeof value !== "string" || !value) return null;
  let u;
  try { u = new URL(value); } catch { return null; }
  if (u.protocol !== "http:" && u.protocol !== "https:") return null;
  if (u.username || u.password) return null;
  return `${u.origin}${u.pathname.replace(/\/*$/, "")}/`;
}

/**
 * An error boundary: its children, or, once rendering them threw, "this panel could not
 * render: <reason>" in their place, so one bad value (a member's heartbeat, a view) costs one
 * panel, not the app (session 49, review r1 F2: a throw in one peer card left every page
 * empty). A new `resetKey` (the panel's data) or "Try again" renders the children again.
 */
export class Boundary extends Component {
  constructor(props) {
    super(props);
    this.state = { error: null };
  }

  static getDerivedStateFromError(error) {
    return { error };
  }

  componentDidCatch(error) {
    console.warn(`a panel could not render: ${error && error.message}`);
  }

  componentDidUpdate(prev) {
    if (this.state.error && prev.resetKey !== this.props.resetKey) this.setState({ error: null });
  }

  render() {
    const { error } = this.state;
    if (!error) return this.props.children;
    const reason = String((error && error.message) || error).slice(0, 500);
    return html`<div class="alert alert-error panel-error" role="alert">
      This ${this.props.what || "panel"} could not render: <span class="mono">${reason}</span>
      <button type="button" class="btn btn-small" onClick=${() => this.setState({ error: null })}>Try again</button>
    </div>`;
  }
}
