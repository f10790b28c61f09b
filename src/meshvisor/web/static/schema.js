// The forms' rules from the API's own document (`/openapi.json`, read once as the dashboard loads): a field takes
// the pattern, bounds and lengths its request body has there, which are the rules the server checks, so a form
// refuses in the browser what the API would refuse, and names the rule (the field's description) as its title.

const DOC = await fetch("/openapi.json").then((r) => {
  if (!r.ok) throw new Error(`the API's document could not be read: HTTP ${r.status}`);
  return r.json();
});
const SCHEMAS = DOC.components.schemas;

// The rule of a name the form's request body has no field for (a stack's, a snapshot's): every resource's name
// has the one rule of an instance's in the document.
export const NAME = rules("InstanceCreate", "name");

// The input attributes of field `name` of request body `model` (`rules("InstanceCreate", "cpus", { step: 0.1 })`):
// pattern, min, max, minlength, maxlength, title; `step` also makes an exclusive minimum the first step above it.
export function rules(model, name, { step } = {}) {
  const prop = SCHEMAS[model]?.properties?.[name];
  if (!prop) throw new Error(`the API's document has no field ${name} in ${model}`);
  const parts = [prop, ...(prop.anyOf || []).filter((p) => p.type !== "null")];
  const get = (key) => parts.map((p) => p[key]).find((v) => v !== undefined);
  const found = {
    pattern: get("pattern") && htmlPattern(get("pattern")),
    min: get("minimum") ?? (get("exclusiveMinimum") !== undefined && step ? get("exclusiveMinimum") + step : undefined),
    max: get("maximum"),
    minlength: get("minLength"),
    maxlength: get("maxLength"),
    title: get("description"),
    step,
  };
  return Object.fromEntries(Object.entries(found).filter(([, v]) => v !== undefined).map(([k, v]) => [k, String(v)]));
}

// A pattern of the document as an input's `pattern`: the browser anchors it itself, and compiles it with the `v`
// flag, where these characters must be escaped inside a class: ( ) { } / | and a `-` that is not a range.
function htmlPattern(pattern) {
  const bare = pattern.replace(/^\^/, "").replace(/\$$/, "");
  let out = "";
  let inClass = false;
  for (let i = 0; i < bare.length; i++) {
    const c = bare[i];
    if (c === "\\") {
      out += c + bare[++i];
    } else if (!inClass) {
      inClass = c === "[";
      out += c;
    } else if (c === "]") {
      inClass = false;
      out += c;
    } else if ("(){}/|[".includes(c) || (c === "-" && (bare[i - 1] === "[" || bare[i + 1] === "]"))) {
      out += "\\" + c;
    } else {
      out += c;
    }
  }
  return out;
}
