// The images page: every image with its state, an import form (a root filesystem tarball for a container image,
// a qcow2 disk for a VM image, uploaded from the browser as it is) and delete.

import { api } from "./api.js";
import { h, badge, table, fmtTime, field } from "./dom.js";
import { deleteButton, page, run, view } from "./ui.js";

function size(bytes) {
  if (!bytes) return "";
  return bytes >= 1024 ** 2 ? `${(bytes / 1024 ** 2).toFixed(1)} MiB` : `${Math.ceil(bytes / 1024)} KiB`;
}

function importForm() {
  const name = h("input", { required: true, pattern: "[a-z0-9-]{1,40}" });
  const kind = h("select", {}, h("option", { value: "container" }, "container (a root filesystem tarball)"),
    h("option", { value: "vm" }, "vm (a qcow2 disk image)"));
  const file = h("input", { type: "file", required: true, accept: ".tar,.tar.gz,.tgz,.qcow2,.img" });
  const command = h("input", { placeholder: "e.g. /bin/sh (containers)", "aria-describedby": "import-hint" });
  const error = h("p", { class: "error", role: "alert" });
  kind.addEventListener("change", () => { command.disabled = kind.value === "vm"; });
  const form = h("form", { class: "create", "aria-label": "Import an image" }, h("h2", {}, "Import an image"),
    h("p", { class: "hint wide", id: "import-hint" },
      "The file goes to the API as it is (up to 2 GiB); the image is ready once the import operation ends. "
      + "The command (words separated by spaces) is what a container runs when it is given none."),
    field("Name", name), field("Kind", kind), field("File", file), field("Default command", command),
    h("button", { type: "submit" }, "Import"), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = file.files[0];
    if (!chosen) return;
    const query = new URLSearchParams({ name: name.value.trim(), kind: kind.value });
    if (kind.value === "container") {
      for (const word of command.value.trim().split(/\s+/).filter(Boolean)) query.append("command", word);
    }
    await run(error, () => {
      error.textContent = `uploading ${chosen.name}…`;
      error.classList.add("progress");
      return api("POST", `/v1/images/import?${query}`, chosen);
    }, view.refresh);
    if (!error.textContent) {
      form.reset();
      command.disabled = false;
    }
  });
  return form;
}

export async function imagesPage() {
  await page("Images", async () => {
    const found = await api("GET", "/v1/images?limit=1000");
    return found.items.length
      ? table(["Image", "Kind", "State", "Source", "Size", "Made", ""], found.items.map((i) => [
        i.name, i.kind, badge(i.state), (i.source && i.source.type) || "", size(i.size_bytes), fmtTime(i.created_at),
        h("span", {}, deleteButton(`image ${i.name}`, `/v1/images/${i.name}`), i.error ? h("span", { class: "error" }, i.error) : ""),
      ]), { id: "images" })
      : h("p", { class: "muted" }, "No images.");
  }, importForm());
}
