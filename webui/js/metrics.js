// LEARN metrics: from metrics.json (a result) or from the task's live [name, step, value] list.

import { Canvas, LineChart, drawConfusion } from "./charts.js";
import { html } from "./ui.js";

function Tile({ label, value, hint }) {
  return html`<div class="tile"><div class="tile-value">${value}</div><div class="tile-label">${label}</div>
    ${hint ? html`<div class="tile-hint">${hint}</div>` : null}</div>`;
}

function ConfusionTable({ labels, matrix }) {
  return html`<table class="sr-only"><caption>Confusion matrix: rows are true speakers, columns predicted</caption>
    <thead><tr><th scope="col">true \\ predicted</th>${labels.map((l) => html`<th scope="col">${l}</th>`)}</tr></thead>
    <tbody>${matrix.map((row, i) => html`<tr><th scope="row">${labels[i]}</th>${row.map((v) => html`<td>${v}</td>`)}</tr>`)}</tbody>
  </table>`;
}

/** The panel for a LEARN metrics.json object. */
export function MetricsPanel({ metrics }) {
  const m = metrics || {};
  const curves = m.curves || {};
  const multi = !!m.confusion;
  const heldName = multi ? "heldout_accuracy" : "heldout_loglik";
  const series = { train_loglik: curves.train_loglik || [], [heldName]: curves.heldout || [] };
  return html`<section class="card metrics-panel" aria-labelledby="metrics-title">
    <h2 id="metrics-title" class="card-title">Model metrics</h2>
    <div class="tiles">
      ${m.accuracy !== undefined ? html`<${Tile} label="held-out accuracy" value=${`${(m.accuracy * 100).toFixed(1)}%`}
          hint=${`${m.test_utterances ?? "?"} test utterances`} />` : null}
      ${m.heldout_loglik !== undefined ? html`<${Tile} label="held-out log-likelihood / frame"
          value=${Number(m.heldout_loglik).toFixed(2)} hint="single speaker: no accuracy" />` : null}
      <${Tile} label="speakers" value=${(m.speakers || []).length} hint=${(m.speakers || []).join(", ")} />
      <${Tile} label="EM iterations" value=${m.iterations ?? "–"} />
      <${Tile} label="train / test utterances" value=${`${m.train_utterances ?? "?"} / ${m.test_utterances ?? "?"}`} />
    </div>
    <div class=${multi ? "metrics-grid" : ""}>
      <div>
        <h3 class="small-title">Training curve</h3>
        <${LineChart} series=${series} right=${[heldName]} />
      </div>
      ${multi ? html`<div>
        <h3 class="small-title">Confusion matrix</h3>
        <${Canvas} className="confusion-canvas" label="Confusion matrix of held-out utterances"
          deps=${[JSON.stringify(m.confusion)]}
          draw=${(c) => drawConfusion(c, m.confusion.labels, m.confusion.matrix)} />
        <${ConfusionTable} labels=${m.confusion.labels} matrix=${m.confusion.matrix} />
      </div>` : null}
    </div>
  </section>`;
}

// A curve draws at most this many points (evenly spaced, its last kept): a task reporting a
// metric at every step for months would have the page draw, and re-key each second, all
const MAX_POINTS = 2000;

/** `points` thinned to at most `max`, evenly spaced, the first and the last kept. */
export function thin(points, max = MAX_POINTS) {
  if (points.length <= max) return points;
  const step = (points.length - 1) / (max - 1);
  return Array.from({ length: max }, (_, i) => points[Math.round(i * step)]);
}

/** Live metrics of a task (GET .../metrics): one curve per metric name. */
export function MetricsSeries({ triples }) {
  const all = {};
  for (const [name, step, value] of triples) (all[name] ||= []).push([step, value]);
  const series = {};
  let thinned = 0;
  for (const [name, points] of Object.entries(all)) {
    series[name] = thin(points);
    if (series[name].length < points.length) thinned = Math.max(thinned, points.length);
  }
  const names = Object.keys(series);
  if (!names.length) return html`<p class="muted small">No metrics reported.</p>`;
  const right = names.filter((n) => n.startsWith("heldout"));
  const last = names.map((n) => {
    const s = series[n];
    const v = s[s.length - 1][1];
    return html`<span class="chip">${n.replace(/_/g, " ")}: <strong class="tabnum">${
      n.includes("accuracy") ? `${(v * 100).toFixed(1)}%` : Number(v).toPrecision(4)}</strong></span>`;
  });
  return html`<div class="metrics-series"><div class="chips">${last}</div>
    ${thinned ? html`<p class="muted small metrics-note">${`Drawn: ${MAX_POINTS.toLocaleString()} evenly spaced points of each longer curve (up to ${thinned.toLocaleString()}).`}</p>` : null}
    <${LineChart} series=${series} right=${right.length < names.length ? right : []} height=${200} xLabel="step" /></div>`;
}
