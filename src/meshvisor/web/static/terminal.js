// The in-page terminal: xterm.js (installed at build time, served from /ui/vendor/) over the API's WebSocket
// `/v1/instances/{name}/terminal`. The first message carries the token; then keys go out as bytes, output comes
// in as bytes, and a resize is `{"resize": [rows, cols]}`.

import { project, token } from "./api.js";
import { h } from "./dom.js";

const loaded = {};

function load(src) {
  loaded[src] ||= new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.onload = resolve;
    script.onerror = () => reject(new Error(`could not load ${src} (run scripts/build-web)`));
    document.head.append(script);
  });
  return loaded[src];
}

function stylesheet(href) {
  if (!document.querySelector(`link[href="${href}"]`)) document.head.append(h("link", { rel: "stylesheet", href }));
}

// Open a terminal on instance `name` inside `box`; `status(text)` tells what happens. Returns a close function.
export async function openTerminal(name, box, status) {
  stylesheet("/ui/vendor/xterm.css");
  await load("/ui/vendor/xterm.js");
  await load("/ui/vendor/addon-fit.js");
  const term = new window.Terminal({ cursorBlink: true, convertEol: false, fontSize: 14, scrollback: 2000 });
  const fit = new window.FitAddon.FitAddon();
  term.loadAddon(fit);
  box.replaceChildren();
  term.open(box);
  fit.fit();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/v1/instances/${name}/terminal`);
  socket.binaryType = "arraybuffer";
  const encoder = new TextEncoder();
  socket.onopen = () => {
    socket.send(JSON.stringify({ token: token(), rows: term.rows, cols: term.cols, ...(project() ? { project: project() } : {}) }));
    status("connected");
    term.focus();
  };
  socket.onmessage = (event) => {
    if (event.data instanceof ArrayBuffer) term.write(new Uint8Array(event.data));
  };
  socket.onclose = (event) => {
    status(event.code === 1000 || event.code === 1005 ? "closed" : `closed: ${event.reason || event.code}`);
  };
  term.onData((data) => {
    if (socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data));
  });
  const resized = () => {
    fit.fit();
    if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ resize: [term.rows, term.cols] }));
  };
  window.addEventListener("resize", resized);
  return () => {
    window.removeEventListener("resize", resized);
    socket.close();
    term.dispose();
  };
}
