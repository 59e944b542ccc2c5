// Pipeline editor: forms built from the task catalog (GET /api/tasks), or JSON/YAML text;
// POST /api/jobs; the API's {error, message, field} shown next to the field at fault.

import yaml from "js-yaml";
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api } from "../api.js";
import { ErrorBox, Spinner, html, usePageTitle } from "../ui.js";

export const SEED = [
  { call: "FETCH_FESTVOX", args: ["http://127.0.0.1:8765/cmu_us_awb_arctic-0.90-release.zip"] },
  { call: "FILTER_LONGER", args: [5] },
  { call: "EXTRACT_MFCC", args: [32, 24, 1, 8000, 16000] },
  { call: "LEARN", args: [] },
];

let nextId = 1;
const newId = () => `s${nextId++}`;

// ------------------------------------------------------------------ model <-> pipeline

function emptyValues(def) {
  const v = {};
  for (const a of def ? def.args : []) v[a.name] = a.variadic ? [""] : a.type === "bool" ? (a.default ?? false) : "";
  return v;
}

function fromValue(v) {
  if (v === null || v === undefined) return "";
  return typeof v === "string" ? v : JSON.stringify(v);
}

function stepFromTask(item, index, defs, prevId, nameToId) {
  const id = newId();
  if (item && typeof item === "object" && "cid" in item && !("call" in item)) {
    return { id, kind: "cid", call: "", cid: fromValue(item.cid), name: item.name || "",
             values: {}, inputs: [] };
  }
  const call = item && typeof item.call === "string" ? item.call : "";
  const def = defs.get(call);
  const values = emptyValues(def);
  const extra = {};
  if (def) {
    const fixed = def.args.filter((a) => !a.variadic);
    const variadic = def.args.find((a) => a.variadic);
    if (Array.isArray(item.args)) {
      item.args.forEach((v, k) => {
        if (k < fixed.length) {
          const a = fixed[k];
          values[a.name] = a.type === "bool" ? v === true : fromValue(v);
        } else if (variadic) {
          if (k === fixed.length) values[variadic.name] = [];
          values[variadic.name].push(fromValue(v));
        } else extra[`#${k}`] = v;
      });
    } else if (item.params && typeof item.params === "object") {
      for (const [k, v] of Object.entries(item.params)) {
        const a = def.args.find((x) => x.name === k);
        if (!a) { extra[k] = v; continue; }
        if (a.variadic) values[k] = (Array.isArray(v) ? v : [v]).map(fromValue);
        else values[k] = a.type === "bool" ? v === true : fromValue(v);
      }
    }
  }
  let inputs;
  if (Array.isArray(item.depends)) inputs = item.depends.map((d) => nameToId.get(d) || d);
  else inputs = nameToId.size ? [] : prevId ? [prevId] : [];
  return { id, kind: "task", call, cid: "", name: item.name || "", values, inputs,
           rawArgs: def ? null : item.args ?? null, rawParams: def ? null : item.params ?? null, extra };
}

/** Load a pipeline (list or {name, tasks}) into form steps. */
export function pipelineToModel(p, defs) {
  const list = Array.isArray(p) ? p : p && Array.isArray(p.tasks) ? p.tasks : null;
  if (!list) throw new Error('a pipeline is a list of tasks or an object with "tasks"');
  const dag = !Array.isArray(p);
  const nameToId = new Map();
  const steps = [];
  // names first, so depends can point forward
  const ids = list.map(() => newId());
  if (dag) list.forEach((t, i) => { if (t && t.name) nameToId.set(t.name, ids[i]); });
  list.forEach((item, i) => {
    const s = stepFromTask(item || {}, i, defs, i ? steps[i - 1].id : null, dag ? nameToId : new Map());
    s.id = ids[i];
    if (!dag) s.inputs = i ? [steps[i - 1].id] : [];
    if (dag && !Array.isArray(item.depends)) s.inputs = [];
    steps.push(s);
  });
  const model = { name: dag && typeof p.name === "string" ? p.name : "", steps };
  // a DAG that is just the seed's chain with the default names reads back as the list form
  if (dag && (model.name === "" || model.name === "pipeline")) {
    const plain = steps.map((s) => ({ ...s, name: "" }));
    const auto = defaultNames(plain);
    const chain = steps.every((s, i) => s.name === auto[i] &&
      (i === 0 ? s.inputs.length === 0 : s.inputs.length === 1 && s.inputs[0] === steps[i - 1].id));
    if (chain) return { name: "", steps: plain };
  }
  return model;
}

function convert(v, type) {
  const s = String(v).trim();
  if (type === "int" && /^[+-]?\d+$/.test(s)) return parseInt(s, 10);
  if (type === "float" && /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(s)) return Number(s);
  if (type === "bool") return v === true || s === "true";
  return type === "str" ? String(v) : s; // not a number: let the API say what is wrong, and where
}

function isSet(a, v) {
  if (a.variadic) return Array.isArray(v) && v.some((x) => String(x).trim() !== "");
  if (a.type === "bool") return v !== (a.default ?? false);
  return v !== undefined && String(v).trim() !== "";
}

function argsOf(step, def) {
  if (!def) return step.rawArgs ?? undefined;
  const fixed = def.args.filter((a) => !a.variadic);
  const variadic = def.args.find((a) => a.variadic);
  const vItems = variadic ? (step.values[variadic.name] || []).filter((x) => String(x).trim() !== "") : [];
  let last = -1;
  fixed.forEach((a, k) => { if (isSet(a, step.values[a.name]) || (a.required && variadic)) last = k; });
  if (variadic && (vItems.length || variadic.required)) last = fixed.length - 1;
  const out = [];
  for (let k = 0; k <= last; k++) {
    const a = fixed[k], v = step.values[a.name];
    if (isSet(a, v)) out.push(convert(v, a.type));
    else if (!a.required) out.push(a.default);
    else out.push(null); // missing required value: the API reports tasks[i].args[k]
  }
  for (const x of vItems) out.push(convert(x, variadic.type));
  return out;
}

function defaultNames(steps) {
  const used = new Map();
  return steps.map((s) => {
    const base = s.name.trim() || (s.kind === "cid" ? "source" : (s.call || "task").toLowerCase());
    const n = (used.get(base) || 0) + 1;
    used.set(base, n);
    return n === 1 ? base : `${base}_${n}`;
  });
}

function isChain(model) {
  return !model.name.trim() && model.steps.every((s, i) => !s.name.trim() &&
    (i === 0 ? s.inputs.length === 0 : s.inputs.length === 1 && s.inputs[0] === model.steps[i - 1].id));
}

/** The pipeline the form describes: the seed's list form when it is a plain chain, else a DAG. */
export function modelToPipeline(model, defs) {
  const chain = isChain(model);
  const names = defaultNames(model.steps);
  const idToName = new Map(model.steps.map((s, i) => [s.id, names[i]]));
  const tasks = model.steps.map((s, i) => {
    const t = {};
    if (!chain) t.name = names[i];
    if (s.kind === "cid") {
      t.cid = s.cid.trim();
    } else {
      t.call = s.call;
      const args = argsOf(s, defs.get(s.call));
      if (args !== undefined && args !== null) t.args = args;
      if (!defs.get(s.call) && s.rawParams) t.params = s.rawParams;
      if (!chain && s.inputs.length) t.depends = s.inputs.map((id) => idToName.get(id) || id);
    }
    return t;
  });
  if (chain) return tasks;
  return { name: model.name.trim() || "pipeline", tasks };
}

/** Map an API error field (tasks[2].args[1], tasks[0].call, tasks[1].params.seconds...) to a form key. */
export function fieldKey(field, model, defs) {
  if (!field) return "global";
  if (field === "name") return "pipeline-name";
  const m = /^tasks\[(\d+)\](.*)$/.exec(field);
  if (!m) return "global";
  const i = Number(m[1]);
  const step = model.steps[i];
  if (!step) return "global";
  const rest = m[2];
  const def = defs.get(step.call);
  const base = `t${i}`;
  let r;
  if ((r = /^\.args\[(\d+)\](?:\[\d+\])?$/.exec(rest)) && def) {
    const k = Number(r[1]);
    const fixed = def.args.filter((a) => !a.variadic);
    const variadic = def.args.find((a) => a.variadic);
    if (k < fixed.length) return `${base}-arg-${fixed[k].name}`;
    if (variadic) {
      const items = (step.values[variadic.name] || []);
      const nonEmpty = items.map((x, j) => [x, j]).filter(([x]) => String(x).trim() !== "");
      const hit = nonEmpty[k - fixed.length];
      return `${base}-arg-${variadic.name}-${hit ? hit[1] : 0}`;
    }
    return `${base}-args`;
  }
  if ((r = /^\.params\.([^.[]+)/.exec(rest)) && def) return `${base}-arg-${r[1]}`;
  if (rest === ".args" && def) {
    const missing = def.args.find((a) => a.required && !isSet(a, step.values[a.name]));
    if (missing) return `${base}-arg-${missing.name}${missing.variadic ? "-0" : ""}`;
    return `${base}-args`;
  }
  if (rest === ".call") return `${base}-call`;
  if (rest === ".name") return `${base}-name`;
  if (rest === ".cid") return `${base}-cid`;
  if (rest.startsWith(".depends")) return `${base}-inputs`;
  return base;
}

// ------------------------------------------------------------------ components

function FieldError({ id, error }) {
  return error ? html`<p class="field-error" id=${`${id}-error`} data-field-error=${id} role="alert">${error}</p>` : null;
}

function ArgInput({ id, a, value, onChange, error }) {
  const hintId = `${id}-hint`;
  const described = [hintId, error ? `${id}-error` : ""].filter(Boolean).join(" ");
  const range = a.min !== undefined || a.max !== undefined
    ? ` · ${a.min ?? "−∞"} … ${a.max ?? "∞"}` : "";
  const hint = html`<p class="hint" id=${hintId}>${a.doc}${a.doc ? " · " : ""}${a.required ? "required" : html`default <code>${JSON.stringify(a.default)}</code>`}${range}</p>`;
  const label = html`<span class="arg-name mono">${a.name}</span> <span class="type">${a.variadic ? `list of ${a.type}` : a.type}</span>
    ${a.required ? html`<span class="req" aria-hidden="true">*</span>` : null}`;
  if (a.type === "bool") {
    return html`<div class=${`field${error ? " has-error" : ""}`} data-key=${id}>
      <label class="check"><input id=${id} type="checkbox" checked=${!!value} aria-describedby=${described}
        aria-invalid=${error ? "true" : "false"} onChange=${(e) => onChange(e.currentTarget.checked)} /> ${label}</label>
      ${hint}<${FieldError} id=${id} error=${error} />
    </div>`;
  }
  const numeric = a.type === "int" || a.type === "float";
  const placeholder = a.required ? "" : String(a.default);
  if (a.variadic) {
    const items = Array.isArray(value) && value.length ? value : [""];
    return html`<fieldset class="field variadic" data-key=${`${id}-list`}>
      <legend>${label}</legend>
      ${items.map((v, j) => {
        const iid = `${id}-${j}`;
        const err = error && error.key === iid ? error.message : null;
        return html`<div class=${`variadic-row${err ? " has-error" : ""}`} data-key=${iid}>
          <div class="input-row">
            <input id=${iid} class="input mono" type="text" value=${v} spellcheck="false"
              inputmode=${numeric ? "decimal" : undefined} aria-label=${`${a.name} ${j + 1}`}
              aria-invalid=${err ? "true" : "false"} aria-describedby=${[hintId, err ? `${iid}-error` : ""].filter(Boolean).join(" ")}
              onInput=${(e) => onChange(items.map((x, k) => (k === j ? e.currentTarget.value : x)))} />
            ${items.length > 1 ? html`<button type="button" class="btn btn-ghost btn-small" aria-label=${`Remove ${a.name} ${j + 1}`}
              onClick=${() => onChange(items.filter((_, k) => k !== j))}>Remove</button>` : null}
          </div>
          <${FieldError} id=${iid} error=${err} />
        </div>`;
      })}
      <button type="button" class="btn btn-small" onClick=${() => onChange([...items, ""])}>+ Add ${a.name}</button>
      ${hint}
    </fieldset>`;
  }
  const msg = error ? error.message || error : null;
  return html`<div class=${`field${msg ? " has-error" : ""}`} data-key=${id}>
    <label for=${id}>${label}</label>
    <input id=${id} class="input mono" type="text" value=${value} placeholder=${placeholder} spellcheck="false"
      inputmode=${a.type === "int" ? "numeric" : numeric ? "decimal" : undefined}
      aria-invalid=${msg ? "true" : "false"} aria-describedby=${described} aria-required=${a.required ? "true" : undefined}
      onInput=${(e) => onChange(e.currentTarget.value)} />
    ${hint}<${FieldError} id=${id} error=${msg} />
  </div>`;
}

function StepCard({ step, index, steps, defs, catalog, errors, update, remove, move }) {
  const def = defs.get(step.call);
  const base = `t${index}`;
  const errAt = (key) => (errors && errors.key === key ? errors.message : null);
  const stepErr = errAt(base) || errAt(`${base}-args`);
  const earlier = steps.slice(0, index);
  const names = defaultNames(steps);
  const onCall = (v) => {
    if (v === "__cid__") update({ kind: "cid", call: "", values: {}, rawArgs: null, rawParams: null });
    else update({ kind: "task", call: v, values: emptyValues(defs.get(v)), rawArgs: null, rawParams: null });
  };
  return html`<li class=${`card step-card${stepErr ? " has-error" : ""}`} data-step=${index} aria-labelledby=${`${base}-title`}>
    <div class="step-head">
      <span class="step-num" aria-hidden="true">${index + 1}</span>
      <h3 id=${`${base}-title`} class="step-title">Step ${index + 1}<span class="muted"> · ${names[index]}</span></h3>
      <div class="step-tools">
        <button type="button" class="btn btn-ghost btn-small" onClick=${() => move(-1)} disabled=${index === 0}
          aria-label=${`Move step ${index + 1} up`}>↑</button>
        <button type="button" class="btn btn-ghost btn-small" onClick=${() => move(1)} disabled=${index === steps.length - 1}
          aria-label=${`Move step ${index + 1} down`}>↓</button>
        <button type="button" class="btn btn-ghost btn-small" onClick=${remove} aria-label=${`Remove step ${index + 1}`}>Remove</button>
      </div>
    </div>
    ${stepErr ? html`<p class="field-error" id=${`${base}-error`} data-field-error=${base} role="alert">${stepErr}</p>` : null}
    <div class="step-grid">
      <div class=${`field${errAt(`${base}-call`) ? " has-error" : ""}`} data-key=${`${base}-call`}>
        <label for=${`${base}-call`}>Task</label>
        <select id=${`${base}-call`} class="input" value=${step.kind === "cid" ? "__cid__" : step.call}
          aria-invalid=${errAt(`${base}-call`) ? "true" : "false"}
          aria-describedby=${errAt(`${base}-call`) ? `${base}-call-error` : undefined}
          onChange=${(e) => onCall(e.currentTarget.value)}>
          <option value="" disabled>Choose a task…</option>
          ${step.kind === "task" && step.call && !def ? html`<option value=${step.call}>${step.call} (unknown)</option>` : null}
          ${catalog.map((t) => html`<option value=${t.call}>${t.call}</option>`)}
          <option value="__cid__">Existing data (by CID)</option>
        </select>
        <${FieldError} id=${`${base}-call`} error=${errAt(`${base}-call`)} />
        ${def ? html`<p class="hint task-doc">${def.doc}${def.per_item ? html` <span class="tag">per item: ${def.items}</span>` : null}</p>` : null}
      </div>
      <div class=${`field${errAt(`${base}-name`) ? " has-error" : ""}`} data-key=${`${base}-name`}>
        <label for=${`${base}-name`}>Name <span class="muted">(optional)</span></label>
        <input id=${`${base}-name`} class="input mono" type="text" value=${step.name} placeholder=${names[index]}
          spellcheck="false" aria-invalid=${errAt(`${base}-name`) ? "true" : "false"}
          aria-describedby=${errAt(`${base}-name`) ? `${base}-name-error` : undefined}
          onInput=${(e) => update({ name: e.currentTarget.value })} />
        <${FieldError} id=${`${base}-name`} error=${errAt(`${base}-name`)} />
      </div>
    </div>
    ${step.kind === "cid" ? html`<div class=${`field${errAt(`${base}-cid`) ? " has-error" : ""}`} data-key=${`${base}-cid`}>
        <label for=${`${base}-cid`}>CID</label>
        <input id=${`${base}-cid`} class="input mono" type="text" value=${step.cid} placeholder="bafy… or Qm…" spellcheck="false"
          aria-invalid=${errAt(`${base}-cid`) ? "true" : "false"} onInput=${(e) => update({ cid: e.currentTarget.value })} />
        <${FieldError} id=${`${base}-cid`} error=${errAt(`${base}-cid`)} />
      </div>` : null}
    ${def && def.args.length ? html`<div class="args" data-key=${`${base}-args`}>
      ${def.args.map((a) => {
        const id = `${base}-arg-${a.name}`;
        const err = errors && errors.key && errors.key.startsWith(id) &&
          (errors.key === id || (a.variadic && /-\d+$/.test(errors.key.slice(id.length)))) ? errors : null;
        return html`<${ArgInput} key=${a.name} id=${id} a=${a} value=${step.values[a.name]}
          error=${a.variadic ? err : err ? err.message : null}
          onChange=${(v) => update({ values: { ...step.values, [a.name]: v } })} />`;
      })}
    </div>` : def ? html`<p class="muted small">No arguments.</p>` : null}
    ${step.kind === "task" && index > 0 ? html`<fieldset class=${`field inputs${errAt(`${base}-inputs`) ? " has-error" : ""}`} data-key=${`${base}-inputs`}>
      <legend>Input from</legend>
      <div class="chips">
        ${earlier.map((s, k) => html`<label class="chip check">
          <input type="checkbox" checked=${step.inputs.includes(s.id)}
            onChange=${(e) => update({ inputs: e.currentTarget.checked
              ? [...step.inputs, s.id] : step.inputs.filter((x) => x !== s.id) })} />
          ${k + 1}. ${names[k]}</label>`)}
      </div>
      <p class="hint">${step.inputs.length ? "The input is the merge of the checked steps' outputs." : "No input."}</p>
      <${FieldError} id=${`${base}-inputs`} error=${errAt(`${base}-inputs`)} />
    </fieldset>` : null}
  </li>`;
}

function detectFormat(text) {
  try { JSON.parse(text); return "json"; } catch { return "yaml"; }
}

export function SubmitPage() {
  usePageTitle("Submit");
  const [catalog, setCatalog] = useState(null);
  const [catErr, setCatErr] = useState(null);
  const [model, setModel] = useState(null);
  const [mode, setMode] = useState("form");
  const [text, setText] = useState("");
  const [errors, setErrors] = useState(null); // {key, message, field, kind}
  const [busy, setBusy] = useState(false);
  const [addCall, setAddCall] = useState("");
  const fileRef = useRef(null);
  const defs = useMemo(() => new Map((catalog || []).map((t) => [t.call, t])), [catalog]);

  useEffect(() => {
    api("tasks").then((d) => setCatalog(d.tasks)).catch(setCatErr);
  }, []);
  useEffect(() => {
    if (!catalog || model) return;
    let initial = SEED;
    try {
      const draft = sessionStorage.getItem("banzai.draft");
      if (draft) { initial = JSON.parse(draft); sessionStorage.removeItem("banzai.draft"); }
    } catch { /* ignore */ }
    try { setModel(pipelineToModel(initial, defs)); } catch { setModel(pipelineToModel(SEED, defs)); }
  }, [catalog]);

  // focus the field at fault after an error
  useEffect(() => {
    if (!errors || !errors.key || errors.key === "global") return;
    const el = document.getElementById(errors.key) ||
      document.querySelector(`[data-key="${errors.key}"] input, [data-key="${errors.key}"] select`) ||
      document.querySelector(`[data-step="${errors.key.replace(/^t(\d+).*/, "$1")}"]`);
    if (el) {
      el.scrollIntoView({ block: "center" });
      if (el.focus) el.focus({ preventScroll: true });
    }
  }, [errors]);

  if (catErr) return html`<div class="page"><h1>Submit a pipeline</h1><${ErrorBox} error=${catErr} title="Cannot load the task catalog." /></div>`;
  if (!catalog || !model) return html`<div class="page"><h1>Submit a pipeline</h1><${Spinner} /></div>`;

  const pipeline = modelToPipeline(model, defs);
  const preview = JSON.stringify(pipeline, null, 2);
  const setSteps = (fn) => { setModel((m) => ({ ...m, steps: fn(m.steps) })); setErrors(null); };
  const update = (i) => (patch) => setSteps((st) => st.map((s, k) => (k === i ? { ...s, ...patch } : s)));
  const remove = (i) => () => setSteps((st) => st.filter((_, k) => k !== i)
    .map((s) => ({ ...s, inputs: s.inputs.filter((x) => x !== st[i].id) })));
  const move = (i) => (d) => setSteps((st) => {
    const j = i + d;
    if (j < 0 || j >= st.length) return st;
    const out = st.slice();
    [out[i], out[j]] = [out[j], out[i]];
    return out.map((s, k) => ({ ...s, inputs: s.inputs.filter((x) => out.slice(0, k).some((p) => p.id === x)) }));
  });
  const addStep = () => {
    if (!addCall) return;
    setSteps((st) => {
      const prev = st[st.length - 1];
      const s = addCall === "__cid__"
        ? { id: newId(), kind: "cid", call: "", cid: "", name: "", values: {}, inputs: [] }
        : { id: newId(), kind: "task", call: addCall, cid: "", name: "", values: emptyValues(defs.get(addCall)),
            inputs: prev ? [prev.id] : [] };
      return [...st, s];
    });
    setAddCall("");
  };

  const toText = () => { setText(preview); setMode("text"); setErrors(null); };
  const toForm = () => {
    try {
      const obj = detectFormat(text) === "json" ? JSON.parse(text) : yaml.load(text);
      setModel(pipelineToModel(obj, defs));
      setMode("form");
      setErrors(null);
    } catch (err) {
      setErrors({ key: "text", message: `Cannot load this into the form: ${err.message}` });
    }
  };
  const onFile = async (e) => {
    const f = e.currentTarget.files && e.currentTarget.files[0];
    if (!f) return;
    setText(await f.text());
    setMode("text");
    setErrors(null);
    e.currentTarget.value = "";
  };

  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setErrors(null);
    try {
      let res;
      if (mode === "text") {
        const fmt = detectFormat(text);
        res = await api("jobs", { method: "POST", body: text,
                                  contentType: fmt === "json" ? "application/json" : "application/yaml" });
      } else {
        res = await api("jobs", { method: "POST", body: pipeline });
      }
      location.hash = `#/jobs/${res.job}`;
    } catch (err) {
      const key = mode === "text" ? "text" : fieldKey(err.field, model, defs);
      const short = err.field && err.message.startsWith(`${err.field}: `)
        ? err.message.slice(err.field.length + 2) : err.message;
      setErrors({ key, message: key === "global" || key === "text" ? err.message : short,
                  full: err.message, field: err.field, kind: err.kind, network: err.network });
    } finally {
      setBusy(false);
    }
  };

  const globalErr = errors && (errors.key === "global" || errors.key === "text" || errors.key === "pipeline-name");
  return html`<div class="page submit-page">
    <div class="page-head">
      <div>
        <h1>Submit a pipeline</h1>
        <p class="muted">Each step's input is the output of the steps it takes input from. Prefilled with the seed pipeline.</p>
      </div>
    </div>
    <div class="tabs" role="tablist" aria-label="Editor">
      <button role="tab" type="button" id="tab-form" aria-selected=${mode === "form"} aria-controls="panel-form"
        class=${`tab${mode === "form" ? " active" : ""}`} onClick=${() => (mode === "text" ? toForm() : null)}>Form</button>
      <button role="tab" type="button" id="tab-text" aria-selected=${mode === "text"} aria-controls="panel-text"
        class=${`tab${mode === "text" ? " active" : ""}`} onClick=${() => (mode === "form" ? toText() : null)}>JSON / YAML</button>
      <span class="spacer"></span>
      <input ref=${fileRef} type="file" accept=".json,.yaml,.yml,application/json,application/yaml,text/yaml"
        class="sr-only" id="pipeline-file" onChange=${onFile} />
      <button type="button" class="btn btn-small" onClick=${() => fileRef.current.click()}>Upload file…</button>
      <button type="button" class="btn btn-small btn-ghost" onClick=${() => { setModel(pipelineToModel(SEED, defs)); setMode("form"); setErrors(null); }}>Reset to seed</button>
    </div>
    <form onSubmit=${submit} novalidate>
      ${errors ? html`<div class="alert alert-error submit-error" role="alert" data-field=${errors.field || ""}>
        <strong>${errors.network ? "Peer unreachable." : "The pipeline was rejected."}</strong>
        <span class="pre-wrap"> ${errors.full || errors.message}</span>
        ${errors.field && !globalErr ? html`<div class="small">See the highlighted field (<code>${errors.field}</code>).</div>` : null}
      </div>` : null}
      ${mode === "form" ? html`<div id="panel-form" role="tabpanel" aria-labelledby="tab-form">
        <div class=${`field pipeline-name${errors && errors.key === "pipeline-name" ? " has-error" : ""}`} data-key="pipeline-name">
          <label for="pipeline-name">Pipeline name <span class="muted">(optional; names make it a DAG)</span></label>
          <input id="pipeline-name" class="input" type="text" value=${model.name} placeholder="pipeline"
            onInput=${(e) => { const v = e.currentTarget.value; setModel((m) => ({ ...m, name: v })); }} />
        </div>
        <ol class="steps">
          ${model.steps.map((s, i) => html`<${StepCard} key=${s.id} step=${s} index=${i} steps=${model.steps}
            defs=${defs} catalog=${catalog} errors=${errors} update=${update(i)} remove=${remove(i)} move=${move(i)} />`)}
        </ol>
        <div class="add-step card">
          <label for="add-step-call" class="label">Add the next step</label>
          <div class="input-row">
            <select id="add-step-call" class="input" value=${addCall} onChange=${(e) => setAddCall(e.currentTarget.value)}>
              <option value="">Choose a task…</option>
              ${catalog.map((t) => html`<option value=${t.call} title=${t.doc}>${t.call} — ${t.doc.slice(0, 60)}</option>`)}
              <option value="__cid__">Existing data (by CID)</option>
            </select>
            <button type="button" class="btn" onClick=${addStep} disabled=${!addCall}>Add step</button>
          </div>
        </div>
        <details class="disclosure preview">
          <summary>Preview (what will be sent)</summary>
          <pre class="code">${preview}</pre>
        </details>
      </div>` : html`<div id="panel-text" role="tabpanel" aria-labelledby="tab-text">
        <label for="pipeline-text" class="label">Pipeline (JSON or YAML)</label>
        <textarea id="pipeline-text" class="input code-input mono" rows="18" spellcheck="false"
          aria-invalid=${errors ? "true" : "false"} aria-describedby=${errors ? "pipeline-text-error" : undefined}
          onInput=${(e) => { setText(e.currentTarget.value); setErrors(null); }}>${text}</textarea>
        ${errors ? html`<p class="field-error" id="pipeline-text-error" data-field-error="text">${errors.message}</p>` : null}
        <div class="row-actions"><button type="button" class="btn btn-small" onClick=${toForm}>Load into form</button></div>
      </div>`}
      <div class="submit-bar">
        <button type="submit" class="btn btn-primary btn-large" disabled=${busy} id="submit-pipeline">
          ${busy ? "Submitting…" : "Submit pipeline"}</button>
        <span class="muted small">${mode === "form" ? `${model.steps.length} step${model.steps.length === 1 ? "" : "s"}` : ""}</span>
      </div>
    </form>
  </div>`;
}
