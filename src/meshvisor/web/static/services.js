// The mesh page: the services and who calls whom (from `/metrics`), each service's policy, its ingress port, the
// ingress gateway's routes and certificate, and the mesh's certificate authority with its rotation.

import { ApiError, api, apiText } from "./api.js";
import { h, badge, table, fmtTime } from "./dom.js";
import { rules } from "./schema.js";
import { edgesFrom, rates, topology } from "./mesh.js";
import { deleteButton, jsonEditor, page, simpleForm, view } from "./ui.js";

let lastReading = null; // {edges, at}: the previous /metrics reading, for rates

const policyBox = h("section", { hidden: true, "aria-label": "Policy" });

// The policy of one service, saved whole with PUT .../policy (the API lists every problem it finds).
function editPolicy(service) {
  jsonEditor(policyBox, `Policy of ${service.name}`,
    "timeout_ms, retries, circuit_breaker, outlier, health_check, splits, fault, rate_limit, allow",
    service.policy || {}, "policy", (policy) => api("PUT", `/v1/services/${service.name}/policy`, policy));
}

// Create a service, or set the ingress port of one there (its policy kept: PUT replaces both, guarded by If-Match).
// Returns the form and a way to offer the services there by name.
function ingressForm() {
  const name = h("input", { required: true, ...rules("ServiceCreate", "name"), list: "service-names", autocomplete: "off" });
  const port = h("input", { type: "number", ...rules("ServiceCreate", "ingress_port"), placeholder: "none", "aria-describedby": "ingress-hint" });
  const names = h("datalist", { id: "service-names" });
  const error = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "create", "aria-label": "Service and ingress port" },
    h("h2", {}, "Service and ingress port"),
    h("p", { class: "hint wide", id: "ingress-hint" },
      "Makes the service if it is new. An ingress port (1024–65535) exposes it on 127.0.0.1:<port> of every host "
      + "through the ingress gateway, with the service's policy; empty takes the port away."),
    h("label", {}, h("span", {}, "Service"), name), h("label", {}, h("span", {}, "Ingress port"), port), names,
    h("button", { type: "submit", "data-write": "PUT /v1/services/{name}" }, "Save"), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const ingress = port.value.trim() === "" ? null : Number(port.value);
    const wanted = name.value.trim();
    try {
      let found = null;
      try {
        found = await api("GET", `/v1/services/${wanted}`);
      } catch (err) {
        if (!(err instanceof ApiError && err.status === 404)) throw err;
      }
      if (found === null) await api("POST", "/v1/services", { name: wanted, ingress_port: ingress });
      else {
        await api("PUT", `/v1/services/${wanted}`, { policy: found.policy || {}, ingress_port: ingress },
          { "If-Match": `"${found.etag}"` });
      }
      form.reset();
    } catch (err) {
      error.textContent = err.message || String(err);
    }
    if (view.refresh) await view.refresh();
  });
  return [form, (services) => names.replaceChildren(...services.map((s) => h("option", { value: s.name })))];
}

// -- the ingress gateway's routes -------------------------------------------------------------------------------
function routeForm() {
  const name = h("input", { required: true, ...rules("GatewayRouteCreate", "name") });
  const service = h("input", { required: true, ...rules("GatewayRouteCreate", "service"), list: "service-names", autocomplete: "off" });
  const host = h("input", { placeholder: "any host name" });
  const prefix = h("input", { placeholder: "/" });
  const rewrite = h("input", { placeholder: "as asked" });
  const token = h("input", { type: "checkbox" });
  const shown = h("p", { class: "wide", id: "route-token", role: "status" });
  const form = simpleForm("Route through the gateway", [
    ["Route name", name], ["To service", service], ["Host name", host], ["Path prefix", prefix],
    ["Rewrite prefix to", rewrite], ["Require a bearer token", token],
  ], async () => {
    const body = { name: name.value.trim(), service: service.value.trim(), token: token.checked };
    if (host.value.trim()) body.host = host.value.trim();
    if (prefix.value.trim()) body.path_prefix = prefix.value.trim();
    if (rewrite.value.trim()) body.rewrite = rewrite.value.trim();
    shown.textContent = "";
    const made = await api("POST", "/v1/gateway/routes", body);
    if (made.token) shown.textContent = `Route ${made.name} takes callers with "Authorization: Bearer ${made.token}" (shown this once).`;
    return made;
  }, "Add route", "POST /v1/gateway/routes");
  form.append(shown);
  return form;
}

function routesTable(routes, cert) {
  const serving = cert.source === "uploaded"
    ? `HTTPS with the uploaded certificate for ${(cert.names || []).join(", ")} (until ${fmtTime(cert.not_after)})`
    : "HTTPS with certificates of the mesh CA for each route's host name";
  return [
    h("h2", {}, "Gateway routes"),
    h("p", { class: "muted", id: "gateway-certificate" }, serving),
    routes.length
      ? table(["Route", "Host name", "Path prefix", "Service", "Rewrite", "Token", ""], routes.map((r) => [
        r.name, r.host || "any", r.path_prefix, r.service, r.rewrite || "", r.token_required ? "required" : "",
        deleteButton(`route ${r.name}`, `/v1/gateway/routes/${r.name}`),
      ]), { id: "routes" })
      : h("p", { class: "muted" }, "No routes: the gateway answers 404."),
  ];
}

// -- the certificate authority ---------------------------------------------------------------------------------
const caInfo = h("div", { id: "ca" });
const caStatus = h("p", { class: "error progress", role: "status" });
const caError = h("p", { class: "error", role: "alert" });
let following = false; // a rotation is being followed (read every second until it ends)

function showCa(ca) {
  const parts = [
    h("dl", { class: "facts" },
      h("dt", {}, "Trust domain"), h("dd", {}, ca.trust_domain),
      h("dt", {}, "Rotating"), h("dd", {}, ca.rotating ? "yes" : "no"),
      ...(ca.rotating ? [h("dt", {}, "Waiting for"), h("dd", { id: "ca-waiting" },
        (ca.waiting_for || []).length ? ca.waiting_for.join(", ") : "no sidecar (finishing)")] : [])),
    table(["Root", "Subject", "Valid until", "Role"], ca.roots.map((r) => [
      r.serial.slice(0, 16), r.subject, fmtTime(r.not_after), badge(r.role),
    ]), { id: "ca-roots" }),
  ];
  caInfo.replaceChildren(...parts);
  retireButton.hidden = ca.roots.length < 2;
  rotateButton.disabled = ca.rotating;
}

async function readCa() {
  const ca = await api("GET", "/v1/mesh/ca");
  showCa(ca);
  return ca;
}

// Follow a rotation until every sidecar trusts the new root and it signs.
async function followRotation() {
  if (following) return;
  following = true;
  try {
    for (;;) {
      if (location.hash !== "#/services") return;
      const ca = await readCa();
      if (!ca.rotating) {
        caStatus.textContent = "";
        return;
      }
      const waiting = ca.waiting_for || [];
      caStatus.textContent = waiting.length
        ? `rotating: waiting for ${waiting.length} sidecar(s) to trust the new root: ${waiting.join(", ")}`
        : "rotating: the new root signs next…";
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  } catch (err) {
    caStatus.textContent = "";
    caError.textContent = err.message || String(err);
  } finally {
    following = false;
  }
}

async function caAction(action) {
  caError.textContent = "";
  try {
    showCa(await api("POST", "/v1/mesh/ca/actions", { action }));
  } catch (err) {
    caError.textContent = err.message || String(err);
    return;
  }
  if (action === "rotate") await followRotation();
}

const rotateButton = h("button", { type: "button", "data-write": "POST /v1/mesh/ca/actions", onclick: () => {
  if (confirm("Rotate the mesh CA? Sidecars trust a new root first, then get certificates from it.")) caAction("rotate");
} }, "Rotate CA");
const retireButton = h("button", { type: "button", class: "danger", hidden: true, "data-write": "POST /v1/mesh/ca/actions", onclick: () => {
  if (confirm("Retire the old roots? Sidecars stop trusting them.")) caAction("retire");
} }, "Retire old roots");
const caBox = h("section", { "aria-label": "Certificate authority" }, h("h2", {}, "Certificate authority"), caInfo,
  h("p", { class: "actions" }, rotateButton, retireButton), caStatus, caError);

export async function servicesPage() {
  const [form, offer] = ingressForm();
  const routes = routeForm();
  caError.textContent = "";
  await page("Mesh", async () => {
    const [found, text, ca, routed, cert] = await Promise.all([
      api("GET", "/v1/services?limit=1000"), apiText("/metrics"), api("GET", "/v1/mesh/ca"),
      api("GET", "/v1/gateway/routes"), api("GET", "/v1/gateway/certificate"),
    ]);
    showCa(ca);
    if (ca.rotating) followRotation();
    offer(found.items);
    const edges = edgesFrom(text);
    const now = Date.now();
    const perSecond = rates(edges, lastReading && lastReading.edges, lastReading ? (now - lastReading.at) / 1000 : 0);
    lastReading = { edges, at: now };
    const names = [...new Set([
      ...found.items.map((s) => s.name),
      ...Object.values(edges).flatMap((e) => [e.source, e.destination]),
    ])].sort();
    const pairs = Object.entries(edges).sort();
    return [
      names.length ? topology(names, edges, perSecond) : h("p", { class: "muted" }, "No services."),
      h("h2", {}, "Calls"),
      pairs.length
        ? table(["Caller", "Service", "Requests", "Rate", "5xx"], pairs.map(([key, e]) => [
          e.source, e.destination, String(e.total), perSecond[key] === null ? "…" : `${perSecond[key].toFixed(1)}/s`,
          e.total ? `${Math.round((100 * e.errors) / e.total)}%` : "0%",
        ]), { id: "calls" })
        : h("p", { class: "muted" }, "No calls seen yet."),
      h("h2", {}, "Services"),
      found.items.length
        ? table(["Service", "Address", "Members", "Callers", "Ingress", "Policy", "Last NACK", ""], found.items.map((s) => [
          s.protocol === "tcp" ? `${s.name} (tcp)` : s.name, s.address || "",
          (s.members || []).map((m) => `${m.instance} (${m.state})`).join(", "), (s.callers || []).join(", "),
          s.ingress_port ? `127.0.0.1:${s.ingress_port}` : "",
          h("button", { type: "button", "data-write": `PUT /v1/services/${s.name}/policy`, onclick: () => editPolicy(s) }, Object.keys(s.policy || {}).join(", ") || "default"),
          s.last_nack ? s.last_nack.message || "rejected" : "",
          deleteButton(`service ${s.name}`, `/v1/services/${s.name}`),
        ]), { id: "services" })
        : h("p", { class: "muted" }, "No services."),
      ...routesTable(routed.items, cert),
    ];
  }, policyBox, form, routes, caBox);
  const tick = () => {
    if (location.hash !== "#/services" || !view.refresh) return;
    view.refresh().catch(() => {});
    setTimeout(tick, 5000);
  };
  setTimeout(tick, 5000);
}
