// User settings kept in localStorage: the IPFS gateway the browser reads content from.

const GATEWAY_KEY = "banzai.gateway";
const listeners = new Set();

function read(key) {
  try { return localStorage.getItem(key) || ""; } catch { return ""; }
}

/** "" for this peer's own gateway (relative URLs), else an absolute base ending in "/". */
export function gatewayBase() {
  const v = read(GATEWAY_KEY).trim();
  return v ? v.replace(/\/+$/, "") + "/" : "";
}

export function gatewayLabel() {
  return gatewayBase() ? gatewayBase() : "this peer's gateway (/ipfs/)";
}

/** Normalise and store a gateway URL ("" resets to this peer). Throws on a bad URL. */
export function setGateway(url) {
  let v = String(url || "").trim();
  if (v) {
    const u = new URL(v); // throws TypeError on garbage
    if (u.protocol !== "http:" && u.protocol !== "https:") {
      throw new TypeError("the gateway URL must start with http:// or https://");
    }
    v = (u.origin + u.pathname).replace(/\/ipfs\/?$/, "").replace(/\/+$/, "");
  }
  try {
    if (v) localStorage.setItem(GATEWAY_KEY, v);
    else localStorage.removeItem(GATEWAY_KEY);
  } catch { /* private mode: keep the default */ }
  for (const fn of listeners) fn();
}

export function onSettingsChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function encodePath(path) {
  return String(path || "").split("/").filter(Boolean).map(encodeURIComponent).join("/");
}

/** URL of /ipfs/{cid}[/path][?query] on the configured gateway. */
export function gwUrl(cid, path = "", query = "") {
  const p = encodePath(path);
  return `${gatewayBase()}ipfs/${cid}${p ? "/" + p : ""}${query ? "?" + query : ""}`;
}
