// Storage pools, shown on the volumes page: each pool with its driver, where it keeps its volumes, what its volumes
// take of its quota and the free space under it, a form that makes a pool (`dir`: a directory of its own; `libvirt`:
// an existing libvirt `dir` pool), delete after asking, and the pool select of the volume form. The API's refusal
// shows next to the button or form that asked, and stays there while the page follows the event stream.

import { api } from "./api.js";
import { h, table, field } from "./dom.js";
import { rules } from "./schema.js";
import { run, view } from "./ui.js";

const DEFAULT_POOL = "default";

function usage(p) {
  if (p.quota_mb === null || p.quota_mb === undefined) return `${p.allocated_mb} MiB, no quota`;
  const share = p.quota_mb ? Math.round((100 * p.allocated_mb) / p.quota_mb) : 0;
  return h("span", { class: "quota" },
    h("meter", { min: "0", max: String(p.quota_mb), value: String(Math.min(p.allocated_mb, p.quota_mb)),
      "aria-label": `${p.name}: ${p.allocated_mb} of ${p.quota_mb} MiB` }),
    `${p.allocated_mb} of ${p.quota_mb} MiB (${share}%)`);
}

function where(p) {
  if (p.driver === "libvirt") return `libvirt pool ${p.config.libvirt_pool}`;
  return p.config.path || "";
}

// The form that makes a pool; the libvirt pool's name is asked for only with the libvirt driver.
function createForm() {
  const name = h("input", { required: true, ...rules("StoragePoolCreate", "name") });
  const driver = h("select", {}, h("option", { value: "dir" }, "dir (a directory of its own)"),
    h("option", { value: "libvirt" }, "libvirt (an existing libvirt dir pool)"));
  const libvirtPool = h("input", { disabled: true, placeholder: "e.g. images", "aria-describedby": "pool-hint" });
  const quota = h("input", { type: "number", ...rules("StoragePoolCreate", "quota_mb", { step: 1 }), placeholder: "no quota", "aria-describedby": "pool-hint" });
  const error = h("p", { class: "error", role: "alert" });
  const sync = () => {
    libvirtPool.disabled = driver.value !== "libvirt";
    libvirtPool.required = !libvirtPool.disabled;
  };
  driver.addEventListener("change", sync);
  const form = h("form", { class: "create", "aria-label": "Create a storage pool" }, h("h2", {}, "Create a storage pool"),
    h("p", { class: "hint wide", id: "pool-hint" },
      "A dir pool keeps its volumes in a directory of its own in the data directory; a libvirt pool uses a running "
      + "libvirt dir pool by its name. The quota (MiB, optional) bounds the sizes of the pool's volumes together."),
    field("Pool name", name), field("Driver", driver), field("libvirt pool", libvirtPool), field("Quota (MiB)", quota),
    h("button", { type: "submit", "data-write": "POST /v1/storage-pools" }, "Create pool"), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { name: name.value.trim(), driver: driver.value };
    if (driver.value === "libvirt") body.libvirt_pool = libvirtPool.value.trim();
    if (quota.value) body.quota_mb = Number(quota.value);
    await run(error, () => api("POST", "/v1/storage-pools", body), view.refresh);
    if (!error.textContent) {
      form.reset();
      sync();
    }
  });
  return form;
}

// The section of the volumes page; `show(pools, volumes)` draws it again on every refresh, `select` is the volume
// form's pool field (it keeps its choice while that pool is there).
export function poolsSection() {
  const errors = new Map(); // pool name → the API's refusal of its delete
  const list = h("div", {});
  const select = h("select", {}, h("option", { value: DEFAULT_POOL }, DEFAULT_POOL));
  let drawn = "";

  const remove = async (name, host) => { // a name is unique on its host: say which host's pool
    if (!confirm(`Delete storage pool ${name}?`)) return;
    errors.delete(name);
    try {
      await api("DELETE", `/v1/storage-pools/${name}?host=${encodeURIComponent(host)}`);
    } catch (err) {
      errors.set(name, err.message || String(err));
    }
    if (view.refresh) await view.refresh().catch(() => {});
    const again = list.querySelector(`button[data-pool="${name}"]`);
    if (again) again.focus(); // refused: the keyboard stays on the button, next to its message
  };

  const rows = (pools, volumes) => pools.map((p) => {
    const held = volumes.filter((v) => v.pool === p.name && v.host === p.host).length;
    return [
      p.name, p.driver, h("span", { class: "where" }, where(p)), usage(p),
      p.free_mb === null || p.free_mb === undefined ? "—" : `${p.free_mb} MiB`, String(held),
      p.name === DEFAULT_POOL
        ? h("span", { class: "muted" }, "stays")
        : h("span", { class: "actions" },
          h("button", { type: "button", class: "danger", "data-pool": p.name, "data-write": `DELETE /v1/storage-pools/${p.name}`, "aria-label": `delete pool ${p.name}`,
            onclick: () => remove(p.name, p.host) }, "delete"),
          errors.has(p.name) ? h("span", { class: "error", role: "alert" }, errors.get(p.name)) : ""),
    ];
  });

  const show = (pools, volumes) => {
    for (const name of [...errors.keys()]) if (!pools.some((p) => p.name === name)) errors.delete(name);
    const chosen = select.value;
    const names = pools.map((p) => p.name);
    select.replaceChildren(...pools.map((p) => h("option", { value: p.name, selected: p.name === DEFAULT_POOL },
      p.quota_mb === null || p.quota_mb === undefined
        ? `${p.name} (${p.driver})`
        : `${p.name} (${p.driver}, ${Math.max(p.quota_mb - p.allocated_mb, 0)} of ${p.quota_mb} MiB left)`)));
    select.value = names.includes(chosen) ? chosen : names.includes(DEFAULT_POOL) ? DEFAULT_POOL : names[0] || "";
    // Drawn again only when something changed: the keyboard's place and an announced message stay as they are.
    const key = JSON.stringify([pools, volumes.map((v) => v.pool), [...errors]]);
    if (key === drawn) return;
    drawn = key;
    const focused = list.contains(document.activeElement) ? document.activeElement.getAttribute("data-pool") : null;
    list.replaceChildren(pools.length
      ? table(["Pool", "Driver", "Location", "Allocated", "Free on disk", "Volumes", ""], rows(pools, volumes), { id: "pools" })
      : h("p", { class: "muted" }, "No storage pools."));
    if (focused) {
      const again = list.querySelector(`button[data-pool="${focused}"]`);
      if (again) again.focus();
    }
  };

  const section = h("section", { class: "pools", "aria-labelledby": "pools-title" },
    h("h2", { id: "pools-title" }, "Storage pools"), list, createForm());
  return { section, select, show };
}
