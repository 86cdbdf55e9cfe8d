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

async function fetchJson(path) {
  const response = await fetch(path, { cache: "no-store" });
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

const VIEWS = { config: renderConfig };

function currentView() {
  const name = location.hash.replace("#", "");
  return name in VIEWS ? name : "config";
}

async function refresh() {
  const view = currentView();
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== view;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.view === view);
  try {
    document.getElementById("status").textContent = await VIEWS[view]();
  } catch (error) {
    document.getElementById("status").textContent = `cannot reach the controller: ${error.message}`;
  }
}

window.addEventListener("hashchange", refresh);
refresh();
setInterval(refresh, REFRESH_MS);
