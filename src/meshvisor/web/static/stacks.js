// The stacks pages: each stack with its latest plan as the CLI prints it, a stack file pasted or uploaded and
// planned from the page, and a plan applied after asking, each resource's step shown as it ends.

import { api, waitOperation } from "./api.js";
import { h, badge, table, fmtTime, field } from "./dom.js";
import { NAME } from "./schema.js";
import { main, page, run, view } from "./ui.js";

const FORMATS = { yaml: "yaml", yml: "yaml", json: "json", hcl: "hcl" };

// `a=1, b=two` → {a: "1", b: "two"} (as `--var` gives them); null when a part is not `name=value`.
function parseVariables(text) {
  const out = {};
  for (const part of text.split(/[,\n]/).map((p) => p.trim()).filter(Boolean)) {
    const at = part.indexOf("=");
    if (at < 1) return null;
    out[part.slice(0, at).trim()] = part.slice(at + 1).trim();
  }
  return out;
}

// Plan a stack file (pasted, or read from an uploaded file) against stack `fixed` (or the name typed in); the
// saved plan then shows on the stack's page, where it is applied. The API lists every error in the file at once.
function planForm(fixed) {
  const name = h("input", { required: true, ...NAME, value: fixed || "", readonly: Boolean(fixed) });
  const upload = h("input", { type: "file", accept: ".yaml,.yml,.json,.hcl,.tf" });
  const spec = h("textarea", { rows: 12, spellcheck: "false", placeholder: "networks:\n  front: {cidr: 10.210.1.0/24}" });
  const format = h("select", {}, ...["yaml", "json", "hcl"].map((f) => h("option", { value: f }, f)));
  const variables = h("input", { placeholder: "name=value, name=value" });
  const destroy = h("input", { type: "checkbox" });
  const error = h("p", { class: "error lines", role: "alert" });
  upload.addEventListener("change", async () => {
    const file = upload.files[0];
    if (!file) return;
    spec.value = await file.text();
    const ext = file.name.split(".").pop().toLowerCase();
    if (FORMATS[ext]) format.value = FORMATS[ext];
  });
  const form = h("form", { class: "create", "aria-label": "Plan a stack file" },
    h("h2", {}, fixed ? "Plan again" : "Plan a stack file"),
    field("Stack", name), field("Upload a file", upload), field("Format", format),
    field("Variables", variables), field("Stack file", spec, true),
    fixed ? h("label", { class: "check" }, destroy, h("span", {}, "Destroy everything it owns")) : "",
    h("button", { type: "submit", class: "primary", "data-write": "POST /v1/stacks/{name}/plan" }, "Plan"), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const vars = parseVariables(variables.value);
    if (vars === null) {
      error.textContent = "variables are name=value pairs, separated by commas";
      return;
    }
    const body = destroy.checked ? { destroy: true } : { spec: spec.value, format: format.value, variables: vars };
    const stackName = name.value.trim();
    try {
      await api("POST", `/v1/stacks/${stackName}/plan`, body);
    } catch (err) {
      error.textContent = err.message || String(err);
      return;
    }
    if (fixed) {
      destroy.checked = false;
      if (view.refresh) await view.refresh();
    } else location.hash = `#/stacks/${stackName}`;
  });
  return form;
}

export async function stacksPage() {
  await page("Stacks", async () => {
    const found = await api("GET", "/v1/stacks?limit=1000");
    return found.items.length
      ? table(["Stack", "Resources", "Serial", "Lock", "Updated"], found.items.map((s) => [
        h("a", { href: `#/stacks/${s.name}` }, s.name), String(s.resources.length), String(s.serial),
        s.lock ? `${s.lock.owner} until ${fmtTime(s.lock.expires_at)}` : "", fmtTime(s.updated_at),
      ]), { id: "stacks" })
      : h("p", { class: "muted" }, "No stacks: plan a stack file below (or `meshvisor plan -f FILE`).");
  }, planForm());
}

const SIGNS = { "+": "add", "~": "change", "~!": "change", "-/+": "remove", "+/-": "remove", "-": "remove" };

// The plan as the CLI prints it, each line marked by its change sign.
function planText(text) {
  return h("pre", { class: "plan", "aria-label": "Plan" }, ...text.split("\n").map((line) => {
    const sign = line.trim().split(" ", 1)[0];
    return h("span", { class: SIGNS[sign] ? `line ${SIGNS[sign]}` : "line" }, `${line}\n`);
  }));
}

export async function stack(name) {
  const progress = h("ol", { class: "progress-list", "aria-label": "Apply progress" });
  const error = h("p", { class: "error", role: "alert" });
  const body = h("div", {});
  main.replaceChildren(h("p", {}, h("a", { href: "#/stacks" }, "← Stacks")), h("h1", {}, `Stack ${name}`), body, error, progress,
    planForm(name));
  view.refresh = async () => {
    const [info, plans, history] = await Promise.all([
      api("GET", `/v1/stacks/${name}`),
      api("GET", `/v1/stacks/${name}/plans?limit=1`),
      api("GET", `/v1/operations?resource_type=stack&resource_name=${name}&limit=10`),
    ]);
    const plan = plans.items[0];
    const parts = [
      h("dl", { class: "facts" },
        h("dt", {}, "Resources"), h("dd", {}, info.resources.join(", ") || "none"),
        h("dt", {}, "Serial"), h("dd", {}, String(info.serial)),
        h("dt", {}, "Lock"), h("dd", {}, info.lock ? `${info.lock.owner} until ${fmtTime(info.lock.expires_at)}` : "free")),
      h("h2", {}, "Latest plan"),
    ];
    if (!plan) parts.push(h("p", { class: "muted" }, "No plan yet: plan its file below."));
    else {
      parts.push(h("p", { class: "muted" }, `${fmtTime(plan.created_at)}${plan.current ? "" : " (the stack changed since: plan again)"}`));
      parts.push(planText(plan.text));
      if (plan.current && plan.exit_code === 2 && !info.lock) {
        parts.push(h("button", { type: "button", class: "primary", "data-write": `POST /v1/stacks/${name}/apply`,
          onclick: () => applyPlan(name, plan, error, progress) }, "Apply"));
      }
    }
    if (!info.resources.length) {
      // Nothing left in it: the stack itself can go (the API refuses while it owns anything).
      parts.push(h("button", { type: "button", class: "danger", "data-write": `DELETE /v1/stacks/${name}`,
        onclick: () => deleteStack(name, error) }, "Delete stack"));
    }
    parts.push(h("h2", {}, "Applies"));
    parts.push(history.items.length
      ? table(["When", "Status", "Steps", "Error"], history.items.map((o) => [
        fmtTime(o.created_at), badge(o.status), String((o.params.progress || []).filter((p) => p.status === "done").length),
        o.error || "",
      ]), { id: "applies" })
      : h("p", { class: "muted" }, "None yet."));
    body.replaceChildren(...parts);
  };
  await view.refresh();
}

async function deleteStack(name, error) {
  if (!confirm(`Delete stack ${name}? It owns nothing now; its plans and history go with it.`)) return;
  error.textContent = "";
  try {
    await api("DELETE", `/v1/stacks/${name}`);
    location.hash = "#/stacks";
  } catch (err) {
    error.textContent = err.message || String(err);
  }
}

async function applyPlan(name, plan, error, progress) {
  if (!confirm(`Apply this plan to ${name}? ${plan.summary}`)) return;
  progress.replaceChildren();
  await run(error, async () => {
    const accepted = await api("POST", `/v1/stacks/${name}/apply`, { plan: plan.id });
    const op = await waitOperation(accepted.operation.id, (o) => {
      progress.replaceChildren(...(o.params.progress || []).filter((p) => p.status !== "started").map((p) =>
        h("li", { class: p.status }, `${p.address}: ${p.status}${p.error ? ` (${p.error})` : ""}`)));
    });
    if (op.status !== "succeeded") throw new Error(`apply ${op.status}: ${op.error || ""}`);
    return null;
  }, view.refresh);
}
