// The dashboard: polls the controller's read-only JSON and redraws. No framework:
// a few views, each a function that fetches and renders.
"use strict";

const REFRESH_MS = 2000;
let selected = null; // "Kind/namespace/name" of the resource whose YAML is shown

function element(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

class LoginNeeded extends Error {}

async function fetchJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (response.status === 401) throw new LoginNeeded();
  if (!response.ok) throw new Error(`${path} answered ${response.status}`);
  return response.json();
}

async function renderConfig() {
  const data = await fetchJson("/dashboard/api/config");
  const body = document.querySelector("#resources tbody");
  body.replaceChildren();
  for (const resource of data.resources) {
    const key = `${resource.kind}/${resource.namespace}/${resource.name}`;
    const proxies = element("td");
    for (const proxy of resource.proxies) {
      const state = proxy.acked ? "acked" : "pending";
      proxies.append(element("span", { class: `proxy ${state}`, "data-proxy": proxy.id, "data-state": state }, proxy.id));
    }
    const row = element(
      "tr", { "data-resource": key },
      element("td", {}, resource.kind), element("td", {}, resource.namespace),
      element("td", {}, resource.name), element("td", {}, String(resource.revision)), proxies,
    );
    if (key === selected) {
      row.classList.add("selected");
      document.getElementById("yaml").textContent = resource.yaml;
    }
    row.addEventListener("click", () => {
      selected = key;
      document.getElementById("yaml").textContent = resource.yaml;
      for (const other of body.querySelectorAll("tr")) other.classList.toggle("selected", other === row);
    });
    body.append(row);
  }
  return `revision ${data.revision} · ${data.resources.length} resources`;
}

// --- the service graph (cytoscape lays it out; we only say what to draw) ---------------

let cy = null;

function percent(value) {
  return value === null || value === undefined ? "-" : `${(value * 100).toFixed(1)}%`;
}

function edgeLabel(edge) {
  return `${edge.rps.toFixed(1)} rps · ${percent(edge.successRate)} · p99 ${edge.p99 ?? "-"} ms`;
}

async function renderGraph() {
  const data = await fetchJson("/dashboard/api/graph?window=60");
  const elements = [
    ...data.nodes.map((node) => ({
      group: "nodes",
      data: { id: node.id, label: node.name, kind: node.kind, namespace: node.namespace },
    })),
    ...data.edges.map((edge) => ({
      group: "edges",
      data: {
        id: edge.id, source: edge.source, target: edge.target, label: edgeLabel(edge),
        rps: edge.rps, requests: edge.requests, successRate: edge.successRate ?? 1,
        p99: edge.p99, mtls: edge.mtls ?? 0,
      },
    })),
  ];
  if (cy === null) {
    cy = cytoscape({
      container: document.getElementById("cy"),
      style: [
        { selector: "node", style: { label: "data(label)", "font-size": 11, "text-valign": "bottom", "text-margin-y": 4 } },
        { selector: 'node[kind = "workload"]', style: { shape: "round-rectangle", "background-color": "#3f7d58" } },
        { selector: 'node[kind = "service"]', style: { shape: "triangle", "background-color": "#2d6cdf" } },
        { selector: "edge", style: {
          label: "data(label)", "font-size": 9, "curve-style": "bezier", "target-arrow-shape": "triangle",
          width: 2, "line-color": "#8a99a8", "target-arrow-color": "#8a99a8", "text-background-color": "#fff",
          "text-background-opacity": 0.8 } },
        { selector: "edge[successRate < 0.99]", style: { "line-color": "#b3261e", "target-arrow-color": "#b3261e" } },
        { selector: "edge[mtls < 1]", style: { "line-style": "dashed" } },
      ],
    });
  }
  const known = new Set(cy.elements().map((item) => item.id()));
  const wanted = new Set(elements.map((item) => item.data.id));
  cy.elements().filter((item) => !wanted.has(item.id())).remove();
  let added = false;
  for (const item of elements) {
    if (known.has(item.data.id)) cy.getElementById(item.data.id).data(item.data);
    else { cy.add(item); added = true; }
  }
  if (added) cy.layout({ name: "breadthfirst", directed: true, spacingFactor: 1.4 }).run();
  window.meshGraph = cy; // for tests and the curious: the graph as cytoscape holds it
  return `${data.nodes.length} nodes · ${data.edges.length} edges`;
}

// --- golden metrics per service, with charts of the last minutes ------------------------

const charts = new Map(); // service -> uPlot

async function renderServices() {
  const data = await fetchJson("/dashboard/api/services?window=60");
  const body = document.querySelector("#golden tbody");
  body.replaceChildren();
  for (const service of data.services) {
    const success = element("td", {}, percent(service.successRate));
    if (service.successRate !== null && service.successRate < 0.99) success.classList.add("bad");
    body.append(element(
      "tr", { "data-service": service.service },
      element("td", {}, service.service), element("td", { "data-metric": "rps" }, service.rps.toFixed(2)),
      success, element("td", {}, String(service.p50 ?? "-")), element("td", {}, String(service.p95 ?? "-")),
      element("td", {}, String(service.p99 ?? "-")), element("td", {}, percent(service.mtls)),
    ));
    await renderChart(service.service);
  }
  return `${data.services.length} services`;
}

async function renderChart(service) {
  const data = await fetchJson(`/dashboard/api/series?window=300&service=${encodeURIComponent(service)}`);
  const series = [
    data.points.map((point) => point.t),
    data.points.map((point) => point.rps),
    data.points.map((point) => point.p99),
  ];
  let chart = charts.get(service);
  if (chart === undefined) {
    const box = element("div", { class: "chart", "data-chart": service }, element("h3", {}, service));
    document.getElementById("charts").append(box);
    chart = new uPlot({
      width: 420, height: 180,
      series: [{}, { label: "req/s", stroke: "#2d6cdf" }, { label: "p99 ms", stroke: "#b3261e", scale: "ms" }],
      axes: [{}, { label: "req/s" }, { side: 1, scale: "ms", label: "ms" }],
    }, series, box);
    charts.set(service, chart);
  } else {
    chart.setData(series);
  }
}

// --- tap: a stream of NDJSON lines, one request each ------------------------------------

let tapping = null; // the AbortController of the running tap
let tapStatus = "not tapping";
let tapTarget = "";
let tapProxies = new Set(); // the proxies tapping now: they come and go with pods
const MAX_TAP_ROWS = 200;

async function startTap(form) {
  stopTap();
  const query = new URLSearchParams();
  for (const [name, value] of new FormData(form)) if (value) query.set(name, value);
  query.set("seconds", "600");
  tapping = new AbortController();
  document.getElementById("tap-stop").disabled = false;
  tapStatus = "tapping...";
  try {
    const response = await fetch(`/dashboard/api/tap?${query}`, { signal: tapping.signal });
    if (!response.ok) {
      const problem = await response.json().catch(() => ({}));
      if (response.status === 401) problem.message = "not logged in: run `myc dashboard`";
      tapStatus = `tap refused: ${problem.message || response.status}`;
      return;
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += value;
      const lines = buffered.split("\n");
      buffered = lines.pop();
      for (const line of lines) if (line.trim()) tapLine(JSON.parse(line));
    }
    tapStatus = "tap ended";
  } catch (error) {
    if (error.name !== "AbortError") tapStatus = `tap failed: ${error.message}`;
  } finally {
    document.getElementById("tap-stop").disabled = true;
  }
}

function stopTap() {
  if (tapping !== null) tapping.abort();
  tapping = null;
  tapStatus = "not tapping";
}

function tapLine(line) {
  if (line.type === "started") {
    tapTarget = line.target;
    tapProxies = new Set(line.proxies.map((proxy) => proxy.id));
  }
  if (line.type === "proxy_joined") tapProxies.add(line.proxy);
  if (line.type === "proxy_ended") tapProxies.delete(line.proxy);
  if (["started", "proxy_joined", "proxy_ended"].includes(line.type)) {
    tapStatus = `tapping ${tapTarget}: ${tapProxies.size} proxies`;
  }
  if (line.type !== "request") return;
  const body = document.querySelector("#tapped tbody");
  const time = new Date(line.ts * 1000).toLocaleTimeString();
  body.prepend(element(
    "tr", { "data-path": line.path, "data-status": String(line.status) },
    element("td", {}, time), element("td", {}, line.proxy), element("td", {}, line.method),
    element("td", {}, line.path), element("td", {}, String(line.status)),
    element("td", {}, String(line.latency_ms)), element("td", {}, line.source || ""),
    element("td", {}, line.destination || ""), element("td", {}, line.source_principal || ""),
  ));
  while (body.rows.length > MAX_TAP_ROWS) body.deleteRow(-1);
}

document.getElementById("tap-form").addEventListener("submit", (event) => {
  event.preventDefault();
  startTap(event.target);
});
document.getElementById("tap-stop").addEventListener("click", stopTap);

async function renderTap() {
  return tapStatus;
}

const VIEWS = { graph: renderGraph, services: renderServices, tap: renderTap, config: renderConfig };

function currentView() {
  const name = location.hash.replace("#", "");
  return name in VIEWS ? name : "graph";
}

async function refresh() {
  const view = currentView();
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== view;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.view === view);
  try {
    document.getElementById("status").textContent = await VIEWS[view]();
  } catch (error) {
    document.getElementById("status").textContent = error instanceof LoginNeeded
      ? "not logged in: run `myc dashboard` and open the link it prints"
      : `cannot reach the controller: ${error.message}`;
  }
}

window.addEventListener("hashchange", refresh);
refresh();
setInterval(refresh, REFRESH_MS);
