// Banzai web UI: hash router, layout, settings. Every request is relative to the page, so
// whichever peer serves the UI is the one it talks to.

import { render } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { api, hub, login, needLogin, onLoginNeeded, session, useConnection } from "./api.js";
import { OpenCid } from "./opencid.js";
import { gatewayBase, onSettingsChange, setGateway } from "./settings.js";
import { Boundary, html } from "./ui.js";
import { MeshPage } from "./pages/mesh.js";
import { JobsPage } from "./pages/jobs.js";
import { JobPage } from "./pages/job.js";
import { SubmitPage } from "./pages/submit.js";
import { BrowsePage } from "./pages/browse.js";

function parseRoute(hash) {
  const raw = (hash || "").replace(/^#/, "") || "/";
  const [pathPart] = raw.split("?");
  const parts = pathPart.split("/").filter(Boolean).map((p) => {
    try { return decodeURIComponent(p); } catch { return p; }
  });
  if (parts.length === 0 || parts[0] === "mesh") return { page: "mesh" };
  if (parts[0] === "jobs" && parts.length === 1) {
    const limit = Number(new URLSearchParams(raw.split("?")[1] || "").get("limit"));
    return { page: "jobs", limit: limit >= 1 && limit <= 1000 ? Math.floor(limit) : 50 };
  }
  if (parts[0] === "jobs") return { page: "job", id: parts[1] };
  if (parts[0] === "submit") return { page: "submit" };
  if (parts[0] === "browse") return { page: "browse" };
  if (parts[0] === "ipfs" && parts[1]) return { page: "browse", cid: parts[1], path: parts.slice(2).join("/") };
  return { page: "notfound", raw };
}

function useRoute() {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const on = () => setRoute(parseRoute(location.hash));
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  return route;
}

const NAV = [
  ["mesh", "#/", "Mesh"],
  ["jobs", "#/jobs", "Jobs"],
  ["submit", "#/submit", "Submit"],
  ["browse", "#/browse", "Browse"],
];


function SettingsDialog({ open, onClose }) {
  const ref = useRef(null);
  const [value, setValue] = useState(gatewayBase().replace(/\/$/, ""));
  const [msg, setMsg] = useState(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (open && !d.open) {
      setValue(gatewayBase().replace(/\/$/, ""));
      setMsg(null);
      d.showModal();
    } else if (!open && d.open) d.close();
  }, [open]);
  const save = (e) => {
    e.preventDefault();
    try {
      setGateway(value);
      onClose();
    } catch (err) {
      setMsg({ error: true, text: err.message });
    }
  };
  const test = async () => {
    const base = value.trim() ? value.trim().replace(/\/+$/, "").replace(/\/ipfs$/, "") + "/" : "";
    setMsg({ text: "Checking…" });
    try {
      const r = await fetch(`${base}ipfs/bafkqaaa?format=raw`, { method: "GET" });
      setMsg({ text: `Reachable (HTTP ${r.status}).` });
    } catch {
      setMsg({ error: true, text: "Unreachable from this browser (network error or the gateway does not allow cross-origin requests)." });
    }
  };
  return html`<dialog ref=${ref} class="dialog" aria-labelledby="settings-title"
      onClose=${onClose} onCancel=${onClose}>
    <form onSubmit=${save}>
      <h2 id="settings-title">Settings</h2>
      <label class="label" for="gateway-url">IPFS gateway</label>
      <input id="gateway-url" class="input mono" type="url" value=${value} placeholder="(this peer: /ipfs/)"
        onInput=${(e) => setValue(e.currentTarget.value)} />
      <p class="hint">Where the browser reads content from. Empty uses this peer's own
        <code>/ipfs/</code> gateway. An external gateway must allow cross-origin requests
        and serve <code>?format=raw</code>; every block is verified against its CID either way.
        Saved in this browser only.</p>
      ${msg ? html`<p class=${msg.error ? "field-error" : "hint"} role="status">${msg.text}</p>` : null}
      <div class="dialog-actions">
        <button type="button" class="btn" onClick=${test}>Test</button>
        <button type="button" class="btn" onClick=${() => setValue("")}>Use this peer</button>
        <span class="spacer"></span>
        <button type="button" class="btn btn-ghost" onClick=${onClose}>Cancel</button>
        <button type="submit" class="btn btn-primary">Save</button>
      </div>
    </form>
  </dialog>`;
}

// Rendered only while a login is wanted (a 401, or reads that need it): then it is modal.
function LoginDialog() {
  const [why, setWhy] = useState(null);
  useEffect(() => onLoginNeeded((m) => setWhy(m || "This peer needs its token.")), []);
  return why ? html`<${LoginForm} why=${why} />` : null;
}

function LoginForm({ why }) {
  const ref = useRef(null);
  const [value, setValue] = useState("");
  const [msg, setMsg] = useState(null);
  useEffect(() => {
    if (ref.current && !ref.current.open) ref.current.showModal();
  }, []);
  const submit = async (e) => {
    e.preventDefault();
    setMsg(null);
    try {
      await login(value);
      location.reload(); // every view reloads its data with the new session
    } catch (err) {
      setMsg(err.message);
    }
  };
  return html`<dialog ref=${ref} class="dialog login-dialog" aria-labelledby="login-title"
      onCancel=${(e) => e.preventDefault()}>
    <form onSubmit=${submit}>
      <h2 id="login-title">Log in to this peer</h2>
      <p class="hint">${why}</p>
      <label class="label" for="login-token">Token</label>
      <input id="login-token" class="input mono" type="password" autocomplete="off" value=${value}
        onInput=${(e) => setValue(e.currentTarget.value)} required />
      <p class="hint">Open the login URL that <code>banzai-peer</code> printed at start, or paste
        its token here: it is in the file <code>http-token</code> of the peer's data dir
        (<code>banzai-peer --print-login</code> prints the URL again).</p>
      ${msg ? html`<p class="field-error" role="alert">${msg}</p>` : null}
      <div class="dialog-actions">
        <span class="spacer"></span>
        <button type="submit" class="btn btn-primary">Log in</button>
      </div>
    </form>
  </dialog>`;
}

function ConnectionBadge() {
  const { status, reachable } = useConnection();
  const s = !reachable ? "offline" : status;
  const label = { live: "Live", connecting: "Connecting…", offline: "Reconnecting…" }[s];
  return html`<span class=${`conn conn-${s}`} role="status" title="Live updates from this peer (server-sent events)">
    <span class="dot" aria-hidden="true"></span>${label}</span>`;
}

function OfflineBanner() {
  const { status, reachable } = useConnection();
  const [checking, setChecking] = useState(false);
  if (reachable && status !== "offline") return null;
  const retry = async () => {
    setChecking(true);
    try { await api("health"); } catch { /* still down */ }
    setChecking(false);
  };
  return html`<div class="alert alert-error banner" role="alert">
    <span><strong>Peer unreachable.</strong> This page lost its connection to the peer that served it
    (${location.host}). Live updates resume automatically when it is back.</span>
    <button class="btn btn-small" type="button" onClick=${retry} disabled=${checking}>
      ${checking ? "Checking…" : "Retry now"}</button>
  </div>`;
}

function App() {
  const route = useRoute();
  const [settings, setSettings] = useState(false);
  const [peer, setPeer] = useState(null);
  const [, bump] = useState(0);
  const mainRef = useRef(null);
  useEffect(() => onSettingsChange(() => bump((n) => n + 1)), []);
  useEffect(() => {
    // (503 while the peer cannot run work: its body still names the peer)
    api("health").then(setPeer).catch((e) => { if (e.body && e.body.peer) setPeer(e.body); });
    session().then((s) => {
      if (s.reads_need_login && !s.authenticated) needLogin("This peer is reachable beyond its own machine: reading it needs its token.");
    }).catch(() => {});
    hub.start();
  }, []);
  const first = useRef(true);
  useEffect(() => {
    if (first.current) { first.current = false; return; }
    window.scrollTo(0, 0);
    if (mainRef.current) mainRef.current.focus({ preventScroll: true });
  }, [route.page, route.id, route.cid, route.path]);

  let page;
  switch (route.page) {
    case "mesh": page = html`<${MeshPage} />`; break;
    case "jobs": page = html`<${JobsPage} limit=${route.limit} />`; break;
    case "job": page = html`<${JobPage} key=${route.id} id=${route.id} />`; break;
    case "submit": page = html`<${SubmitPage} />`; break;
    case "browse": page = html`<${BrowsePage} key=${`${route.cid}/${route.path}`} cid=${route.cid} path=${route.path || ""} />`; break;
    default: page = html`<div class="page"><h1>Not found</h1><p>No page at <code>${route.raw}</code>.
      <a href="#/">Go to the mesh view</a>.</p></div>`;
  }
  const active = route.page === "job" ? "jobs" : route.page;
  return html`
    <a class="skip-link" href="#main" onClick=${(e) => { e.preventDefault(); mainRef.current.focus(); }}>Skip to content</a>
    <header class="topbar">
      <div class="topbar-inner">
        <a class="brand" href="#/" aria-label="Banzai home">
          <span class="logo" aria-hidden="true">◆</span> Banzai
          ${peer ? html`<span class="peer-name" title=${`peer ${peer.peer}`}>${peer.name}</span>` : null}
        </a>
        <nav class="nav" aria-label="Main">
          ${NAV.map(([key, href, label]) => html`<a href=${href} class=${active === key ? "active" : ""}
              aria-current=${active === key ? "page" : undefined}>${label}</a>`)}
        </nav>
        <div class="topbar-tools">
          <${OpenCid} compact=${true} />
          <${ConnectionBadge} />
          <button class="btn btn-ghost btn-icon" type="button" onClick=${() => setSettings(true)}
            aria-haspopup="dialog" title="Settings">⚙<span class="sr-only">Settings</span></button>
        </div>
      </div>
    </header>
    <${OfflineBanner} />
    <main id="main" ref=${mainRef} tabindex="-1"><${Boundary} key=${`${route.page}/${route.id}/${route.cid}/${route.path}`} what="page">${page}</${Boundary}></main>
    <footer class="footer">Banzai peer ${peer ? html`<span class="mono">${peer.peer}</span>${` · v${peer.version} · `}` : " · "}<a href="api/openapi.json">API</a></footer>
    <${SettingsDialog} open=${settings} onClose=${() => setSettings(false)} />
    <${LoginDialog} />
  `;
}

render(html`<${App} />`, document.getElementById("app"));
