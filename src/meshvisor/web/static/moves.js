// An instance's host on its page: move it to another host (a container or a stopped VM cold, a running VM live;
// after a confirmation), and what its last move did, kept live by the event stream.

import { api } from "./api.js";
import { h, fmtTime } from "./dom.js";
import { run, view } from "./ui.js";

const PLACED = "";  // the scheduler picks the host

// The section and `show(instance)`, which fills it again from the instance and its operations.
export function moveSection(name) {
  const target = h("select", { "aria-label": "Host to move to" });
  const status = h("p", { class: "muted", "aria-live": "polite", id: "last-move" });
  const error = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "exec", "aria-label": "Move to another host" }, target,
    h("button", { type: "submit", "data-write": `POST /v1/instances/${name}/actions` }, "Migrate"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const where = target.value === PLACED ? "a host the scheduler picks" : `host ${target.value}`;
    if (!confirm(`Move ${name} to ${where}?`)) return;
    const body = target.value === PLACED ? { action: "migrate" } : { action: "migrate", host: target.value };
    await run(error, () => api("POST", `/v1/instances/${name}/actions`, body), view.refresh);
  });
  const show = async (instance) => {
    const [hosts, ops] = await Promise.all([
      api("GET", "/v1/hosts"),
      api("GET", `/v1/operations?resource_type=instance&resource_name=${encodeURIComponent(name)}&limit=50`),
    ]);
    const others = hosts.items.filter((x) => x.name !== instance.host && x.state === "online").map((x) => x.name);
    const chosen = target.value;
    target.replaceChildren(h("option", { value: PLACED }, "placed by the scheduler"),
      ...others.map((x) => h("option", { value: x }, x)));
    if ([PLACED, ...others].includes(chosen)) target.value = chosen;
    const last = ops.items.find((o) => o.action === "migrate");
    status.textContent = last ? describe(last) : "It has not moved.";
  };
  return [h("section", { "aria-label": "Host" }, h("h2", {}, "Host"), status, form, error), show];
}

// A move in words: under way (its part now), done (how long a live move paused the guest), or failed (why).
function describe(op) {
  const p = op.params || {};
  const how = p.live ? "live" : "cold";
  if (op.status === "succeeded") {
    const paused = p.live && p.downtime_ms != null ? `, the guest paused ${p.downtime_ms} ms` : "";
    return `Moved ${how} from ${p.source} to ${p.target}${paused} (${fmtTime(op.finished_at)}).`;
  }
  if (op.status === "failed") return `The move to ${p.target} failed: ${op.error || ""}`;
  return `Moving ${how} from ${p.source} to ${p.target}: ${p.phase || op.status}…`;
}
