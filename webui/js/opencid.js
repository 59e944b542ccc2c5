// The "paste any CID" box (header and browse page).

import { useState } from "preact/hooks";
import { parseCidInput } from "./cid.js";
import { html } from "./ui.js";

export function OpenCid({ compact }) {
  const [text, setText] = useState("");
  const [error, setError] = useState("");
  const onSubmit = (e) => {
    e.preventDefault();
    try {
      const { cid, path } = parseCidInput(text);
      setError("");
      setText("");
      location.hash = `#/ipfs/${cid}${path ? "/" + path.split("/").map(encodeURIComponent).join("/") : ""}`;
    } catch (err) {
      setError(err.message);
    }
  };
  const id = compact ? "open-cid-header" : "open-cid-page";
  return html`<form class=${`open-cid${compact ? " compact" : ""}`} onSubmit=${onSubmit} role="search">
    <label for=${id} class=${compact ? "sr-only" : "label"}>Open a CID</label>
    <div class="input-row">
      <input id=${id} class="input mono" type="text" value=${text} spellcheck="false" autocomplete="off"
        placeholder="Paste a CID or /ipfs/ path" aria-invalid=${error ? "true" : "false"}
        aria-describedby=${error ? `${id}-err` : undefined}
        onInput=${(e) => { setText(e.currentTarget.value); setError(""); }} />
      <button class="btn btn-primary" type="submit">Open</button>
    </div>
    ${error ? html`<p class="field-error" id=${`${id}-err`}>${error}</p>` : null}
  </form>`;
}

