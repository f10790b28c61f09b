// The meshvisor dashboard: a page per hash route, built with DOM calls (never from HTML text, so no value from
// the API is ever read as markup), kept live by the `/v1/events` stream.

import { ApiError, api, follow, project, setProject, token, setToken } from "./api.js";
import { setCaller } from "./access.js";
import { h, badge, sparkline, table, when, fmtTime, field } from "./dom.js";
import { NAME, rules } from "./schema.js";
import { imagesPage } from "./images.js";
import { servicesPage } from "./services.js";
import { stack, stacksPage } from "./stacks.js";
import { volumesPage } from "./volumes.js";
import { forwardSection } from "./forwards.js";
import { moveSection } from "./moves.js";
import { openTerminal } from "./terminal.js";
import { actionButton, deleteButton, jsonEditor, main, page, run, simpleForm, view } from "./ui.js";

const nav = document.getElementById("nav");
const live = document.getElementById("live");
const logoutButton = document.getElementById("logout");
const whoami = document.getElementById("whoami");
const projectSelect = document.getElementById("project");

const ACTIONS = {
  running: ["stop", "restart", "pause"],
  stopped: ["start"],
  paused: ["resume", "stop"],
  error: ["start", "stop"],
  created: ["start"],
};

let loggedIn = false;
let stream = null;
let pending = null;

// -- session -------------------------------------------------------------------------------------------------
function logout(message) {
  loggedIn = false;
  setToken(null);
  setProject(null);
  setCaller(null);
  if (stream) stream.abort();
  stream = null;
  showLogin(message);
}

window.addEventListener("meshvisor:unauthorized", () => {
  if (loggedIn) logout("Your token was refused (wrong or expired): log in again.");
});
logoutButton.addEventListener("click", () => logout("Logged out."));

function showLogin(message) {
  nav.hidden = true;
  live.hidden = true;
  whoami.hidden = true;
  projectSelect.hidden = true;
  logoutButton.hidden = true;
  view.refresh = null;
  const input = h("input", { id: "token", type: "password", autocomplete: "current-password", required: true });
  const error = h("p", { class: "error", role: "alert" }, message || "");
  const form = h(
    "form",
    { class: "login", "aria-label": "Log in" },
    h("h1", {}, "Log in"),
    h("label", { for: "token" }, "API token"),
    input,
    h("p", { class: "hint" }, "`make up` prints the admin token and keeps it in var/admin.token."),
    h("button", { type: "submit" }, "Log in"),
    error,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    setToken(input.value.trim());
    try {
      await api("GET", "/v1/hosts");
    } catch (err) {
      setToken(null);
      error.textContent = err instanceof ApiError && err.status === 401 ? "That token was refused." : String(err.message || err);
      return;
    }
    if (location.hash === "" || location.hash === "#/login") location.hash = "#/overview";
    start();
  });
  main.replaceChildren(form);
  input.focus();
}

function start() {
  loggedIn = true;
  nav.hidden = false;
  logoutButton.hidden = false;
  startEvents();
  showCaller();
  render();
}

// The token's project and role, beside the log-out button; what its role may not do is disabled (access.js).
async function showCaller() {
  try {
    const me = await api("GET", "/v1/whoami");
    setCaller(me);
    whoami.textContent = `${project() || me.project} · ${me.role} (${me.name})`;
    whoami.hidden = false;
    if (me.role === "platform-admin") await showProjects(me);
  } catch (err) {
    whoami.hidden = true;
  }
}

// A platform admin's project switcher: every request of the page then acts in the project chosen.
async function showProjects(me) {
  const listed = await api("GET", "/v1/projects");
  projectSelect.replaceChildren(...listed.items.map((p) => h("option", { value: p.name }, p.name)));
  projectSelect.value = project() || me.project;
  projectSelect.hidden = false;
}

projectSelect.addEventListener("change", () => {
  setProject(projectSelect.value);
  if (stream) stream.abort();
  stream = null;
  startEvents();
  showCaller();
  render();
});

// -- live updates ----------------------------------------------------------------------------------------------
function startEvents() {
  if (stream) return;
  stream = new AbortController();
  follow("/v1/events", stream.signal, () => {
    if (pending) return;
    pending = setTimeout(() => {
      pending = null;
      if (view.refresh) view.refresh().catch(() => {});
    }, 150);
  }, (up) => { live.hidden = !up; });
}

// -- routes ----------------------------------------------------------------------------------------------------
const ROUTES = [
  [/^#\/overview$/, overview],
  [/^#\/instances$/, instances],
  [/^#\/instances\/([a-z0-9-]+)$/, instance],
  [/^#\/images$/, imagesPage],
  [/^#\/networks$/, networksPage],
  [/^#\/volumes$/, volumesPage],
  [/^#\/services$/, servicesPage],
  [/^#\/stacks$/, stacksPage],
  [/^#\/stacks\/([a-z0-9-]+)$/, stack],
];

async function render() {
  if (!token()) {
    // A render that began before the token was refused must not replace the login (and its reason) shown since.
    if (!main.querySelector("form.login")) showLogin();
    return;
  }
  const hash = location.hash || "#/overview";
  for (const link of nav.querySelectorAll("a")) {
    link.toggleAttribute("aria-current", hash.startsWith(link.getAttribute("href")));
  }
  for (const [pattern, page] of ROUTES) {
    const match = hash.match(pattern);
    if (match) {
      view.refresh = null;
      try {
        await page(...match.slice(1));
      } catch (err) {
        if (!loggedIn) return; // the token was refused: the login is shown instead
        main.replaceChildren(h("p", { class: "error", role: "alert" }, `Could not load this page: ${err.message || err}`));
      }
      return;
    }
  }
  location.hash = "#/overview";
}

window.addEventListener("hashchange", render);

// -- overview --------------------------------------------------------------------------------------------------
async function overview() {
  await page("Overview", async () => {
    const [all, hosts, failed] = await Promise.all([
      api("GET", "/v1/instances?limit=1000"),
      api("GET", "/v1/hosts"),
      api("GET", "/v1/operations?status=failed&limit=5"),
    ]);
    const counts = {};
    for (const i of all.items) counts[i.state] = (counts[i.state] || 0) + 1;
    const cards = h(
      "div",
      { class: "cards", "aria-label": "Instances by state" },
      h("div", { class: "card" }, h("strong", {}, String(all.items.length)), " instances"),
      ...Object.entries(counts).sort().map(([state, n]) => h("div", { class: `card state-${state}` }, h("strong", {}, String(n)), ` ${state}`)),
    );
    return [
      cards,
      h("h2", {}, "Hosts"),
      table(["Host", "State", "Instances", "CPUs given / host", "Memory given / host", "VMs", "Last seen", ""], hosts.items.map((x) => {
        const mine = all.items.filter((i) => i.host === x.name && i.state !== "stopped");
        const cpus = mine.reduce((sum, i) => sum + Number(i.cpus || 0), 0);
        const memory = mine.reduce((sum, i) => sum + Number(i.memory_mb || 0), 0);
        return [
          x.name, h("span", {}, badge(x.state), x.cordoned ? h("span", { class: "badge state-cordoned" }, "cordoned") : ""),
          String(all.items.filter((i) => i.host === x.name).length),
          `${Math.round(cpus * 10) / 10} / ${x.cpus ?? "?"}`, `${memory} / ${x.memory_mb ?? "?"} MiB`,
          x.vm_capable ? x.vm_domain_type || "yes" : "no", fmtTime(x.last_seen),
          // A host gone for good can be forgotten once it is offline; the API refuses while anything is on it.
          x.state === "offline" ? deleteButton(`host ${x.name} (forget it)`, `/v1/hosts/${x.name}`, "forget") : hostActions(x),
        ];
      })),
      h("h2", {}, "Recent failed operations"),
      failed.items.length
        ? table(["When", "What", "Error"], failed.items.map((o) => [
          fmtTime(o.finished_at || o.created_at), `${o.action} ${o.resource_type} ${o.resource_name}`, o.error || "",
        ]))
        : h("p", { class: "muted" }, "None."),
    ];
  });
}

// Cordon or uncordon a host, or evacuate it (after a confirmation: every instance moves off it); the evacuation's
// progress and its refusal show beside the buttons.
function hostActions(host) {
  const path = `/v1/hosts/${host.name}/actions`;
  const act = (action) => () => api("POST", path, { action });
  return h("span", { class: "actions" },
    host.cordoned
      ? actionButton("uncordon", null, act("uncordon"), `uncordon host ${host.name}`, `POST ${path}`)
      : actionButton("cordon", null, act("cordon"), `cordon host ${host.name}`, `POST ${path}`),
    actionButton("evacuate", `Evacuate host ${host.name}? Every instance on it moves to another host.`,
      act("evacuate"), `evacuate host ${host.name}`, `POST ${path}`));
}

// -- instances -------------------------------------------------------------------------------------------------
function addresses(instance) {
  return (instance.networks || []).map((n) => `${n.ip || "?"} (${n.network})`).join(", ");
}

function meshText(mesh) {
  const calls = (mesh.upstreams || []).map((u) => `${u.service} at :${u.local_port}`).join(", ");
  return `${mesh.service}:${mesh.port}${mesh.version ? ` (${mesh.version})` : ""}${calls ? `; calls ${calls}` : ""}`;
}

function actionButtons(instance, after) {
  const error = h("span", { class: "error", role: "alert" });
  const buttons = (ACTIONS[instance.state] || []).map((action) =>
    h("button", { type: "button", "data-action": action, "data-write": `POST /v1/instances/${instance.name}/actions`,
      onclick: () => act(instance, action, error, after) }, action));
  const remove = h("button", {
    type: "button", class: "danger", "data-action": "delete", "data-write": `DELETE /v1/instances/${instance.name}`,
    onclick: () => remove_(instance, error, after),
  }, "delete");
  return h("span", { class: "actions" }, ...buttons, remove, error);
}

async function act(instance, action, error, after) {
  if ((action === "stop" || action === "restart") && !confirm(`${action} ${instance.name}?`)) return;
  await run(error, () => api("POST", `/v1/instances/${instance.name}/actions`, { action }), after);
}

async function remove_(instance, error, after) {
  if (!confirm(`Delete ${instance.name}? This cannot be undone.`)) return;
  await run(error, () => api("DELETE", `/v1/instances/${instance.name}`), after);
}

async function instances() {
  const filters = { text: "", state: "", kind: "" };
  const search = h("input", { type: "search", placeholder: "name", "aria-label": "Filter by name" });
  const stateSelect = h("select", { "aria-label": "Filter by state" },
    ...["", "running", "stopped", "paused", "error", "pending", "creating"].map((s) => h("option", { value: s }, s || "any state")));
  const kindSelect = h("select", { "aria-label": "Filter by kind" },
    ...["", "container", "vm"].map((k) => h("option", { value: k }, k || "any kind")));
  const list = h("div", {});
  const bar = h("div", { class: "filters" }, search, stateSelect, kindSelect);
  const form = await createForm();
  main.replaceChildren(h("h1", {}, "Instances"), bar, list, form);
  view.refresh = async () => {
    const all = await api("GET", "/v1/instances?limit=1000");
    const rows = all.items.filter((i) =>
      i.name.includes(filters.text) && (!filters.state || i.state === filters.state) && (!filters.kind || i.kind === filters.kind));
    list.replaceChildren(rows.length
      ? table(["Name", "Kind", "State", "Host", "Addresses", "Actions"], rows.map((i) => [
        h("a", { href: `#/instances/${i.name}` }, i.name), i.kind, badge(i.state), i.host || "", addresses(i),
        actionButtons(i, view.refresh),
      ]), { id: "instances" })
      : h("p", { class: "muted" }, all.items.length ? "No instance matches." : "No instances yet: create one below."));
  };
  search.addEventListener("input", () => { filters.text = search.value.trim(); view.refresh(); });
  stateSelect.addEventListener("change", () => { filters.state = stateSelect.value; view.refresh(); });
  kindSelect.addEventListener("change", () => { filters.kind = kindSelect.value; view.refresh(); });
  await view.refresh();
}

// "api:9001, web:9002" → [{service: "api", local_port: 9001}, ...]; null when a part is not `service:port`.
function parseUpstreams(text) {
  const found = [];
  for (const part of text.split(/[,\s]+/).filter(Boolean)) {
    const match = part.match(/^([a-z0-9-]+):(\d{1,5})$/);
    if (!match) return null;
    found.push({ service: match[1], local_port: Number(match[2]) });
  }
  return found;
}

async function createForm() {
  const [images, networks, volumes, groups] = await Promise.all([
    api("GET", "/v1/images?limit=1000"), api("GET", "/v1/networks?limit=1000"),
    api("GET", "/v1/volumes?limit=1000"), api("GET", "/v1/security-groups?limit=1000"),
  ]);
  const name = h("input", { name: "name", required: true, ...rules("InstanceCreate", "name") });
  const kind = h("select", { name: "kind" }, h("option", { value: "container" }, "container"), h("option", { value: "vm" }, "vm"));
  const image = h("select", { name: "image" });
  const cpus = h("input", { name: "cpus", type: "number", ...rules("InstanceCreate", "cpus", { step: 0.1 }), value: "1" });
  const memory = h("input", { name: "memory_mb", type: "number", ...rules("InstanceCreate", "memory_mb", { step: 1 }), value: "256" });
  const command = h("input", { name: "command", placeholder: "sh -c command (containers)" });
  const network = h("select", { name: "network" }, h("option", { value: "" }, "no network"),
    ...networks.items.map((n) => h("option", { value: n.name }, `${n.name} (${n.cidr})`)));
  const group = h("select", { name: "group" }, h("option", { value: "" }, "no group"),
    ...groups.items.map((g) => h("option", { value: g.name }, g.name)));
  const volume = h("select", { name: "volume" }, h("option", { value: "" }, "no volume"),
    ...volumes.items.filter((v) => v.state === "ready").map((v) => h("option", { value: v.name }, `${v.name} (${v.size_mb} MiB)`)));
  const mountPath = h("input", { name: "path", placeholder: "/data (containers)" });
  const disk = h("input", { name: "disk_mb", type: "number", ...rules("InstanceCreate", "disk_mb", { step: 1 }), value: "0" });
  const meshService = h("input", { name: "mesh", placeholder: "service name", ...rules("ServiceCreate", "name") });
  const meshPort = h("input", { name: "mesh_port", type: "number", min: "1", max: "65535", placeholder: "8080" });
  const meshVersion = h("input", { name: "mesh_version", placeholder: "e.g. v1 (for splits)" });
  const upstreams = h("input", { name: "upstreams", placeholder: "api:9001, web:9002", autocomplete: "off" });
  const maxCpus = h("input", { name: "max_cpus", type: "number", min: "1", step: "1", placeholder: "= CPUs" });
  const maxMemory = h("input", { name: "max_memory_mb", type: "number", min: "1", step: "1", placeholder: "= memory" });
  const sshKeys = h("textarea", { name: "ssh_keys", rows: 3, spellcheck: "false", placeholder: "ssh-ed25519 AAAA… you@laptop" });
  const userData = h("textarea", { name: "user_data", rows: 4, spellcheck: "false", placeholder: "#cloud-config\npackages: [nginx]" });
  const error = h("p", { class: "error", role: "alert" });
  const fillImages = () => {
    image.replaceChildren(...images.items.filter((i) => i.kind === kind.value && i.state === "ready")
      .map((i) => h("option", { value: i.name }, i.name)));
    command.disabled = mountPath.disabled = kind.value === "vm";
    disk.disabled = maxCpus.disabled = maxMemory.disabled = sshKeys.disabled = userData.disabled = kind.value !== "vm";
    if (kind.value === "vm" && Number(memory.value) < 128) memory.value = "256";
  };
  kind.addEventListener("change", fillImages);
  fillImages();
  const form = h("form", { class: "create", "aria-label": "Create an instance" },
    h("h2", {}, "Create an instance"),
    field("Name", name), field("Kind", kind), field("Image", image), field("CPUs", cpus), field("Memory (MiB)", memory),
    field("Command", command), field("Network", network), field("Security group", group), field("Volume", volume),
    field("Mounted at", mountPath), field("Disk (MiB, VMs)", disk), field("Mesh service", meshService),
    field("Mesh port", meshPort), field("Mesh version", meshVersion), field("Upstreams (service:local port)", upstreams),
    field("Max CPUs (VMs, live resize)", maxCpus), field("Max memory (MiB, VMs)", maxMemory),
    h("label", { class: "wide" }, h("span", {}, "SSH keys (VMs, one per line)"), sshKeys),
    h("label", { class: "wide" }, h("span", {}, "Cloud-init user data (VMs, used as it is)"), userData),
    h("p", { class: "hint wide" }, "A meshed instance calls each upstream service at 127.0.0.1:<local port> (a VM at its "
      + "sidecar's address); the services must exist. A VM grows live up to its maximum CPUs and memory. A VM booted "
      + "from a distribution's disk image gets its SSH keys through cloud-init, or your own user data instead."),
    h("button", { type: "submit", "data-write": "POST /v1/instances" }, "Create"), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {
      name: name.value.trim(), kind: kind.value, image: image.value,
      cpus: Number(cpus.value), memory_mb: Number(memory.value),
    };
    if (kind.value === "container" && command.value.trim()) body.command = ["sh", "-c", command.value.trim()];
    if (network.value) body.networks = [{ network: network.value }];
    if (group.value) body.security_groups = [group.value];
    if (volume.value) body.volumes = [kind.value === "vm" ? { volume: volume.value } : { volume: volume.value, path: mountPath.value.trim() }];
    if (kind.value === "vm" && Number(disk.value) > 0) body.disk_mb = Number(disk.value);
    if (kind.value === "vm" && maxCpus.value) body.max_cpus = Number(maxCpus.value);
    if (kind.value === "vm" && maxMemory.value) body.max_memory_mb = Number(maxMemory.value);
    const keys = sshKeys.value.split("\n").map((line) => line.trim()).filter(Boolean);
    if (kind.value === "vm" && keys.length && userData.value.trim()) {
      error.textContent = "give SSH keys or your own user data, not both: put the keys in the user data (ssh_authorized_keys)";
      return;
    }
    if (kind.value === "vm" && keys.length) body.cloud_init = { ssh_keys: keys };
    if (kind.value === "vm" && userData.value.trim()) body.cloud_init = { user_data: userData.value };
    const calls = parseUpstreams(upstreams.value);
    if (calls === null) {
      error.textContent = "upstreams are service:local_port pairs separated by commas, e.g. api:9001, web:9002";
      return;
    }
    if (!meshService.value.trim() && (calls.length || meshVersion.value.trim())) {
      error.textContent = "upstreams and a version need a mesh service: name the service this instance joins";
      return;
    }
    if (meshService.value.trim()) {
      body.mesh = { service: meshService.value.trim(), port: Number(meshPort.value || 8080), upstreams: calls };
      if (meshVersion.value.trim()) body.mesh.version = meshVersion.value.trim();
    }
    await run(error, () => api("POST", "/v1/instances", body), view.refresh);
    if (!error.textContent) {
      form.reset();
      fillImages();
    }
  });
  return form;
}

// -- one instance ----------------------------------------------------------------------------------------------
// CPUs and memory changed with PATCH (an operation): a container changes live; a VM live up to the maximum it was
// made with (the API refuses more), else it is flagged `restart_required` until it restarts. `show(instance)`
// follows the instance's current size unless the fields are being edited.
function resizeSection(name) {
  const cpus = h("input", { type: "number", ...rules("InstancePatch", "cpus", { step: 0.1 }), required: true });
  const memory = h("input", { type: "number", ...rules("InstancePatch", "memory_mb", { step: 1 }), required: true });
  const hint = h("p", { class: "hint", id: "resize-hint" });
  const notice = h("p", { class: "notice", role: "status", id: "restart-required", hidden: true });
  const error = h("p", { class: "error", role: "alert" });
  let edited = false;
  for (const input of [cpus, memory]) input.addEventListener("input", () => { edited = true; });
  const form = h("form", { class: "inline", "aria-label": "Resize", "aria-describedby": "resize-hint" },
    h("label", {}, h("span", {}, "CPUs"), cpus), h("label", {}, h("span", {}, "Memory (MiB)"), memory),
    h("button", { type: "submit", "data-write": `PATCH /v1/instances/${name}` }, "Resize"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    await run(error, () => api("PATCH", `/v1/instances/${name}`, { cpus: Number(cpus.value), memory_mb: Number(memory.value) }),
      () => { if (!error.textContent) edited = false; return view.refresh && view.refresh(); });
  });
  const show = (i) => {
    cpus.step = i.kind === "vm" ? "1" : "0.1";
    cpus.min = i.kind === "vm" ? "1" : "0.1";
    if (!edited) {
      cpus.value = String(i.cpus);
      memory.value = String(i.memory_mb);
    }
    hint.textContent = i.kind === "vm"
      ? `A running VM changes live up to ${i.max_cpus ?? i.cpus} vCPUs and ${i.max_memory_mb ?? i.memory_mb} MiB, the `
        + "maximum it was made with; the API refuses more (make the VM again with a higher maximum). "
        + "A stopped VM takes the new size when it starts."
      : "A container's CPU and memory limits change live, without a restart.";
    notice.hidden = !i.restart_required;
    notice.textContent = i.restart_required
      ? `${i.cpus} CPUs and ${i.memory_mb} MiB are saved, but the hypervisor could not apply them live: restart the VM to use them.`
      : "";
  };
  return [h("section", { "aria-label": "Resize" }, h("h2", {}, "CPU and memory"), hint, form, notice, error), show];
}

async function instance(name) {
  const logs = h("pre", { class: "logs", id: "logs", "aria-label": "Logs", tabindex: "0" });
  const output = h("pre", { class: "logs", id: "exec-output", "aria-live": "polite" });
  const command = h("input", { id: "exec-command", placeholder: "a command, e.g. uname -a", "aria-label": "Command" });
  const console_ = h("form", { class: "exec", "aria-label": "Run a command" },
    h("span", { class: "prompt" }, "$"), command,
    h("button", { type: "submit", "data-write": `POST /v1/instances/${name}/exec` }, "Run"));
  const head = h("div", {});
  const usage = h("div", { class: "usage", id: "usage" });
  const termBox = h("div", { class: "terminal", id: "terminal", "aria-label": "Terminal" });
  const termStatus = h("span", { class: "muted", role: "status" });
  let closeTerminal = null;
  const termButton = h("button", { type: "button", "data-write": `WS /v1/instances/${name}/terminal`, onclick: async () => {
    if (closeTerminal) {
      closeTerminal();
      closeTerminal = null;
      termButton.textContent = "Open terminal";
      termBox.replaceChildren();
      return;
    }
    try {
      closeTerminal = await openTerminal(name, termBox, (text) => { termStatus.textContent = text; });
      termButton.textContent = "Close terminal";
    } catch (err) {
      termStatus.textContent = err.message || String(err);
    }
  } }, "Open terminal");
  window.addEventListener("hashchange", () => { if (closeTerminal) closeTerminal(); closeTerminal = null; }, { once: true });
  const snapshots = h("div", {});
  const snapName = h("input", { placeholder: "a name, e.g. before-upgrade", "aria-label": "Snapshot name", ...NAME });
  const snapError = h("p", { class: "error", role: "alert" });
  const snapForm = h("form", { class: "exec", "aria-label": "Take a snapshot" }, snapName,
    h("button", { type: "submit", "data-write": `POST /v1/instances/${name}/actions` }, "Take snapshot"));
  snapForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    await run(snapError, () => api("POST", `/v1/instances/${name}/actions`, { action: "snapshot", snapshot: snapName.value.trim() }), view.refresh);
    if (!snapError.textContent) snapName.value = "";
  });
  const snapSection = h("section", { hidden: true }, h("h2", {}, "Snapshots"), snapshots, snapForm, snapError);
  const links = h("div", {});
  const linkError = h("p", { class: "error", role: "alert" });
  const attachNet = h("select", { "aria-label": "Network to attach" });
  const attachVol = h("select", { "aria-label": "Volume to attach" });
  const netForm = h("form", { class: "exec", "aria-label": "Attach a network" }, attachNet,
    h("button", { type: "submit", "data-write": `POST /v1/instances/${name}/networks` }, "Attach network"));
  const volForm = h("form", { class: "exec", "aria-label": "Attach a volume", hidden: true }, attachVol,
    h("button", { type: "submit", "data-write": `POST /v1/instances/${name}/volumes` }, "Attach volume"));
  netForm.addEventListener("submit", (event) => {
    event.preventDefault();
    run(linkError, () => api("POST", `/v1/instances/${name}/networks`, { network: attachNet.value }), view.refresh);
  });
  volForm.addEventListener("submit", (event) => {
    event.preventDefault();
    run(linkError, () => api("POST", `/v1/instances/${name}/volumes`, { volume: attachVol.value }), view.refresh);
  });
  const linkSection = h("section", {}, h("h2", {}, "Networks and volumes"), links, netForm, volForm, linkError);
  const [resize, showSize] = resizeSection(name);
  const [move, showMove] = moveSection(name);
  const [forwardBox, showForwards] = forwardSection(name);
  main.replaceChildren(h("p", {}, h("a", { href: "#/instances" }, "← Instances")), head, resize, move,
    h("h2", {}, "Usage"), usage,
    h("h2", {}, "Logs"), logs, h("h2", {}, "Terminal"), h("p", { class: "actions" }, termButton, termStatus), termBox,
    h("h2", {}, "Run a command"), console_, output, linkSection, forwardBox, snapSection);
  console_.addEventListener("submit", async (event) => {
    event.preventDefault();
    const line = command.value.trim();
    if (!line) return;
    output.textContent += `$ ${line}\n`;
    try {
      const result = await api("POST", `/v1/instances/${name}/exec`, { command: ["sh", "-c", line] });
      output.textContent += result.output + (result.exit_code ? `[exit ${result.exit_code}]\n` : "");
    } catch (err) {
      output.textContent += `error: ${err.message}\n`;
    }
    command.value = "";
    output.scrollTop = output.scrollHeight;
  });
  let gone = false;
  view.refresh = async () => {
    let i;
    try {
      i = await api("GET", `/v1/instances/${name}`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        gone = true;
        head.replaceChildren(h("h1", {}, name), h("p", { class: "muted" }, "This instance is gone."));
        return;
      }
      throw err;
    }
    const [allNets, allVols] = await Promise.all([api("GET", "/v1/networks?limit=1000"), api("GET", "/v1/volumes?limit=1000")]);
    const onNets = new Set((i.networks || []).map((n) => n.network));
    const onVols = new Set((i.volumes || []).map((v) => v.volume));
    // While an operation runs (an attach just asked for shows its address at once) the API refuses a detach.
    const busy = i.operation_id ? `busy with operation ${i.operation_id}` : undefined;
    const detach = (what, path) => h("button", { type: "button", class: "danger", "data-write": `DELETE ${path}`,
      disabled: Boolean(busy), title: busy, onclick: async () => {
      if (!confirm(`Detach ${what} from ${name}?`)) return;
      await run(linkError, () => api("DELETE", path), view.refresh);
    } }, "detach");
    links.replaceChildren(table(["Attached", "Address / path", ""], [
      ...(i.networks || []).map((n) => [`network ${n.network}`, `${n.ip || ""} ${n.interface || ""}`.trim(),
        detach(`network ${n.network}`, `/v1/instances/${name}/networks/${n.network}`)]),
      ...(i.volumes || []).map((v) => [`volume ${v.volume}`, v.path || (v.read_only ? "read-only disk" : "disk"),
        i.kind === "vm" && !v.boot ? detach(`volume ${v.volume}`, `/v1/instances/${name}/volumes/${v.volume}`) : ""]),
    ], { id: "links" }));
    const keep = (select, options) => {
      const chosen = select.value;
      select.replaceChildren(...options.map((o) => h("option", { value: o }, o)));
      if (options.includes(chosen)) select.value = chosen;
    };
    keep(attachNet, allNets.items.filter((n) => !onNets.has(n.name) && n.state === "ready").map((n) => n.name));
    keep(attachVol, allVols.items.filter((v) => !onVols.has(v.name) && v.state === "ready").map((v) => v.name));
    netForm.hidden = !attachNet.options.length;
    volForm.hidden = i.kind !== "vm" || !attachVol.options.length;
    snapSection.hidden = !(i.kind === "vm" && i.disk_mb);
    if (!snapSection.hidden) {
      const found = await api("GET", `/v1/instances/${name}/snapshots`);
      snapshots.replaceChildren(found.items.length
        ? table(["Snapshot", "Taken", "State", ""], found.items.map((snap) => [
          snap.name, fmtTime(new Date(snap.created_at * 1000).toISOString()), snap.state,
          h("span", { class: "actions" },
            h("button", { type: "button", "data-write": `POST /v1/instances/${name}/actions`, onclick: () => run(snapError,
              () => api("POST", `/v1/instances/${name}/actions`, { action: "revert", snapshot: snap.name }), view.refresh) }, "revert"),
            h("button", { type: "button", class: "danger", "data-write": `DELETE /v1/instances/${name}/snapshots/${snap.name}`, onclick: async () => {
              if (!confirm(`Delete snapshot ${snap.name}?`)) return;
              await run(snapError, () => api("DELETE", `/v1/instances/${name}/snapshots/${snap.name}`), view.refresh);
            } }, "delete")),
        ]), { id: "snapshots" })
        : h("p", { class: "muted" }, "No snapshots yet."));
    }
    head.replaceChildren(
      h("h1", {}, i.name, " ", badge(i.state)),
      actionButtons(i, view.refresh),
      h("dl", { class: "facts" },
        ...fact("Kind", i.kind), ...fact("Image", i.image), ...fact("CPUs", String(i.cpus)),
        ...fact("Memory", `${i.memory_mb} MiB`), ...fact("Host", i.host || ""), ...fact("Addresses", addresses(i) || "none"),
        ...fact("Volumes", (i.volumes || []).map((v) => `${v.volume}${v.path ? ` at ${v.path}` : ""}`).join(", ") || "none"),
        ...when(i.kind === "vm", () => fact("Live resize up to", `${i.max_cpus} vCPUs, ${i.max_memory_mb} MiB`)),
        ...fact("Mesh", i.mesh ? meshText(i.mesh) : "none"),
        ...when(i.restart_required, () => fact("Restart required", "yes: the new size applies at the next restart")),
        ...when(i.error, () => fact("Error", i.error))),
    );
    showSize(i);
    await Promise.all([showMove(i), showForwards()]);
  };
  const fact = (k, v) => [h("dt", {}, k), h("dd", {}, v)];
  const samples = [];
  const followUsage = async () => {
    if (gone || !location.hash.endsWith(`/${name}`)) return;
    try {
      const now = await api("GET", `/v1/instances/${name}/stats`);
      const before = samples[samples.length - 1];
      const cpu = before && now.at > before.at ? (100 * (now.cpu_seconds - before.cpu_seconds)) / (now.at - before.at) : 0;
      samples.push({ ...now, cpu: Math.max(0, cpu) });
      if (samples.length > 60) samples.shift();
      const last = samples[samples.length - 1];
      usage.replaceChildren(
        h("figure", {}, sparkline(samples.map((x) => x.cpu), "CPU use", 100 * last.cpus),
          h("figcaption", {}, `CPU ${last.cpu.toFixed(1)}% (of ${last.cpus * 100}%)`)),
        h("figure", {}, sparkline(samples.map((x) => x.memory_mb), "Memory use", last.memory_limit_mb),
          h("figcaption", {}, `Memory ${last.memory_mb.toFixed(1)} of ${last.memory_limit_mb} MiB`)),
      );
    } catch {
      usage.replaceChildren(h("p", { class: "muted" }, "Not running: no usage to show."));
    }
    setTimeout(followUsage, 2000);
  };
  const followLogs = async () => {
    if (gone || !location.hash.endsWith(`/${name}`)) return;
    try {
      const found = await api("GET", `/v1/instances/${name}/logs?tail=200`);
      const atEnd = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
      if (logs.textContent !== found.output) logs.textContent = found.output;
      if (atEnd) logs.scrollTop = logs.scrollHeight;
    } catch { /* the instance may be gone or stopped */ }
    setTimeout(followLogs, 2000);
  };
  await view.refresh();
  followLogs();
  followUsage();
}

// -- networks (volumes: volumes.js; the mesh page: services.js; stacks: stacks.js) ----------------------------------------
const rulesBox = h("section", { hidden: true, "aria-label": "Rules" });

// A group's rules, replaced whole with PUT (running instances follow within a second).
function editRules(group) {
  jsonEditor(rulesBox, `Rules of ${group.name}`,
    "[{direction: ingress|egress, protocol: tcp|udp|icmp|any, port_min?, port_max?, cidr? | group?}]",
    group.rules || [], "rules",
    (rules) => api("PUT", `/v1/security-groups/${group.name}`, { description: group.description || "", rules }));
}

async function networksPage() {
  const name = h("input", { required: true, ...rules("NetworkCreate", "name") });
  const cidr = h("input", { required: true, placeholder: "10.210.1.0/24", ...rules("NetworkCreate", "cidr") });
  const netForm = simpleForm("Create a network", [["Name", name], ["CIDR", cidr]],
    () => api("POST", "/v1/networks", { name: name.value.trim(), cidr: cidr.value.trim() }), "Create",
    "POST /v1/networks");
  const group = h("input", { required: true, ...rules("SecurityGroupCreate", "name") });
  const description = h("input", {});
  const direction = h("select", {}, h("option", { value: "ingress" }, "ingress"), h("option", { value: "egress" }, "egress"));
  const protocol = h("select", {}, ...["tcp", "udp", "icmp", "any"].map((p) => h("option", { value: p }, p)));
  const port = h("input", { type: "number", min: "1", max: "65535", placeholder: "any" });
  const groupForm = simpleForm("Create a security group",
    [["Name", group], ["Description", description], ["Direction", direction], ["Protocol", protocol], ["Port", port]],
    () => {
      const ruleBody = { direction: direction.value, protocol: protocol.value };
      if (port.value) ruleBody.port_min = Number(port.value);
      return api("POST", "/v1/security-groups", { name: group.value.trim(), description: description.value, rules: [ruleBody] });
    }, "Create", "POST /v1/security-groups");
  await page("Networks", async () => {
    const [nets, groups] = await Promise.all([api("GET", "/v1/networks?limit=1000"), api("GET", "/v1/security-groups?limit=1000")]);
    return [
      nets.items.length
        ? table(["Network", "CIDR", "VNI", "MTU", "State", ""], nets.items.map((n) => [
          n.name, n.cidr, String(n.vni), String(n.mtu), badge(n.state), deleteButton(`network ${n.name}`, `/v1/networks/${n.name}`),
        ]), { id: "networks" })
        : h("p", { class: "muted" }, "No networks."),
      h("h2", {}, "Security groups"),
      groups.items.length
        ? table(["Group", "Description", "Rules", "Members", ""], groups.items.map((g) => [
          g.name, g.description || "", (g.rules || []).map(rule).join("; "), (g.members || []).join(", "),
          h("span", { class: "actions" },
            h("button", { type: "button", "data-write": `PUT /v1/security-groups/${g.name}`, onclick: () => editRules(g) }, "edit rules"),
            deleteButton(`security group ${g.name}`, `/v1/security-groups/${g.name}`)),
        ]), { id: "groups" })
        : h("p", { class: "muted" }, "No security groups."),
    ];
  }, rulesBox, netForm, groupForm);
}

function rule(r) {
  const ports = r.port_min ? `:${r.port_min}${r.port_max && r.port_max !== r.port_min ? `-${r.port_max}` : ""}` : "";
  return `${r.direction} ${r.protocol}${ports} ${r.cidr || r.group || "any"}`;
}

if (token()) start();
else showLogin();
