// An instance's port forwards on its page: a port of its host DNATed to one of its ports (made and removed by an
// operation on the instance's host), listed with their state, added from a form and removed by a button.

import { api } from "./api.js";
import { h, badge, table } from "./dom.js";
import { deleteButton, run, view } from "./ui.js";

function portInput() {
  return h("input", { type: "number", min: 1, max: 65535, required: true });
}

// The section and `show(instance)`, which fills it again from the instance and the project's forwards.
export function forwardSection(name) {
  const listenPort = portInput();
  const port = portInput();
  const protocol = h("select", {}, h("option", { value: "tcp" }, "tcp"), h("option", { value: "udp" }, "udp"));
  const address = h("input", { placeholder: "every host address" });
  const list = h("div", {});
  const error = h("p", { class: "error", role: "alert" });
  const field = (label, input) => h("label", {}, h("span", {}, label), input);
  const form = h("form", { class: "create", "aria-label": "Forward a port" },
    field("Host port", listenPort), field("Instance port", port), field("Protocol", protocol),
    field("Host address", address),
    h("button", { type: "submit", "data-write": "POST /v1/forwards" }, "Forward"), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { instance: name, listen_port: Number(listenPort.value), port: Number(port.value),
      protocol: protocol.value };
    if (address.value.trim()) body.listen_address = address.value.trim();
    await run(error, () => api("POST", "/v1/forwards", body), view.refresh);
    if (!error.textContent) form.reset();
  });
  const show = async () => {
    const found = (await api("GET", "/v1/forwards")).items.filter((f) => f.instance === name);
    list.replaceChildren(found.length
      ? table(["Host port", "To", "Host", "State", ""], found.map((f) => [
        `${f.listen_address || "*"}:${f.listen_port}/${f.protocol}`, `${f.address || "?"}:${f.port}`, f.host || "",
        f.error ? `${f.state}: ${f.error}` : badge(f.state),
        deleteButton(`the forward of port ${f.listen_port}`, `/v1/forwards/${f.id}`),
      ]), { id: "forwards" })
      : h("p", { class: "muted" }, "No port is forwarded to it."));
  };
  return [h("section", { "aria-label": "Port forwards" }, h("h2", {}, "Port forwards"), list, form), show];
}
