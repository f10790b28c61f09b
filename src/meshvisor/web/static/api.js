// The REST API as the page uses it: the token from the login, the project a platform admin chose (every request
// carries it as `?project=`), errors as ApiError with the API's own message, and the server-sent event stream
// read with fetch (EventSource cannot send the bearer token).

const KEY = "meshvisor.token";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

let chosen = null;

// The project every request acts in from now on (null: the token's own).
export function setProject(name) {
  chosen = name || null;
}

export function project() {
  return chosen;
}

// `path` in the chosen project.
function scoped(path) {
  if (!chosen) return path;
  const url = new URL(path, location.origin);
  url.searchParams.set("project", chosen);
  return url.pathname + url.search;
}

function headers() {
  return { Authorization: `Bearer ${token()}`, "Content-Type": "application/json" };
}

// `body` is sent as JSON, or as it is when it is a Blob (a file to upload); `extra` adds headers (If-Match).
async function send(method, path, body, extra = {}) {
  const raw = body instanceof Blob;
  const response = await fetch(scoped(path), {
    method,
    headers: { ...headers(), ...(raw ? { "Content-Type": "application/octet-stream" } : {}), ...extra },
    body: body === undefined ? undefined : raw ? body : JSON.stringify(body),
  });
  if (response.status === 401) {
    window.dispatchEvent(new Event("meshvisor:unauthorized"));
    throw new ApiError(401, "the token was refused");
  }
  return response;
}

// A text resource (`/metrics`).
export async function apiText(path) {
  const response = await send("GET", path);
  if (!response.ok) throw new ApiError(response.status, `HTTP ${response.status}`);
  return response.text();
}

export async function api(method, path, body, extra) {
  const response = await send(method, path, body, extra);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message = data && data.error ? data.error.message : `HTTP ${response.status}`;
    throw new ApiError(response.status, message);
  }
  return data;
}

// Wait for an operation to end, telling `progress` each time its status is read.
export async function waitOperation(id, progress) {
  for (;;) {
    const op = await api("GET", `/v1/operations/${id}/wait?timeout=2`);
    if (progress) progress(op);
    if (["succeeded", "failed", "cancelled"].includes(op.status)) return op;
  }
}

// Follow the event stream: `onEvent(event)` for each event; `onState(up)` when the stream opens or drops.
// A dropped stream is opened again after a pause, resuming after the last event seen.
export async function follow(path, signal, onEvent, onState) {
  let last = null;
  while (!signal.aborted) {
    try {
      const extra = last === null ? {} : { "Last-Event-ID": String(last) };
      const response = await fetch(scoped(path), { headers: { ...headers(), ...extra }, signal });
      if (response.status === 401) {
        window.dispatchEvent(new Event("meshvisor:unauthorized"));
        return;
      }
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      onState(true);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let data = null;
          for (const line of block.split("\n")) {
            if (line.startsWith("id: ")) last = Number(line.slice(4));
            else if (line.startsWith("data: ")) data = line.slice(6);
          }
          if (data !== null) {
            try {
              onEvent(JSON.parse(data));
            } catch { /* a malformed event is skipped */ }
          }
        }
      }
    } catch (err) {
      if (signal.aborted) return;
    }
    onState(false);
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}
