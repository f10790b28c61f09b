// The volumes page: every volume with snapshot, revert (to the latest snapshot), manage and delete on its row,
// a create form, and a panel for the volume being managed: grow it (grow only), clone it, and its snapshots
// (revert to one, delete one); below them the storage pools (pools.js), whose select picks a new volume's pool.
// The API's refusal shows next to the form or button that asked.

import { api } from "./api.js";
import { h, badge, table, field } from "./dom.js";
import { rules } from "./schema.js";
import { poolsSection } from "./pools.js";
import { deleteButton, page, run, simpleForm, view } from "./ui.js";

const rowError = h("p", { class: "error", role: "alert" });

// Snapshot (named by the time) or revert to the latest snapshot.
async function volumeAction(volume, action, snapshot) {
  const name = snapshot || `s-${new Date().toISOString().slice(0, 19).replace(/[-:T]/g, "").toLowerCase()}`;
  if (action === "revert" && !confirm(`Revert ${volume} to ${name}? What was written since is lost.`)) return;
  await run(rowError, () => api("POST", `/v1/volumes/${volume}/actions`, { action, snapshot: name }), view.refresh);
}

// The panel of one volume; `show(volume)` follows it on every refresh (null: it is gone), the forms keep their text.
function managePanel() {
  let current = null;
  const title = h("h2", { id: "manage-title" });
  const facts = h("p", { class: "hint", id: "manage-facts" });

  const size = h("input", { type: "number", ...rules("VolumePatch", "size_mb", { step: 1 }), required: true });
  const growError = h("p", { class: "error", role: "alert" });
  const grow = h("form", { class: "inline", "aria-label": "Grow the volume", "aria-describedby": "manage-facts" },
    field("New size (MiB)", size),
    h("button", { type: "submit", "data-write": "PATCH /v1/volumes/{name}" }, "Grow"), growError);
  grow.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = current.name;
    await run(growError, () => api("PATCH", `/v1/volumes/${name}`, { size_mb: Number(size.value) }), view.refresh);
    if (!growError.textContent) size.value = "";
  });

  const cloneName = h("input", { required: true, ...rules("VolumeActionRequest", "name") });
  const cloneError = h("p", { class: "error", role: "alert" });
  const clone = h("form", { class: "inline", "aria-label": "Clone the volume" },
    field("Clone's name", cloneName),
    h("button", { type: "submit", "data-write": "POST /v1/volumes/{name}/actions" }, "Clone"), cloneError);
  clone.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = current.name;
    await run(cloneError, () => api("POST", `/v1/volumes/${name}/actions`, { action: "clone", name: cloneName.value.trim() }),
      view.refresh);
    if (!cloneError.textContent) cloneName.value = "";
  });

  const snapshots = h("div", {});
  const snapError = h("p", { class: "error", role: "alert" });
  const close = h("button", { type: "button", onclick: () => { current = null; section.hidden = true; } }, "Close");
  const section = h("section", { class: "manage", "aria-labelledby": "manage-title", hidden: true },
    title, facts, grow, clone, h("h3", {}, "Snapshots"), snapshots, snapError, h("p", {}, close));

  const snapshotRows = (v) => v.snapshots.map((snap) => [snap, h("span", { class: "actions" },
    h("button", { type: "button", "data-write": `POST /v1/volumes/${v.name}/actions`, onclick: async () => {
      if (!confirm(`Revert ${v.name} to ${snap}? What was written since is lost.`)) return;
      await run(snapError, () => api("POST", `/v1/volumes/${v.name}/actions`, { action: "revert", snapshot: snap }), view.refresh);
    } }, "revert"),
    h("button", { type: "button", class: "danger", "data-write": `POST /v1/volumes/${v.name}/actions`, onclick: async () => {
      if (!confirm(`Delete snapshot ${snap} of ${v.name}?`)) return;
      await run(snapError, () => api("POST", `/v1/volumes/${v.name}/actions`, { action: "delete-snapshot", snapshot: snap }),
        view.refresh);
    } }, "delete"))]);

  const show = (v) => {
    if (!current) return;
    if (!v) {
      title.textContent = `Volume ${current.name}`;
      facts.textContent = "This volume is gone.";
      grow.hidden = clone.hidden = true;
      snapshots.replaceChildren();
      return;
    }
    current = v;
    grow.hidden = clone.hidden = false;
    title.textContent = `Volume ${v.name}`;
    facts.textContent = `${v.size_mb} MiB, ${v.format}, in pool ${v.pool || "default"}, ${v.state}${(v.attached_to || []).length ? `, attached to ${v.attached_to.join(", ")}` : ""}. `
      + "A volume only grows (its filesystem grows with it); a clone is a new volume of the same size and content.";
    size.placeholder = `more than ${v.size_mb}`;
    snapshots.replaceChildren((v.snapshots || []).length
      ? table(["Snapshot", ""], snapshotRows(v), { id: "volume-snapshots" })
      : h("p", { class: "muted" }, "No snapshots."));
  };
  const open = (v) => {
    current = v;
    for (const error of [growError, cloneError, snapError]) error.textContent = "";
    section.hidden = false;
    show(v);
    size.focus();
  };
  return { section, show, open, name: () => current && current.name };
}

export async function volumesPage() {
  const name = h("input", { required: true, ...rules("VolumeCreate", "name") });
  const size = h("input", { type: "number", ...rules("VolumeCreate", "size_mb", { step: 1 }), required: true, value: "64" });
  const format = h("select", {}, h("option", { value: "raw" }, "raw (ext4, shareable)"), h("option", { value: "qcow2" }, "qcow2 (VMs)"));
  const pools = poolsSection();
  const form = simpleForm("Create a volume", [["Name", name], ["Size (MiB)", size], ["Format", format], ["Pool", pools.select]],
    () => api("POST", "/v1/volumes",
      { name: name.value.trim(), size_mb: Number(size.value), format: format.value, pool: pools.select.value }),
    "Create", "POST /v1/volumes");
  const panel = managePanel();
  await page("Volumes", async () => {
    const [vols, found] = await Promise.all([api("GET", "/v1/volumes?limit=1000"), api("GET", "/v1/storage-pools")]);
    if (panel.name()) panel.show(vols.items.find((v) => v.name === panel.name()) || null);
    pools.show(found.items, vols.items);
    return vols.items.length
      ? table(["Volume", "Size", "Format", "State", "Attached to", "Snapshots", "Pool", ""], vols.items.map((v) => [
        v.name, `${v.size_mb} MiB`, v.format, badge(v.state), (v.attached_to || []).join(", "), (v.snapshots || []).join(", "),
        v.pool || "",
        h("span", { class: "actions" },
          h("button", { type: "button", "data-write": `POST /v1/volumes/${v.name}/actions`, onclick: () => volumeAction(v.name, "snapshot") }, "snapshot"),
          (v.snapshots || []).length ? h("button", { type: "button", "data-write": `POST /v1/volumes/${v.name}/actions`, onclick: () => volumeAction(v.name, "revert", v.snapshots[v.snapshots.length - 1]) }, "revert") : "",
          h("button", { type: "button", "aria-label": `manage ${v.name}`, onclick: () => panel.open(v) }, "manage"),
          deleteButton(`volume ${v.name}`, `/v1/volumes/${v.name}`)),
      ]), { id: "volumes" })
      : h("p", { class: "muted" }, "No volumes.");
  }, rowError, panel.section, form, pools.section);
}
