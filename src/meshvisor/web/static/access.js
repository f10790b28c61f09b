// What the caller's role may not do, as `GET /v1/whoami` lists it (`refused`: method, route template, the role
// it needs): every element marked `data-write="METHOD /v1/path"` that the role may not call is disabled, with
// the reason as its title, whenever it appears on the page.

import { main } from "./ui.js";

let caller = null;

// A route template (`/v1/instances/{name}/actions`) as a pattern for the concrete paths it stands for.
function pattern(template) {
  const escaped = template.replace(/[.*+?^$()|[\]\\]/g, "\\$&").replace(/\{[^}]+\}/g, "[^/?]+");
  return new RegExp(`^${escaped}(\\?.*)?$`);
}

// Why the caller may not make the write `method path`, or null when it may.
export function refusal(method, path) {
  if (!caller) return null;
  const found = caller.refused.find((r) => r.method === method && r.pattern.test(path));
  return found ? `needs the ${found.needs} role; your token ${caller.name} is ${caller.role}` : null;
}

function guard(root) {
  const marked = root.matches && root.matches("[data-write]") ? [root] : [];
  for (const element of [...marked, ...root.querySelectorAll("[data-write]")]) {
    const [method, path] = element.dataset.write.split(" ");
    const reason = refusal(method, path);
    if (reason === null) continue; // what a page disabled for its own reasons stays so
    element.disabled = true;
    element.title = reason;
  }
}

// The caller from `/v1/whoami`: what is on the page now is guarded again, and so is everything added later.
export function setCaller(me) {
  caller = me && { ...me, refused: me.refused.map((r) => ({ ...r, pattern: pattern(r.path) })) };
  guard(main);
}

new MutationObserver((changes) => {
  for (const change of changes) {
    for (const node of change.addedNodes) if (node instanceof Element) guard(node);
  }
}).observe(main, { childList: true, subtree: true });
