// The mesh page's pieces: request counts per service pair read from the Prometheus text of `/metrics`, rates from
// two readings, and the topology drawn as SVG (services on a circle, one arrow per calling pair).

import { h } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg"; // the SVG namespace's name (nothing is fetched from it)
const LINE = /^meshvisor_mesh_requests_total\{([^}]*)\}\s+([0-9.eE+-]+)$/;

// {"web -> api": {source, destination, total, errors}} from the metrics text.
export function edgesFrom(text) {
  const edges = {};
  for (const line of text.split("\n")) {
    const match = line.match(LINE);
    if (!match) continue;
    const labels = Object.fromEntries([...match[1].matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    const key = `${labels.source} -> ${labels.destination}`;
    const edge = (edges[key] ||= { source: labels.source, destination: labels.destination, total: 0, errors: 0 });
    const value = Number(match[2]);
    edge.total += value;
    if (labels.code === "5xx") edge.errors += value;
  }
  return edges;
}

// Requests per second on each edge since the previous reading (null on the first).
export function rates(now, before, seconds) {
  const out = {};
  for (const [key, edge] of Object.entries(now)) {
    const was = before ? before[key] : undefined;
    out[key] = was && seconds > 0 ? Math.max(0, (edge.total - was.total) / seconds) : null;
  }
  return out;
}

function el(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

export function topology(names, edges, perSecond) {
  const size = 520;
  const radius = names.length > 1 ? 190 : 0;
  const at = {};
  names.forEach((name, i) => {
    const angle = (2 * Math.PI * i) / Math.max(1, names.length) - Math.PI / 2;
    at[name] = [size / 2 + radius * Math.cos(angle), size / 2 + radius * Math.sin(angle)];
  });
  const svg = el("svg", { viewBox: `0 0 ${size} ${size}`, role: "img", "aria-label": "Service topology", class: "topology" });
  const defs = el("defs", {});
  const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 26, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
  marker.append(el("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#5b6570" }));
  defs.append(marker);
  svg.append(defs);
  for (const [key, edge] of Object.entries(edges)) {
    const from = at[edge.source];
    const to = at[edge.destination];
    if (!from || !to) continue;
    const bad = edge.total > 0 && edge.errors / edge.total > 0.05;
    svg.append(el("line", {
      x1: from[0], y1: from[1], x2: to[0], y2: to[1], "marker-end": "url(#arrow)",
      stroke: bad ? "#c62828" : "#5b6570", "stroke-width": 2, "data-edge": key,
    }));
    const rate = perSecond[key];
    const label = `${edge.total} req${rate === null || rate === undefined ? "" : `, ${rate.toFixed(1)}/s`}`
      + (edge.errors ? `, ${Math.round((100 * edge.errors) / edge.total)}% 5xx` : "");
    svg.append(el("text", { x: (from[0] + to[0]) / 2, y: (from[1] + to[1]) / 2 - 6, "text-anchor": "middle", class: "edge-label" }, label));
  }
  for (const name of names) {
    const [x, y] = at[name];
    svg.append(el("circle", { cx: x, cy: y, r: 22, class: "node", "data-service": name }));
    svg.append(el("text", { x, y: y + 38, "text-anchor": "middle", class: "node-label" }, name));
  }
  return h("div", { class: "topology-wrap" }, svg);
}
