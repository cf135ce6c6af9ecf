// Runs one named case against the gateway at GATEWAY_BASE_URL and prints one JSON line:
// {"ok": true, "result": {...}} or {"ok": false, "error": {...}}. pytest asserts on it, so a
// client's own exception (its message, the HTTP status and the gateway's body) is what a failing
// test shows.

export const baseURL = process.env.GATEWAY_BASE_URL;
export const apiKey = process.env.GATEWAY_API_KEY || "unused";
export const MODEL = process.env.GATEWAY_MODEL || "local";

// Every request body the client sent, in order: tests check the wire shape they exercised
// (item_reference items, the schema the SDK derived) rather than trusting the SDK did.
export const sent = [];

export async function recordingFetch(url, init) {
  if (init && typeof init.body === "string") {
    try {
      sent.push({ url: String(url), body: JSON.parse(init.body) });
    } catch {
      sent.push({ url: String(url), body: null });
    }
  }
  return fetch(url, init);
}

function describe(err) {
  const out = { name: err?.name, message: String(err?.message ?? err) };
  for (const key of ["status", "statusCode", "responseBody", "code", "param", "type", "text"]) {
    if (err?.[key] !== undefined) out[key] = err[key];
  }
  if (err?.error !== undefined) out.body = err.error;
  if (err?.cause !== undefined) out.cause = String(err.cause?.message ?? err.cause);
  return out;
}

export async function main(cases) {
  if (!baseURL) throw new Error("GATEWAY_BASE_URL is not set");
  const name = process.argv[2];
  const run = cases[name];
  let out;
  if (run === undefined) {
    out = { ok: false, error: { message: `unknown case ${name}`, cases: Object.keys(cases) } };
  } else {
    try {
      out = { ok: true, result: await run() };
    } catch (err) {
      out = { ok: false, error: describe(err) };
    }
  }
  out.sent = sent;
  process.stdout.write(JSON.stringify(out) + "\n");
}
