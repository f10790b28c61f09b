// What every page shares: the main element, the current page's way of reading its data again (`view.refresh`,
// called on every event), a page frame, and forms and buttons whose work (and the API's refusal) shows beside them.

import { api, waitOperation } from "./api.js";
import { h } from "./dom.js";

export const main = document.getElementById("main");
// One read at a time: a call while a read runs queues one more after it (calls meanwhile join that one), so an
// older read that answers late never overwrites what a newer one showed.
function oneAtATime(load) {
  let running = null;
  let queued = null;
  const refresh = () => {
    if (!running) {
      running = load().finally(() => { running = null; });
      return running;
    }
    if (!queued) queued = running.catch(() => {}).then(() => { queued = null; return refresh(); });
    return queued;
  };
  return refresh;
}

let current = null;
export const view = {
  get refresh() { return current; },
  set refresh(load) { current = load ? oneAtATime(load) : null; },
};
export const FINAL = new Set(["succeeded", "failed", "cancelled"]);

// A page: a title and a body that `load` fills, read again by every event; `fixed` (forms) stays as it is.
export async function page(title, load, ...fixed) {
  const body = h("div", { class: "page-body" });
  main.replaceChildren(h("h1", {}, title), body, ...fixed);
  view.refresh = async () => {
    const content = await load();
    body.replaceChildren(...[].concat(content));
  };
  await view.refresh();
}

// Start an operation, show its progress where it was asked for, and its error if it fails.
export async function run(error, request, after) {
  error.textContent = "";
  error.classList.remove("progress");
  try {
    const accepted = await request();
    const op = accepted && accepted.operation;
    if (op && !FINAL.has(op.status)) {
      error.classList.add("progress");
      const done = await waitOperation(op.id, (o) => { error.textContent = `${o.action}: ${o.status}…`; });
      error.classList.remove("progress");
      error.textContent = done.status === "succeeded" ? "" : `${done.action} ${done.status}: ${done.error || ""}`;
    }
  } catch (err) {
    error.classList.remove("progress");
    error.textContent = err.message || String(err);
  }
  if (after) await after();
}

// A form whose fields are `[label, input]` pairs; `submit()` starts the work, shown like any action.
// `write` ("POST /v1/networks") is the call it makes: a role that may not make it sees the button disabled.
export function simpleForm(title, fields, submit, button = "Create", write = undefined) {
  const error = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "create", "aria-label": title }, h("h2", {}, title),
    ...fields.map(([label, input]) => h("label", {}, h("span", {}, label), input)),
    h("button", { type: "submit", "data-write": write }, button), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    await run(error, () => submit(), view.refresh);
    if (!error.textContent) form.reset();
  });
  return form;
}

// A button that starts work after a confirmation (when `question` is given); its progress and refusal beside it.
export function actionButton(label, question, request, ariaLabel = label, write = undefined) {
  const error = h("span", { class: "error", role: "alert" });
  return h("span", { class: "actions" }, h("button", {
    type: "button", "aria-label": ariaLabel, "data-write": write, onclick: async () => {
      if (question && !confirm(question)) return;
      await run(error, request, view.refresh);
    },
  }, label), error);
}

export function deleteButton(what, path, label = "delete") {
  const error = h("span", { class: "error", role: "alert" });
  return h("span", { class: "actions" }, h("button", {
    type: "button", class: "danger", "data-write": `DELETE ${path}`, onclick: async () => {
      if (!confirm(`Delete ${what}?`)) return;
      await run(error, () => api("DELETE", path), view.refresh);
    },
  }, label), error);
}

// Edit `value` as JSON in `box`; `save(parsed)` sends it (the API's refusal is shown under the text).
export function jsonEditor(box, title, hint, value, what, save) {
  const text = h("textarea", { rows: 10, "aria-label": title, spellcheck: "false" });
  text.value = JSON.stringify(value, null, 2);
  const error = h("p", { class: "error", role: "alert" });
  const saveButton = h("button", { type: "button", class: "primary", onclick: async () => {
    let parsed;
    try {
      parsed = JSON.parse(text.value);
    } catch (err) {
      error.textContent = `not JSON: ${err.message}`;
      return;
    }
    await run(error, () => save(parsed), view.refresh);
    if (!error.textContent) box.hidden = true;
  } }, `Save ${what}`);
  const cancel = h("button", { type: "button", onclick: () => { box.hidden = true; } }, "Cancel");
  box.replaceChildren(h("h2", {}, title), h("p", { class: "muted" }, hint), text, h("p", { class: "actions" }, saveButton, cancel), error);
  box.hidden = false;
  text.focus();
}
