// Canvas drawings: MFCC heatmap, confusion matrix, and uPlot training curves.

import uPlot from "uplot";
import { useEffect, useLayoutEffect, useRef } from "preact/hooks";
import { html } from "./ui.js";

// viridis, 9 anchors
const VIRIDIS = [
  [68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
  [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37],
];

export function viridis(t) {
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x)), f = x - i;
  const a = VIRIDIS[i], b = VIRIDIS[i + 1];
  return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f];
}

function css(name, fallback) {
  const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return v || fallback;
}

function setupCanvas(canvas, cssHeight) {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(200, canvas.clientWidth || canvas.parentElement.clientWidth || 600);
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(cssHeight * dpr);
  canvas.style.height = `${cssHeight}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return { ctx, w, h: cssHeight };
}

/**
 * MFCC heatmap: time (frames) left to right, coefficient 0 at the bottom.
 * `arr` = {shape: [frames, coeffs], data: Float32Array} (C order). With `normalize`,
 * each coefficient is scaled to its own min..max (c0 would otherwise dominate).
 */
export function drawHeatmap(canvas, arr, { normalize = true } = {}) {
  const [frames, coeffs] = arr.shape;
  const { ctx, w, h } = setupCanvas(canvas, 260);
  const m = { l: 44, r: 56, t: 10, b: 32 };
  const pw = w - m.l - m.r, ph = h - m.t - m.b;
  ctx.clearRect(0, 0, w, h);
  const text = css("--text-muted", "#5b6474");
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = text;
  if (!frames || !coeffs) {
    ctx.fillText("empty array", m.l, m.t + 20);
    return;
  }
  const lo = new Float64Array(coeffs).fill(Infinity), hi = new Float64Array(coeffs).fill(-Infinity);
  let glo = Infinity, ghi = -Infinity;
  for (let f = 0; f < frames; f++) {
    for (let c = 0; c < coeffs; c++) {
      const v = arr.data[f * coeffs + c];
      if (!Number.isFinite(v)) continue;
      if (v < lo[c]) lo[c] = v;
      if (v > hi[c]) hi[c] = v;
      if (v < glo) glo = v;
      if (v > ghi) ghi = v;
    }
  }
  const img = new ImageData(frames, coeffs);
  for (let f = 0; f < frames; f++) {
    for (let c = 0; c < coeffs; c++) {
      const v = arr.data[f * coeffs + c];
      const a = normalize ? lo[c] : glo, b = normalize ? hi[c] : ghi;
      const [r, g, bl] = viridis(b > a ? (v - a) / (b - a) : 0.5);
      const p = ((coeffs - 1 - c) * frames + f) * 4;
      img.data[p] = r; img.data[p + 1] = g; img.data[p + 2] = bl; img.data[p + 3] = 255;
    }
  }
  const off = document.createElement("canvas");
  off.width = frames;
  off.height = coeffs;
  off.getContext("2d").putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(off, m.l, m.t, pw, ph);
  // axes
  ctx.strokeStyle = css("--border", "#d0d5dd");
  ctx.strokeRect(m.l - 0.5, m.t - 0.5, pw + 1, ph + 1);
  ctx.fillStyle = text;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  const yticks = Math.min(coeffs, 6);
  for (let i = 0; i < yticks; i++) {
    const c = Math.round((i * (coeffs - 1)) / Math.max(1, yticks - 1));
    const y = m.t + ph - ((c + 0.5) / coeffs) * ph;
    ctx.fillText(`c${c}`, m.l - 6, y);
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const xticks = Math.max(2, Math.min(8, Math.floor(pw / 90)));
  for (let i = 0; i <= xticks; i++) {
    const f = Math.round((i * (frames - 1)) / xticks);
    const x = m.l + ((f + 0.5) / frames) * pw;
    ctx.fillText(String(f), x, m.t + ph + 6);
  }
  ctx.fillText("frame", m.l + pw / 2, m.t + ph + 19);
  // colour bar
  const bx = m.l + pw + 14, bw = 10;
  for (let y = 0; y < ph; y++) {
    const [r, g, b] = viridis(1 - y / ph);
    ctx.fillStyle = `rgb(${r | 0},${g | 0},${b | 0})`;
    ctx.fillRect(bx, m.t + y, bw, 1);
  }
  ctx.fillStyle = text;
  ctx.textAlign = "left";
  ctx.textBaseline = "top";
  ctx.fillText(normalize ? "max" : ghi.toFixed(0), bx + bw + 4, m.t);
  ctx.textBaseline = "bottom";
  ctx.fillText(normalize ? "min" : glo.toFixed(0), bx + bw + 4, m.t + ph);
}

/** Confusion matrix (rows: true speaker, columns: predicted), shaded by row share. */
export function drawConfusion(canvas, labels, matrix) {
  const n = labels.length;
  const cell = Math.max(28, Math.min(64, Math.floor(320 / Math.max(1, n))));
  const m = { l: 64, t: 34 };
  const size = m.t + n * cell + 8;
  const { ctx, w } = setupCanvas(canvas, size);
  ctx.clearRect(0, 0, w, size);
  const text = css("--text", "#1d2433");
  ctx.font = "12px system-ui, sans-serif";
  for (let i = 0; i < n; i++) {
    const total = matrix[i].reduce((a, b) => a + b, 0) || 1;
    for (let j = 0; j < n; j++) {
      const share = matrix[i][j] / total;
      const [r, g, b] = viridis(share);
      ctx.fillStyle = `rgb(${r | 0},${g | 0},${b | 0})`;
      ctx.fillRect(m.l + j * cell, m.t + i * cell, cell - 2, cell - 2);
      ctx.fillStyle = share > 0.6 ? "#1d2433" : "#ffffff";
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText(String(matrix[i][j]), m.l + j * cell + cell / 2 - 1, m.t + i * cell + cell / 2 - 1);
    }
  }
  ctx.fillStyle = text;
  for (let i = 0; i < n; i++) {
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    ctx.fillText(labels[i], m.l - 8, m.t + i * cell + cell / 2);
    ctx.textAlign = "center";
    ctx.textBaseline = "bottom";
    ctx.fillText(labels[i], m.l + i * cell + cell / 2, m.t - 6);
  }
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = css("--text-muted", "#5b6474");
  ctx.textAlign = "left";
  ctx.textBaseline = "top";
  ctx.fillText("predicted →", m.l + n * cell + 8, m.t - 20);
  ctx.fillText("true ↓", 4, 4);
}

/**
 * Line chart of named series [[x, y], ...] with uPlot; `right` names the series drawn on
 * a second y axis. Re-creates the plot when the data change; resizes with its container.
 */
export function LineChart({ series, right = [], height = 240, title, xLabel = "iteration" }) {
  const ref = useRef(null);
  const plot = useRef(null);
  const key = JSON.stringify(series);
  useEffect(() => {
    const el = ref.current;
    if (!el) return undefined;
    const names = Object.keys(series).filter((k) => series[k] && series[k].length);
    const xs = [...new Set(names.flatMap((k) => series[k].map((p) => p[0])))].sort((a, b) => a - b);
    const data = [xs, ...names.map((k) => {
      const m = new Map(series[k].map((p) => [p[0], p[1]]));
      return xs.map((x) => (m.has(x) ? m.get(x) : null));
    })];
    const colors = ["#2f6fde", "#e07a1f", "#2a9d8f", "#b5179e", "#6c757d"];
    const hasRight = names.some((n) => right.includes(n));
    const axisStroke = css("--text-muted", "#5b6474");
    const grid = { stroke: css("--grid", "#eceff3"), width: 1 };
    const opts = {
      width: Math.max(240, el.clientWidth),
      height,
      title,
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: false } },
      axes: [
        { label: xLabel, stroke: axisStroke, grid },
        { stroke: axisStroke, grid, size: 56 },
        ...(hasRight ? [{ scale: "right", side: 1, stroke: axisStroke, grid: { show: false }, size: 56 }] : []),
      ],
      series: [
        { label: xLabel },
        ...names.map((n, i) => ({
          label: n.replace(/_/g, " "),
          stroke: colors[i % colors.length],
          width: 2,
          spanGaps: true,
          scale: right.includes(n) ? "right" : "y",
          points: { show: right.includes(n) || xs.length < 30, size: 6 },
        })),
      ],
    };
    if (hasRight) {
      const acc = names.some((n) => right.includes(n) && n.includes("accuracy"));
      opts.scales.right = acc ? { auto: false, range: [0, 1] } : { auto: true };
    }
    plot.current = new uPlot(opts, data, el);
    const ro = new ResizeObserver(() => {
      if (plot.current && el.clientWidth) plot.current.setSize({ width: el.clientWidth, height });
    });
    ro.observe(el);
    return () => {
      ro.disconnect();
      plot.current.destroy();
      plot.current = null;
    };
  }, [key, height]);
  return html`<div class="chart" ref=${ref}></div>`;
}

/**
 * A <canvas> drawn by `draw(canvas)` in the commit that mounts it (a layout effect, so no
 * blank frame is ever painted) and again on resize. `data-drawn` counts the drawings.
 */
export function Canvas({ draw, deps = [], label, className = "" }) {
  const ref = useRef(null);
  useLayoutEffect(() => {
    const c = ref.current;
    if (!c) return undefined;
    const paint = () => { draw(c); c.dataset.drawn = String(Number(c.dataset.drawn || 0) + 1); };
    paint();
    let w = c.clientWidth;
    const ro = new ResizeObserver(() => {
      if (c.clientWidth && c.clientWidth !== w) { w = c.clientWidth; paint(); }
    });
    ro.observe(c);
    return () => ro.disconnect();
  }, deps);
  return html`<canvas ref=${ref} class=${`plot-canvas ${className}`} role="img" aria-label=${label}></canvas>`;
}
