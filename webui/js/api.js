// REST client (relative URLs: the UI works on whichever peer serves it) and the live
// event hub (one EventSource on api/events shared by every view).

import { useEffect, useRef, useState } from "preact/hooks";

export class ApiError extends Error {
  constructor(message, { status = 0, kind = "", field = null, network = false, body = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.kind = kind;
    this.field = field;
    this.network = network;
    this.body = body; // the response's JSON (health's 503 carries the whole health)
  }
}

// ------------------------------------------------------------------ login
// The peer's session is an HttpOnly cookie (set by /login); every write also sends the
// session's CSRF token, read from api/session, in X-CSRF-Token. A 401 asks for the login.

let csrf = null;
const loginListeners = new Set();

async function csrfToken() {
  if (csrf) return csrf;
  try {
    const r = await fetch("api/session", { headers: { Accept: "application/json" } });
    const s = await r.json();
    csrf = s.csrf || null;
  } catch { /* treated as logged out */ }
  return csrf;
}

/** Tell the UI that the peer wants its token (a 401). */
export function needLogin(message) {
  csrf = null;
  for (const fn of loginListeners) fn(message);
}

export function onLoginNeeded(fn) {
  loginListeners.add(fn);
  return () => loginListeners.delete(fn);
}

/** Exchange the peer's token for the session cookie; throws ApiError if it is wrong. */
export async function login(token) {
  const resp = await fetch("login", {
    method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ token: token.trim() }),
  });
  let data = null;
  try { data = await resp.json(); } catch { /* not JSON */ }
  if (!resp.ok) throw new ApiError((data && data.message) || `${resp.status}`, { status: resp.status });
  csrf = data.csrf;
}

/** The session state of this browser: {authenticated, csrf, reads_need_login}. */
export async function session() {
  const r = await fetch("api/session", { headers: { Accept: "application/json" } });
  return r.json();
}

/** JSON request to this peer's API; throws ApiError with the API's {error,message,field}. */
export async function api(path, { method = "GET", body, contentType } = {}) {
  const init = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.body = typeof body === "string" ? body : JSON.stringify(body);
    init.headers["Content-Type"] = contentType || "application/json";
  }
  if (method !== "GET" && method !== "HEAD") {
    const t = await csrfToken();
    if (t) init.headers["X-CSRF-Token"] = t;
  }
  let resp;
  try {
    resp = await fetch(`api/${path}`, init);
  } catch {
    hub.setReachable(false);
    throw new ApiError("cannot reach this peer: is banzai-peer still running?", { network: true });
  }
  hub.setReachable(true);
  let data = null;
  try { data = await resp.json(); } catch { /* empty or not JSON */ }
  if (resp.status === 401) needLogin(data && data.message);
  if (!resp.ok) {
    throw new ApiError((data && data.message) || `${resp.status} ${resp.statusText}`,
                       { status: resp.status, kind: data && data.error, field: data && data.field,
                         body: data });
  }
  return data;
}

// ------------------------------------------------------------------ events

class Hub {
  constructor() {
    this.listeners = new Set();
    this.statusListeners = new Set();
    this.status = "connecting"; // connecting | live | offline
    this.reachable = true;
    this.source = null;
    this.retry = null;
    this.opens = 0; // times the stream opened: the events before it are not seen
  }

  start() {
    if (this.source || typeof EventSource === "undefined") return;
    const es = new EventSource("api/events");
    this.source = es;
    es.onopen = () => this.setStatus("live");
    es.onerror = () => {
      // EventSource retries by itself while CONNECTING; when CLOSED we retry ourselves.
      this.setStatus("offline");
      if (es.readyState === EventSource.CLOSED) {
        this.source = null;
        clearTimeout(this.retry);
        this.retry = setTimeout(() => this.start(), 3000);
      }
    };
    const onEvent = (msg) => {
      let ev;
      try { ev = JSON.parse(msg.data); } catch { return; }
      for (const fn of this.listeners) fn(ev);
    };
    es.onmessage = onEvent;
    for (const t of ["job_submitted", "job_cancelled", "task_split", "claim", "renew", "progress",
                     "chunk_done", "chunk_failed", "task_done", "cache_put", "provide", "member",
                     "job_deleted", "unprovide", "job_ended", "job_members"]) {
      es.addEventListener(t, onEvent);
    }
  }

  setStatus(s) {
    if (s === "live") this.reachable = true;
    if (this.status === s) return;
    if (s === "live") this.opens++;
    this.status = s;
    for (const fn of this.statusListeners) fn();
  }

  setReachable(ok) {
    if (this.reachable === ok) return;
    this.reachable = ok;
    for (const fn of this.statusListeners) fn();
  }

  subscribe(fn) {
    this.start();
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  onStatus(fn) {
    this.start();
    this.statusListeners.add(fn);
    return () => this.statusListeners.delete(fn);
  }
}

export const hub = new Hub();

export function useConnection() {
  const [, set] = useState(0);
  useEffect(() => hub.onStatus(() => set((n) => n + 1)), []);
  return { status: hub.status, reachable: hub.reachable };
}

/**
 * Fetch `path` and keep it fresh: refetch (throttled) on live events accepted by `filter`,
 * once each time the event stream opens after the view did (the events before it are not
 * seen: those sent while the page's stream was connecting, or lost, e.g. over a peer's
 * restart, left a job page "running" for good), and every `pollMs` as a fallback.
 * Returns {data, error, loading, reload}.
 */
export function useLive(path, { filter = () => true, pollMs = 0, throttleMs = 250 } = {}) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const filterRef = useRef(filter);
  filterRef.current = filter;
  const reloadRef = useRef(() => {});

  useEffect(() => {
    if (!path) return undefined;
    let alive = true, inflight = false, again = false, timer = null, last = 0;
    setState({ data: null, error: null, loading: true });
    const load = async () => {
      if (inflight) { again = true; return; }
      inflight = true;
      last = Date.now();
      try {
        const data = await api(path);
        if (alive) setState({ data, error: null, loading: false });
      } catch (error) {
        if (alive) setState((s) => ({ data: s.data, error, loading: false }));
      } finally {
        inflight = false;
        if (again && alive) { again = false; schedule(); }
      }
    };
    const schedule = () => {
      if (timer) return;
      const wait = Math.max(0, throttleMs - (Date.now() - last));
      timer = setTimeout(() => { timer = null; load(); }, wait);
    };
    reloadRef.current = load;
    load();
    const unsub = hub.subscribe((ev) => { if (filterRef.current(ev)) schedule(); });
    let seen = hub.opens;
    const unstat = hub.onStatus(() => {
      if (hub.opens !== seen) { seen = hub.opens; schedule(); }
    });
    const poll = pollMs ? setInterval(schedule, pollMs) : null;
    return () => {
      alive = false;
      unsub();
      unstat();
      clearTimeout(timer);
      if (poll) clearInterval(poll);
    };
  }, [path, pollMs, throttleMs]);

  return { ...state, reload: () => reloadRef.current() };
}

/** Re-render every `ms` (for durations and "x s ago" labels). */
export function useTick(ms = 1000) {
  const [, set] = useState(0);
  useEffect(() => {
    const t = setInterval(() => set((n) => n + 1), ms);
    return () => clearInterval(t);
  }, [ms]);
}
