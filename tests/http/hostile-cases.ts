/**
 * The hostile-request battery (issue 12, reliability scenarios 9 and 16): each
 * case is one request and the statuses it may get, run by
 * tests/http/hostile.test.ts through `app.request` and a real server on
 * loopback (Node, Bun, Deno), and by tests/workers/hostile-edge.test.ts in
 * workerd. Also a raw HTTP/1.1 client, so that the Host header, declared
 * lengths and chunked bodies are exactly what the case says.
 */
import { Buffer } from "node:buffer";
import { connect } from "node:net";
import { Webhook } from "standardwebhooks";
import { WIDE_FEATURES } from "./hostile-repo.ts";

export const WRITE_TOKEN = "wt-7f3a9c2e51b04d68a1c3e5f7";
export const READ_TOKEN = "rt-2b8e4f1a9c7d3e60b2d4f6a8";
export const WEBHOOK_SECRET = "whsec_" + btoa("hostile-secret-key-of-32-bytes!!");
/** Strings that no answer may contain. */
export const SECRETS = [WRITE_TOKEN, READ_TOKEN, WEBHOOK_SECRET, WEBHOOK_SECRET.slice("whsec_".length)];
export const ALLOWED_ORIGIN = "https://app.example";

/** The app configurations the cases run against (pushApp options; the Worker sets the first two from env). */
export type ConfigName = "open" | "auth" | "loopback" | "cors";
export const CONFIGS: Record<ConfigName, { writeToken?: string; readToken?: string; webhookSecret?: string; loopbackOnly?: boolean; corsOrigins?: string[] }> = {
  open: {},
  auth: { writeToken: WRITE_TOKEN, readToken: READ_TOKEN, webhookSecret: WEBHOOK_SECRET },
  loopback: { loopbackOnly: true },
  cors: { corsOrigins: [ALLOWED_ORIGIN] },
};

export interface HostileRequest {
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
  /** Send the body with Transfer-Encoding: chunked, in 16 KiB chunks. */
  chunked?: boolean;
  /** Declare this Content-Length and send no body (real servers only). */
  declaredOnly?: number;
  /** The Host header; default the server's own address. */
  host?: string;
}

export interface Answer {
  status: number;
  headers: Headers;
  text: string;
  ms: number;
}

export type Transport = "app" | "server" | "worker";

export interface HostileCase {
  name: string;
  config: ConfigName;
  request: () => HostileRequest;
  /** The statuses the case accepts (more than one only where a server may refuse before the app). */
  expect: number[];
  /** More checks on the answer; throws on failure. */
  check?: (a: Answer) => void;
  /** Where the case runs; default everywhere its config exists. */
  only?: Transport[];
}

const J = { "content-type": "application/json" };
const W = { ...J, authorization: `Bearer ${WRITE_TOKEN}` };
const R = { ...J, authorization: `Bearer ${READ_TOKEN}` };
const nowMs = () => Date.now() - 1000;
const lazy = <T>(f: () => T) => {
  let v: T | undefined;
  return () => (v ??= f());
};

/** A valid push of n rows. */
export const goodPush = (n = 1, prefix = "u") => JSON.stringify({
  push_source_name: "events",
  df: { user_id: Array.from({ length: n }, (_, i) => `${prefix}${i}`), clicks: Array(n).fill(1), page: Array(n).fill("/"), ts: Array(n).fill(nowMs()) },
});
const read = (entities: unknown[], features: string[]) => JSON.stringify({ entities: { user_id: entities }, features });
const ACT = ["activity:clicks", "activity:page"];

// Built once: the big bodies.
const invalidPush2MB = lazy(() => {
  // Rows whose clicks is -1 (minValue 0): about 2 MB, every row invalid.
  const rows: string[] = [];
  let size = 0;
  const ts = nowMs();
  for (let i = 0; size < 2 * 1024 * 1024; i++) {
    const row = `{"user_id":"user-${i}","clicks":-1,"page":"/page/${i}","ts":${ts}}`;
    rows.push(row);
    size += row.length + 1;
  }
  return `{"push_source_name":"events","rows":[${rows.join(",")}]}`;
});
export const INVALID_PUSH_ROWS = () => (invalidPush2MB().match(/"clicks":-1/g) ?? []).length;
/** 5,000 entities x 5,000 copies of one feature ref: the request that killed the process (about 166 KB). */
export const quadraticRead = lazy(() => read(Array.from({ length: 5000 }, (_, i) => 1_000_000 + i), Array(5000).fill("activity:clicks")));
const bigRead = lazy(() => read(Array.from({ length: 200_000 }, (_, i) => `user-${i}`), ["activity:clicks"])); // about 2.4 MB
const signed = (body: string, opts: { at?: Date; tamper?: boolean } = {}) => {
  const id = `msg_${crypto.randomUUID()}`;
  const at = opts.at ?? new Date();
  return {
    ...J,
    "webhook-id": id,
    "webhook-timestamp": String(Math.floor(at.getTime() / 1000)),
    "webhook-signature": new Webhook(WEBHOOK_SECRET).sign(id, at, opts.tamper ? body.replace('"/"', '"/free"') : body),
  };
};

const json = (a: Answer) => JSON.parse(a.text);
const errorField = (field: string) => (a: Answer) => {
  const f = json(a).error?.field;
  if (f !== field) throw new Error(`error.field is ${f}, expected ${field}`);
};
const errorCode = (code: string) => (a: Answer) => {
  const c = json(a).error?.code;
  if (c !== code) throw new Error(`error.code is ${c}, expected ${code}`);
};
const all = (...checks: ((a: Answer) => void)[]) => (a: Answer) => checks.forEach((c) => c(a));
const bearerChallenge = (a: Answer) => {
  if (!/^Bearer/.test(a.headers.get("www-authenticate") ?? "")) throw new Error(`no WWW-Authenticate: Bearer (got ${a.headers.get("www-authenticate")})`);
  errorField("authorization")(a);
};
const noCors = (a: Answer) => {
  for (const h of ["access-control-allow-origin", "access-control-allow-credentials", "access-control-allow-methods"]) {
    if (a.headers.has(h)) throw new Error(`${h}: ${a.headers.get(h)} on an app without CORS`);
  }
};
const messageMatches = (re: RegExp) => (a: Answer) => {
  const m = json(a).error?.message ?? "";
  if (!re.test(m)) throw new Error(`error.message ${JSON.stringify(m)} does not match ${re}`);
};
const smallerThan = (bytes: number) => (a: Answer) => {
  if (a.text.length >= bytes) throw new Error(`answer is ${a.text.length} bytes, expected < ${bytes}`);
};
const featureNames = (names: string[]) => (a: Answer) => {
  const got = json(a).metadata?.feature_names;
  if (JSON.stringify(got) !== JSON.stringify(names)) throw new Error(`feature_names ${JSON.stringify(got)}, expected ${JSON.stringify(names)}`);
};
const hostRefused = all(errorField("host"), errorCode("host_not_allowed"));
const fast = (ms: number) => (a: Answer) => {
  if (a.ms > ms) throw new Error(`answered in ${Math.round(a.ms)} ms, expected under ${ms} ms`);
};

export const CASES: HostileCase[] = [
  // ---- credentials, per route (auth: write token, read token and webhook secret) ----
  { name: "push without a token or signature", config: "auth", request: () => ({ method: "POST", path: "/push", headers: J, body: goodPush() }), expect: [401], check: bearerChallenge },
  { name: "push with a wrong bearer token", config: "auth", request: () => ({ method: "POST", path: "/push", headers: { ...J, authorization: "Bearer nope" }, body: goodPush() }), expect: [401], check: bearerChallenge },
  { name: "push with the write token minus its last character", config: "auth", request: () => ({ method: "POST", path: "/push", headers: { ...J, authorization: `Bearer ${WRITE_TOKEN.slice(0, -1)}` }, body: goodPush() }), expect: [401], check: bearerChallenge },
  { name: "push with the write token plus a character", config: "auth", request: () => ({ method: "POST", path: "/push", headers: { ...J, authorization: `Bearer ${WRITE_TOKEN}x` }, body: goodPush() }), expect: [401], check: bearerChallenge },
  { name: "push with the read token", config: "auth", request: () => ({ method: "POST", path: "/push", headers: R, body: goodPush() }), expect: [401], check: bearerChallenge },
  { name: "push with the write token in Basic auth", config: "auth", request: () => ({ method: "POST", path: "/push", headers: { ...J, authorization: `Basic ${btoa(`x:${WRITE_TOKEN}`)}` }, body: goodPush() }), expect: [401], check: bearerChallenge },
  { name: "push with the write token as a bare header", config: "auth", request: () => ({ method: "POST", path: "/push", headers: { ...J, authorization: WRITE_TOKEN }, body: goodPush() }), expect: [401], check: bearerChallenge },
  { name: "push with an 8 KB bearer token", config: "auth", request: () => ({ method: "POST", path: "/push", headers: { ...J, authorization: `Bearer ${"x".repeat(8192)}` }, body: goodPush() }), expect: [401, 431], check: (a) => a.status === 401 && bearerChallenge(a) },
  { name: "push with the write token", config: "auth", request: () => ({ method: "POST", path: "/push", headers: W, body: goodPush() }), expect: [200] },
  { name: "push with the write token, scheme in lower case", config: "auth", request: () => ({ method: "POST", path: "/push", headers: { ...J, authorization: `bearer ${WRITE_TOKEN}` }, body: goodPush() }), expect: [200] },
  { name: "push with a valid signature and no token", config: "auth", request: () => { const b = goodPush(); return { method: "POST", path: "/push", headers: signed(b), body: b }; }, expect: [200] },
  { name: "push with a tampered signature", config: "auth", request: () => { const b = goodPush(); return { method: "POST", path: "/push", headers: signed(b, { tamper: true }), body: b }; }, expect: [401], check: errorField("webhook-signature") },
  { name: "push with a signature 10 minutes old", config: "auth", request: () => { const b = goodPush(); return { method: "POST", path: "/push", headers: signed(b, { at: new Date(Date.now() - 600_000) }), body: b }; }, expect: [401] },
  { name: "push with a signature 10 minutes in the future", config: "auth", request: () => { const b = goodPush(); return { method: "POST", path: "/push", headers: signed(b, { at: new Date(Date.now() + 600_000) }), body: b }; }, expect: [401] },
  { name: "push with a garbage signature header", config: "auth", request: () => ({ method: "POST", path: "/push", headers: { ...J, "webhook-id": "msg_x", "webhook-timestamp": String(Math.floor(Date.now() / 1000)), "webhook-signature": "v1,AAAA" }, body: goodPush() }), expect: [401] },
  { name: "push with the write token but text/plain", config: "auth", request: () => ({ method: "POST", path: "/push", headers: { ...W, "content-type": "text/plain" }, body: goodPush() }), expect: [415] },
  { name: "get-online-features without a token", config: "auth", request: () => ({ method: "POST", path: "/get-online-features", headers: J, body: read(["u0"], ACT) }), expect: [401], check: bearerChallenge },
  { name: "get-online-features with the write token", config: "auth", request: () => ({ method: "POST", path: "/get-online-features", headers: W, body: read(["u0"], ACT) }), expect: [401], check: bearerChallenge },
  { name: "get-online-features with the read token", config: "auth", request: () => ({ method: "POST", path: "/get-online-features", headers: R, body: read(["u0"], ACT) }), expect: [200], check: featureNames(["user_id", "clicks", "page"]) },
  { name: "GET /registry without a token", config: "auth", request: () => ({ method: "GET", path: "/registry" }), expect: [401], check: bearerChallenge },
  { name: "GET /registry with the write token", config: "auth", request: () => ({ method: "GET", path: "/registry", headers: { authorization: `Bearer ${WRITE_TOKEN}` } }), expect: [401], check: bearerChallenge },
  { name: "GET /registry with the read token", config: "auth", request: () => ({ method: "GET", path: "/registry", headers: { authorization: `Bearer ${READ_TOKEN}` } }), expect: [200] },
  { name: "GET /metrics without a token", config: "auth", request: () => ({ method: "GET", path: "/metrics" }), expect: [401], check: bearerChallenge },
  { name: "GET /metrics with the read token", config: "auth", request: () => ({ method: "GET", path: "/metrics", headers: { authorization: `Bearer ${READ_TOKEN}` } }), expect: [200] },
  { name: "GET /health without a token stays open", config: "auth", request: () => ({ method: "GET", path: "/health" }), expect: [200] },

  // ---- JSON only, no CORS by default ----
  { name: "push as text/plain", config: "open", request: () => ({ method: "POST", path: "/push", headers: { "content-type": "text/plain" }, body: goodPush() }), expect: [415], check: all(errorField("content-type"), messageMatches(/application\/json/)) },
  { name: "push as text/plain from Origin http://evil.example", config: "open", request: () => ({ method: "POST", path: "/push", headers: { "content-type": "text/plain;charset=UTF-8", origin: "http://evil.example" }, body: goodPush() }), expect: [415], check: noCors },
  { name: "push as a urlencoded form", config: "open", request: () => ({ method: "POST", path: "/push", headers: { "content-type": "application/x-www-form-urlencoded" }, body: `${goodPush()}=` }), expect: [415] },
  { name: "push as multipart/form-data", config: "open", request: () => ({ method: "POST", path: "/push", headers: { "content-type": "multipart/form-data; boundary=x" }, body: `--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n${goodPush()}\r\n--x--\r\n` }), expect: [415] },
  { name: "push with no content-type", config: "open", request: () => ({ method: "POST", path: "/push", body: goodPush() }), expect: [415] },
  { name: "push as application/jsonp (not JSON)", config: "open", request: () => ({ method: "POST", path: "/push", headers: { "content-type": "application/jsonp" }, body: goodPush() }), expect: [415] },
  { name: "push as application/json; charset=utf-8", config: "open", request: () => ({ method: "POST", path: "/push", headers: { "content-type": "application/json; charset=utf-8" }, body: goodPush() }), expect: [200] },
  { name: "push as application/cloudevents+json", config: "open", request: () => ({ method: "POST", path: "/push", headers: { "content-type": "Application/CloudEvents+JSON" }, body: goodPush() }), expect: [200] },
  { name: "get-online-features as text/plain", config: "open", request: () => ({ method: "POST", path: "/get-online-features", headers: { "content-type": "text/plain" }, body: read(["u0"], ACT) }), expect: [415] },
  { name: "CORS preflight from http://evil.example, no CORS configured", config: "open", request: () => ({ method: "OPTIONS", path: "/push", headers: { origin: "http://evil.example", "access-control-request-method": "POST", "access-control-request-headers": "content-type" } }), expect: [404], check: noCors },
  { name: "GET /registry from Origin http://evil.example gets no CORS header", config: "open", request: () => ({ method: "GET", path: "/registry", headers: { origin: "http://evil.example" } }), expect: [200], check: noCors },

  // ---- malformed bodies and headers ----
  { name: "push with an empty body", config: "open", request: () => ({ method: "POST", path: "/push", headers: J, body: "" }), expect: [400], check: errorCode("empty_body") },
  { name: "push with a whitespace body", config: "open", request: () => ({ method: "POST", path: "/push", headers: J, body: " \n\t " }), expect: [400] },
  { name: "push with malformed JSON", config: "open", request: () => ({ method: "POST", path: "/push", headers: J, body: '{"push_source_name": "events", "df": {' }), expect: [400], check: errorCode("invalid_json") },
  { name: "push with invalid UTF-8 bytes", config: "open", request: () => ({ method: "POST", path: "/push", headers: J, body: new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]) }), expect: [400] },
  { name: "push of JSON null", config: "open", request: () => ({ method: "POST", path: "/push", headers: J, body: "null" }), expect: [422], check: errorField("body") },
  { name: "push nested 100,000 arrays deep", config: "open", request: () => ({ method: "POST", path: "/push", headers: J, body: "[".repeat(100_000) + "]".repeat(100_000) }), expect: [400, 422] },
  { name: "push naming a 100 KB push source", config: "open", request: () => ({ method: "POST", path: "/push", headers: J, body: JSON.stringify({ push_source_name: "x".repeat(100_000), df: { user_id: ["u"] } }) }), expect: [422], check: smallerThan(4000) },
  { name: "push with a 100 KB column name", config: "open", request: () => ({ method: "POST", path: "/push", headers: J, body: JSON.stringify({ push_source_name: "events", df: { user_id: ["u"], ["c".repeat(100_000)]: 1 } }) }), expect: [422], check: smallerThan(4000) },
  { name: "push with a webhook-id of 257 characters", config: "open", request: () => ({ method: "POST", path: "/push", headers: { ...J, "webhook-id": "m".repeat(257) }, body: goodPush() }), expect: [422], check: errorField("webhook-id") },
  { name: "push with a webhook-id of 8 KB", config: "open", request: () => ({ method: "POST", path: "/push", headers: { ...J, "webhook-id": "m".repeat(8192) }, body: goodPush() }), expect: [422, 431], check: (a) => a.status === 422 && errorField("webhook-id")(a) },
  { name: "push with a webhook-id of 256 characters", config: "open", request: () => ({ method: "POST", path: "/push", headers: { ...J, "webhook-id": `m${crypto.randomUUID()}`.padEnd(256, "x") }, body: goodPush() }), expect: [200] },
  {
    name: "a 2 MB push of invalid rows answers a small body with issues_total",
    config: "open",
    request: () => ({ method: "POST", path: "/push", headers: J, body: invalidPush2MB() }),
    expect: [422],
    check: (a) => {
      smallerThan(20_000)(a);
      const e = json(a).error;
      if (e.code !== "invalid_rows" || e.issues.length !== 20 || e.issues_total !== INVALID_PUSH_ROWS()) throw new Error(`issues ${e.issues?.length}, issues_total ${e.issues_total}, expected 20 of ${INVALID_PUSH_ROWS()}`);
      if (e.field !== "rows[0].clicks") throw new Error(`field ${e.field}`);
    },
  },
  { name: "get-online-features with an empty body", config: "open", request: () => ({ method: "POST", path: "/get-online-features", headers: J, body: "" }), expect: [400] },
  { name: "get-online-features with malformed JSON", config: "open", request: () => ({ method: "POST", path: "/get-online-features", headers: J, body: "{nope" }), expect: [400] },
  { name: "get-online-features with a null key", config: "open", request: () => ({ method: "POST", path: "/get-online-features", headers: J, body: read(["u0", null], ACT) }), expect: [422], check: errorField("entities.user_id[1]") },
  { name: "get-online-features for feature \"constructor\"", config: "open", request: () => ({ method: "POST", path: "/get-online-features", headers: J, body: read(["u0"], ["activity:constructor"]) }), expect: [422], check: errorField("features[0]") },
  { name: "get-online-features for view \"__proto__\"", config: "open", request: () => ({ method: "POST", path: "/get-online-features", headers: J, body: read(["u0"], ["__proto__:x"]) }), expect: [422], check: errorField("features[0]") },
  { name: "unknown route", config: "open", request: () => ({ method: "GET", path: "/admin/../../etc/passwd" }), expect: [404] },

  // ---- bounded reads (scenario 16) ----
  { name: "get-online-features of 1.2 MB with Content-Length", config: "open", request: () => ({ method: "POST", path: "/get-online-features", headers: J, body: bigRead().slice(0, 1_200_000) }), expect: [413], check: errorCode("body_too_large") },
  { name: "get-online-features declaring 30 MB, body never sent", config: "open", request: () => ({ method: "POST", path: "/get-online-features", headers: J, declaredOnly: 30 * 1024 * 1024 }), expect: [413], only: ["server"] },
  { name: "get-online-features of 2.4 MB chunked", config: "open", request: () => ({ method: "POST", path: "/get-online-features", headers: J, body: bigRead(), chunked: true }), expect: [413], check: errorCode("body_too_large") },
  { name: "push declaring 30 MB, body never sent", config: "open", request: () => ({ method: "POST", path: "/push", headers: J, declaredOnly: 30 * 1024 * 1024 }), expect: [413], only: ["server"] },
  { name: "5,000 entities x 5,000 copies of one ref", config: "open", request: () => ({ method: "POST", path: "/get-online-features", headers: J, body: quadraticRead() }), expect: [413, 422], check: all(messageMatches(/1000/), smallerThan(2000), fast(5000)) },
  { name: "1,001 entities", config: "open", request: () => ({ method: "POST", path: "/get-online-features", headers: J, body: read(Array.from({ length: 1001 }, (_, i) => i), ["activity:clicks"]) }), expect: [422], check: all(errorCode("too_many_entities"), messageMatches(/at most 1000/)) },
  { name: "201 distinct feature refs", config: "open", request: () => ({ method: "POST", path: "/get-online-features", headers: J, body: read(["u0"], WIDE_FEATURES.slice(0, 201).map((f) => `wide:${f}`)) }), expect: [422], check: all(errorCode("too_many_features"), messageMatches(/at most 200/)) },
  { name: "1,000 entities x 101 refs (101,000 values)", config: "open", request: () => ({ method: "POST", path: "/get-online-features", headers: J, body: read(Array.from({ length: 1000 }, (_, i) => i), WIDE_FEATURES.slice(0, 101).map((f) => `wide:${f}`)) }), expect: [422], check: all(errorCode("too_many_values"), messageMatches(/at most 100000/)) },
  { name: "1,000 entities x 100 refs (100,000 values) is served", config: "open", request: () => ({ method: "POST", path: "/get-online-features", headers: J, body: read(Array.from({ length: 1000 }, (_, i) => i), WIDE_FEATURES.slice(0, 100).map((f) => `wide:${f}`)) }), expect: [200], check: fast(10_000) },
  { name: "duplicate refs are answered once, in order of first appearance", config: "open", request: () => ({ method: "POST", path: "/get-online-features", headers: J, body: read(["u0"], ["activity:page", ...Array(150).fill("activity:clicks"), "activity:page", "wide:f1"]) }), expect: [200], check: featureNames(["user_id", "page", "clicks", "f1"]) },

  // ---- exact keys ----
  { name: "numeric key 12345678901234567890 (beyond 2^53)", config: "open", request: () => ({ method: "POST", path: "/get-online-features", headers: J, body: `{"entities":{"user_id":[1,12345678901234567890]},"features":["activity:clicks"]}` }), expect: [422], check: all(errorField("entities.user_id[1]"), messageMatches(/string/)) },
  { name: "numeric key -9007199254740993", config: "open", request: () => ({ method: "POST", path: "/get-online-features", headers: J, body: `{"entities":{"user_id":[-9007199254740993]},"features":["activity:clicks"]}` }), expect: [422], check: errorField("entities.user_id[0]") },
  { name: "numeric key 1e300", config: "open", request: () => ({ method: "POST", path: "/get-online-features", headers: J, body: `{"entities":{"user_id":[1e300]},"features":["activity:clicks"]}` }), expect: [422] },
  { name: "numeric key 9007199254740991 (2^53-1) is served", config: "open", request: () => ({ method: "POST", path: "/get-online-features", headers: J, body: `{"entities":{"user_id":[9007199254740991]},"features":["activity:clicks"]}` }), expect: [200] },
  { name: "key \"12345678901234567890\" as a string is served", config: "open", request: () => ({ method: "POST", path: "/get-online-features", headers: J, body: `{"entities":{"user_id":["12345678901234567890"]},"features":["activity:clicks"]}` }), expect: [200] },
  { name: "string key with a lone high surrogate", config: "open", request: () => ({ method: "POST", path: "/get-online-features", headers: J, body: `{"entities":{"user_id":["ok","a\\ud800"]},"features":["activity:clicks"]}` }), expect: [422], check: all(errorField("entities.user_id[1]"), errorCode("unencodable_key")) },
  { name: "string key with a lone low surrogate", config: "open", request: () => ({ method: "POST", path: "/get-online-features", headers: J, body: `{"entities":{"user_id":["\\udc00abc"]},"features":["activity:clicks"]}` }), expect: [422], check: errorField("entities.user_id[0]") },
  { name: "string key with a valid surrogate pair is served", config: "open", request: () => ({ method: "POST", path: "/get-online-features", headers: J, body: `{"entities":{"user_id":["\\ud83d\\ude00"]},"features":["activity:clicks"]}` }), expect: [200] },

  // ---- Host check on loopback without credentials (DNS rebinding) ----
  { name: "Host evil.example", config: "loopback", request: () => ({ method: "GET", path: "/registry", host: "evil.example" }), expect: [421], check: hostRefused },
  { name: "Host evil.example:8080 on a push", config: "loopback", request: () => ({ method: "POST", path: "/push", headers: J, body: goodPush(), host: "evil.example:8080" }), expect: [421], check: hostRefused },
  { name: "Host localhost.evil.example", config: "loopback", request: () => ({ method: "GET", path: "/metrics", host: "localhost.evil.example" }), expect: [421], check: hostRefused },
  { name: "Host 127.0.0.1.nip.io", config: "loopback", request: () => ({ method: "POST", path: "/get-online-features", headers: J, body: read(["u0"], ACT), host: "127.0.0.1.nip.io" }), expect: [421], check: hostRefused },
  { name: "Host 0.0.0.0", config: "loopback", request: () => ({ method: "GET", path: "/registry", host: "0.0.0.0:8080" }), expect: [421], check: hostRefused },
  { name: "Host 10.0.0.1", config: "loopback", request: () => ({ method: "GET", path: "/registry", host: "10.0.0.1" }), expect: [421], check: hostRefused },
  { name: "Host 127.0.0.256", config: "loopback", request: () => ({ method: "GET", path: "/registry", host: "127.0.0.256" }), expect: [400, 421] },
  { name: "Host localhost@evil.example", config: "loopback", request: () => ({ method: "GET", path: "/registry", host: "localhost@evil.example" }), expect: [400, 421] },
  { name: "Host localhost:8080 is served", config: "loopback", request: () => ({ method: "GET", path: "/registry", host: "localhost:8080" }), expect: [200] },
  { name: "Host LOCALHOST is served", config: "loopback", request: () => ({ method: "GET", path: "/health", host: "LOCALHOST" }), expect: [200] },
  { name: "Host 127.1.2.3:9 is served", config: "loopback", request: () => ({ method: "GET", path: "/health", host: "127.1.2.3:9" }), expect: [200] },
  { name: "Host [::1]:8080 is served", config: "loopback", request: () => ({ method: "POST", path: "/push", headers: J, body: goodPush(), host: "[::1]:8080" }), expect: [200] },

  // ---- CORS only for configured origins ----
  { name: "preflight from the allowed origin", config: "cors", request: () => ({ method: "OPTIONS", path: "/get-online-features", headers: { origin: ALLOWED_ORIGIN, "access-control-request-method": "POST", "access-control-request-headers": "content-type, authorization" } }), expect: [204], check: (a) => { if (a.headers.get("access-control-allow-origin") !== ALLOWED_ORIGIN) throw new Error("no allow-origin for the allowed origin"); } },
  { name: "preflight from http://evil.example", config: "cors", request: () => ({ method: "OPTIONS", path: "/push", headers: { origin: "http://evil.example", "access-control-request-method": "POST" } }), expect: [204, 404], check: (a) => { if (a.headers.has("access-control-allow-origin")) throw new Error("allow-origin for evil.example"); } },
  { name: "text/plain push from http://evil.example with CORS on", config: "cors", request: () => ({ method: "POST", path: "/push", headers: { "content-type": "text/plain", origin: "http://evil.example" }, body: goodPush() }), expect: [415], check: (a) => { if (a.headers.has("access-control-allow-origin")) throw new Error("allow-origin for evil.example"); } },
];

// ---- raw HTTP/1.1 over TCP ----

/**
 * Sends one request on a fresh connection, exactly as described, and reads
 * the answer until the server closes. A server that answers a body it
 * refuses (413) and closes while the client is still sending makes the
 * client's kernel reset the connection, and a reset can discard the answer
 * before it is read: with nothing read, a large body is sent once more,
 * each piece only after the last one's answer had a moment to arrive.
 */
export async function rawHttp(port: number, req: HostileRequest, timeoutMs = 30_000): Promise<Answer> {
  try {
    return await rawHttpOnce(port, req, timeoutMs, 0);
  } catch (e) {
    const reset = (e as { code?: string }).code === "ECONNRESET" || (e as { code?: string }).code === "EPIPE";
    const big = req.chunked || (req.body !== undefined && Buffer.from(req.body as never).length > 65536);
    if (!reset || !big) throw e;
    return await rawHttpOnce(port, req, timeoutMs, 5);
  }
}

function rawHttpOnce(port: number, req: HostileRequest, timeoutMs: number, pauseMs: number): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const body = req.body === undefined ? undefined : Buffer.from(req.body as never);
    const headers: Record<string, string> = { host: req.host ?? `127.0.0.1:${port}`, connection: "close" };
    for (const [k, v] of Object.entries(req.headers ?? {})) headers[k.toLowerCase()] = v;
    if (req.declaredOnly !== undefined) headers["content-length"] = String(req.declaredOnly);
    else if (req.chunked) headers["transfer-encoding"] = "chunked";
    else if (body !== undefined || req.method === "POST") headers["content-length"] = String(body?.length ?? 0);
    const head = `${req.method} ${req.path} HTTP/1.1\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("")}\r\n`;
    const socket = connect(port, "127.0.0.1");
    const received: Buffer[] = [];
    let settled = false;
    const finish = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      const buf = Buffer.concat(received);
      if (!buf.length) return reject(err ?? new Error(`no answer to ${req.method} ${req.path}`));
      try {
        resolve(parseAnswer(buf, performance.now() - t0));
      } catch (e) {
        reject(e);
      }
    };
    const timer = setTimeout(() => finish(new Error(`no answer in ${timeoutMs} ms`)), timeoutMs);
    // Like a careful client (Expect: 100-continue): a large body waits a moment for an early answer (a 413 on the
    // declared length), then goes in pieces, and stops as soon as an answer is in; so that the server's close after
    // an early answer does not reset the connection before the answer is read.
    const answered = () => settled || complete(Buffer.concat(received));
    const write = (data: string | Uint8Array) => new Promise<void>((ok) => socket.write(data, () => ok()));
    socket.on("connect", async () => {
      await write(head);
      if (body === undefined || req.declaredOnly !== undefined) return;
      if (body.length > 65536) await new Promise((r) => setTimeout(r, 100));
      for (let i = 0; i < body.length && !answered(); i += 16384) {
        const piece = body.subarray(i, i + 16384);
        await write(req.chunked ? Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from("\r\n")]) : piece);
        if (pauseMs) await new Promise((r) => setTimeout(r, pauseMs));
      }
      if (req.chunked && !answered()) await write("0\r\n\r\n");
    });
    socket.on("data", (d: Buffer) => {
      received.push(d);
      // A complete answer ends the exchange, even if the server keeps the socket open.
      if (complete(Buffer.concat(received))) finish();
    });
    socket.on("end", () => finish());
    socket.on("close", () => finish());
    socket.on("error", (e) => finish(e)); // a reset after the answer (the server refusing the rest of a body) is fine
  });
}

function splitHead(buf: Buffer): { status: number; headers: Headers; rest: Buffer } | undefined {
  const end = buf.indexOf("\r\n\r\n");
  if (end < 0) return undefined;
  const lines = buf.subarray(0, end).toString("latin1").split("\r\n");
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0])?.[1]);
  const headers = new Headers();
  for (const line of lines.slice(1)) {
    const i = line.indexOf(":");
    if (i > 0) headers.append(line.slice(0, i).trim(), line.slice(i + 1).trim());
  }
  return { status, headers, rest: buf.subarray(end + 4) };
}

function dechunk(buf: Buffer): Buffer | undefined {
  const parts: Buffer[] = [];
  let pos = 0;
  for (;;) {
    const eol = buf.indexOf("\r\n", pos);
    if (eol < 0) return undefined;
    const size = parseInt(buf.subarray(pos, eol).toString("latin1"), 16);
    if (size === 0) return Buffer.concat(parts);
    if (eol + 2 + size + 2 > buf.length) return undefined;
    parts.push(buf.subarray(eol + 2, eol + 2 + size));
    pos = eol + 2 + size + 2;
  }
}

function complete(buf: Buffer): boolean {
  const h = splitHead(buf);
  if (!h) return false;
  if (h.status === 204 || h.status === 304 || h.status < 200) return true;
  if (/chunked/i.test(h.headers.get("transfer-encoding") ?? "")) return dechunk(h.rest) !== undefined;
  const len = h.headers.get("content-length");
  return len !== null && h.rest.length >= Number(len);
}

function parseAnswer(buf: Buffer, ms: number): Answer {
  const h = splitHead(buf);
  if (!h) throw new Error(`not an HTTP answer: ${JSON.stringify(buf.subarray(0, 200).toString("latin1"))}`);
  let body = h.rest;
  if (/chunked/i.test(h.headers.get("transfer-encoding") ?? "")) body = dechunk(body) ?? body;
  else if (h.headers.get("content-length") !== null) body = body.subarray(0, Number(h.headers.get("content-length")));
  return { status: h.status, headers: h.headers, text: body.toString("utf8"), ms };
}

/** Sends a case's request to a fetch handler (`app.request`, a Worker), as a Request. */
export async function viaFetch(fetcher: (req: Request) => Promise<Response> | Response, req: HostileRequest): Promise<Answer> {
  const headers = new Headers(req.headers);
  if (req.host !== undefined) headers.set("host", req.host);
  let body: BodyInit | undefined = req.body as BodyInit | undefined;
  if (req.chunked && req.body !== undefined) {
    const bytes = typeof req.body === "string" ? new TextEncoder().encode(req.body) : req.body;
    body = new ReadableStream({
      start(c) {
        for (let i = 0; i < bytes.length; i += 16384) c.enqueue(bytes.slice(i, i + 16384));
        c.close();
      },
    });
  }
  const t0 = performance.now();
  const res = await fetcher(new Request(`http://localhost${req.path}`, { method: req.method, headers, body, duplex: "half" } as RequestInit));
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, ms: performance.now() - t0 };
}

/** What every answer must satisfy, whatever the case. */
export function commonChecks(a: Answer, config: ConfigName): void {
  for (const s of SECRETS) if (a.text.includes(s) || [...a.headers.values()].some((v) => v.includes(s))) throw new Error("the answer contains a secret");
  if (config !== "cors" && a.headers.has("access-control-allow-origin")) throw new Error("a CORS header without configured origins");
  if (a.status >= 400 && /json/.test(a.headers.get("content-type") ?? "")) {
    const e = JSON.parse(a.text).error;
    if (typeof e?.code !== "string" || typeof e?.message !== "string") throw new Error(`an error answer without code and message: ${a.text.slice(0, 200)}`);
    if (a.text.length > 20_000) throw new Error(`an error answer of ${a.text.length} bytes`);
  }
}
