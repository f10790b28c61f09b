// The images page: every image with its state, an import form (a root filesystem tarball for a container image,
// a qcow2 disk for a VM image, uploaded from the browser as it is), a Dockerfile build, a push to a registry, and
// delete. The forms stay while the table follows the event stream, so a build's or push's progress and the API's
// refusal stay next to the form that asked.

import { api } from "./api.js";
import { h, badge, table, fmtTime, field } from "./dom.js";
import { rules } from "./schema.js";
import { deleteButton, page, run, view } from "./ui.js";

function size(bytes) {
  if (!bytes) return "";
  return bytes >= 1024 ** 2 ? `${(bytes / 1024 ** 2).toFixed(1)} MiB` : `${Math.ceil(bytes / 1024)} KiB`;
}

function importForm() {
  const name = h("input", { required: true, ...rules("ImageCreate", "name") });
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
    h("button", { type: "submit", "data-write": "POST /v1/images/import" }, "Import"), error);
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

function buildForm() {
  const name = h("input", { required: true, ...rules("ImageCreate", "name") });
  const dockerfile = h("textarea", { rows: 5, spellcheck: "false", required: true,
    placeholder: "FROM busybox\nRUN echo hello > /hello.txt", "aria-describedby": "build-hint" });
  const error = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "create", "aria-label": "Build an image" }, h("h2", {}, "Build an image"),
    h("p", { class: "hint wide", id: "build-hint" },
      "Docker builds the Dockerfile on this host (its FROM images are pulled unless Docker has them); the image is "
      + "ready once the build operation ends, and a failed build keeps Docker's message in the table."),
    field("Name", name), h("label", { class: "wide" }, h("span", {}, "Dockerfile"), dockerfile),
    h("button", { type: "submit", "data-write": "POST /v1/images" }, "Build"), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { name: name.value.trim(), kind: "container", source: { type: "dockerfile", dockerfile: dockerfile.value } };
    await run(error, () => api("POST", "/v1/images", body), view.refresh);
    if (!error.textContent) form.reset();
  });
  return form;
}

// Push: the image is chosen from the ready container images, which the page's refresh keeps up to date.
function pushForm() {
  const image = h("select", { required: true });
  const target = h("input", { required: true, placeholder: "127.0.0.1:5000/team/app:1", "aria-describedby": "push-hint" });
  const error = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "create", "aria-label": "Push an image" }, h("h2", {}, "Push an image"),
    h("p", { class: "hint wide", id: "push-hint" }, "The target names a registry, a repository and a tag."),
    field("Image", image), field("Target", target),
    h("button", { type: "submit", "data-write": "POST /v1/images/{name}/actions" }, "Push"), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    await run(error, () => api("POST", `/v1/images/${image.value}/actions`, { action: "push", target: target.value.trim() }),
      view.refresh);
  });
  const show = (items) => {
    const chosen = image.value;
    const names = items.filter((i) => i.kind === "container" && i.state === "ready").map((i) => i.name);
    image.replaceChildren(...names.map((n) => h("option", { value: n }, n)));
    if (names.includes(chosen)) image.value = chosen;
  };
  return { form, show };
}

export async function imagesPage() {
  const push = pushForm();
  await page("Images", async () => {
    const found = await api("GET", "/v1/images?limit=1000");
    push.show(found.items);
    return found.items.length
      ? table(["Image", "Kind", "State", "Source", "Size", "Made", ""], found.items.map((i) => [
        i.name, i.kind, badge(i.state), (i.source && i.source.type) || "", size(i.size_bytes), fmtTime(i.created_at),
        h("span", {}, deleteButton(`image ${i.name}`, `/v1/images/${i.name}`), i.error ? h("span", { class: "error" }, i.error) : ""),
      ]), { id: "images" })
      : h("p", { class: "muted" }, "No images.");
  }, importForm(), buildForm(), push.form);
}
