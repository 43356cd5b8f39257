/**
 * @module
 * The HTTP interface on Hono, the same app on every runtime: Feast's
 * `POST /push` and `POST /get-online-features`, plus `GET /health`,
 * `GET /metrics`, `GET /registry`, `GET /openapi.json` and the status page
 * (`GET /`, `GET /status`). Bearer tokens for writing and for
 * reading, optional Standard Webhooks signatures, idempotency by
 * `webhook-id`, JSON-only bodies, a Host check against DNS rebinding, and
 * bounds on every request and error answer.
 */
import { Hono, type Context, type MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { cors } from "hono/cors";
import { Webhook } from "standardwebhooks";
import { openApiDocument } from "./push/openapi.ts";
import { check, GetOnlineFeaturesRequest, PushRequest } from "./push/schemas.ts";
import { STATUS_PAGE, statusOf } from "./push/status.ts";
import { type BatchResult, type DescribeOptions, entityKeyOf, FreshetError, isRetriable, outageLog, type Processor, type RawRecord, type RecordIssue, type Row, servedFeatures, type WriteTarget } from "../../core/index.ts";

/** Options of {@link pushApp}. */
export interface PushAppOptions {
  /** The pipeline pushes go through. */
  processor: Processor;
  /**
   * Standard Webhooks secret (`whsec_...`). When set, every push must be
   * signed, unless it carries the write token.
   */
  webhookSecret?: string;
  /**
   * Bearer token for `POST /push` (`Authorization: Bearer <token>`). When set,
   * a push needs it, or a valid Standard Webhooks signature when
   * `webhookSecret` is set too. Compared in constant time.
   */
  writeToken?: string;
  /**
   * Bearer token for `POST /get-online-features`, `GET /registry` and
   * `GET /metrics`. The write token does not grant reads (unless both are
   * the same). `/health` stays open.
   */
  readToken?: string;
  /**
   * Refuse (421) every request whose `Host` is not a loopback name
   * (`localhost`, `127.x.x.x`, `[::1]`, any port): DNS rebinding protection
   * for a server on loopback without credentials.
   */
  loopbackOnly?: boolean;
  /** Origins allowed to call the app from a browser (CORS). Default none: no CORS headers at all. */
  corsOrigins?: string[];
  /** How long a `webhook-id` is remembered once its effect is durable, in ms. Default 24 h, well past the 5-minute signature window. */
  idempotencyTtlMs?: number;
  /**
   * How long a `webhook-id` stays pending while its first delivery runs, in
   * ms. A concurrent delivery meanwhile gets 409. When the process dies
   * mid-request the key expires after this, and a retry is processed.
   * Default 30 s.
   */
  pendingTtlMs?: number;
  /** Largest accepted push body, in bytes. Default 5 MiB. */
  maxBodyBytes?: number;
  /** Largest accepted get-online-features body, in bytes. Default 1 MiB. */
  maxReadBodyBytes?: number;
  /** Most entities (rows) per get-online-features request. Default 1000. */
  maxEntities?: number;
  /** Most feature refs per get-online-features request (before duplicates collapse). Default 200. */
  maxFeatureRefs?: number;
  /** Most values per get-online-features answer: entities x distinct feature refs. Default 100,000. */
  maxFeatureValues?: number;
  /** How `GET /registry` describes the repo: `{ cwd }` shows file paths relative to it (else an absolute path shows its file name only). */
  describeOptions?: DescribeOptions;
  /** Retry-After, in seconds, on a 503. Default 1. */
  retryAfterSeconds?: number;
  /** Where each 5xx answer is logged, once, with its request id and cause. Default console. */
  logger?: { error(msg: string): void; warn?(msg: string): void; info?(msg: string): void };
}

/** The JSON body of every error answer. */
export interface ErrorBody {
  /** What went wrong: a stable code, a message, and the field when one is at fault. */
  error: {
    code: string;
    message: string;
    field?: string;
    /** At most 20 of them; `issues_total` says how many there were. */
    issues?: { field?: string; message: string; reason: string; row: number; view?: string }[];
    issues_total?: number;
    request_id?: string;
  };
}

const TARGETS: WriteTarget[] = ["online", "offline", "online_and_offline"];

/** Error answers list at most this many issues, plus the total. */
const MAX_ISSUES = 20;
const MAX_MESSAGE = 1000;
const MAX_ISSUE_MESSAGE = 300;
const MAX_FIELD = 200;

type Status = 400 | 401 | 404 | 409 | 413 | 415 | 421 | 422 | 500 | 503;

/**
 * Builds the Hono app. Serve it with an adapter (`adapters/node.ts`, ...), or
 * mount it in your own Hono app.
 *
 * @example
 * ```ts
 * const app = pushApp({ processor, writeToken: env.WRITE_TOKEN, readToken: env.READ_TOKEN })
 * export default app // Bun, Deno and Workers take a fetch handler
 * ```
 */
export function pushApp(opts: PushAppOptions): Hono {
  const { processor } = opts;
  const { registry, metrics } = processor;
  const store = processor.online;
  const secret = (name: string, value: string | undefined) => {
    if (value !== undefined && (typeof value !== "string" || value.trim() === "")) {
      throw new FreshetError("INVALID_CONFIG", `${name} is empty: give it a value, or leave it out`, { plugin: "push", field: name });
    }
    return value;
  };
  const size = (name: string, value: number | undefined, fallback: number) => {
    if (value === undefined) return fallback;
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value <= 0) {
      throw new FreshetError("INVALID_CONFIG", `${name} must be a positive whole number, got ${String(value)}`, { plugin: "push", field: name });
    }
    return value;
  };
  const webhookSecret = secret("webhookSecret", opts.webhookSecret);
  const writeToken = secret("writeToken", opts.writeToken);
  const readToken = secret("readToken", opts.readToken);
  const webhook = webhookSecret ? new Webhook(webhookSecret) : undefined;
  const idemTtl = opts.idempotencyTtlMs ?? 86_400_000;
  const pendingTtl = opts.pendingTtlMs ?? 30_000;
  const retryAfter = String(opts.retryAfterSeconds ?? 1);
  const maxBody = size("maxBodyBytes", opts.maxBodyBytes, 5 * 1024 * 1024);
  const maxReadBody = size("maxReadBodyBytes", opts.maxReadBodyBytes, 1024 * 1024);
  const limits: ReadLimits = {
    entities: size("maxEntities", opts.maxEntities, 1000),
    refs: size("maxFeatureRefs", opts.maxFeatureRefs, 200),
    values: size("maxFeatureValues", opts.maxFeatureValues, 100_000),
  };
  const logger = opts.logger ?? console;
  const redact = redactor([writeToken, readToken, webhookSecret, webhookSecret?.replace(/^whsec_/, "")]);
  // Digests of the tokens, computed on first use (a Worker builds the app inside a request).
  const digests = new Map<string, Promise<Uint8Array>>();
  const digestOf = (token: string) => {
    let d = digests.get(token);
    if (!d) digests.set(token, (d = sha256Bytes(token)));
    return d;
  };
  const bearerMatches = async (c: Context, token: string) => {
    const given = bearer(c.req.header("authorization"));
    const [a, b] = await Promise.all([sha256Bytes(given ?? ""), digestOf(token)]);
    let diff = given === undefined ? 1 : 0;
    for (let i = 0; i < b.length; i++) diff |= a[i] ^ b[i];
    return diff === 0;
  };
  // Each request's id rides on its context (a property, not a WeakMap entry: no ephemeron for the GC per request).
  const requestIds = {
    get: (c: Context): string | undefined => (c as WithRequestId)[REQUEST_ID],
    set: (c: Context, id: string) => void ((c as WithRequestId)[REQUEST_ID] = id),
  };
  // The get-online-features refs already parsed and checked against the registry.
  const refs = new Map<string, FeatureRef>();
  const outage = outageLog({
    error: (m) => logger.error(m),
    warn: (m) => (logger.warn ?? logger.error).call(logger, m),
    info: (m) => (logger.info ?? logger.error).call(logger, m),
  }, "[http]", "pushes and reads are answered 503 with Retry-After");

  const app = new Hono();
  const fail = (c: Context, status: Status, code: string, message: string, field?: string, extra?: Partial<ErrorBody["error"]>, cause?: unknown) => {
    if (status === 503 || status === 409) c.header("Retry-After", retryAfter);
    const msg = truncate(redact(message), MAX_MESSAGE);
    if (status === 503 && code === "store_unavailable") {
      // An outage is said once (and when it ends), not once per request; the first request id is in that line.
      outage.failed(new Error(redact(cause === undefined ? msg : causeText(cause))), `first seen by request ${requestIds.get(c) ?? "-"}: ${c.req.method} ${truncate(c.req.path, MAX_FIELD)}`);
    } else if (status >= 500) {
      const rid = requestIds.get(c) ?? "-";
      const why = cause === undefined ? msg : redact(causeText(cause));
      logger.error(`[freshet] [http] request ${rid}: ${c.req.method} ${truncate(c.req.path, MAX_FIELD)} answered ${status} ${code}: ${truncate(why, 4 * MAX_MESSAGE)}`);
    }
    const error: ErrorBody["error"] = { code, message: msg, ...(field ? { field: truncate(field, MAX_FIELD) } : {}), ...extra };
    if (status >= 500) error.request_id = requestIds.get(c);
    return c.json({ error } satisfies ErrorBody, status);
  };
  const unauthorized = (c: Context, scope: "write" | "read", alternative = "") => {
    const given = c.req.header("authorization") !== undefined;
    c.header("WWW-Authenticate", given ? 'Bearer realm="freshet", error="invalid_token"' : 'Bearer realm="freshet"');
    const what = `${c.req.method} ${truncate(c.req.path, MAX_FIELD)}`;
    const flag = scope === "write" ? "--write-token, FRESHET_WRITE_TOKEN or the WRITE_TOKEN secret of a Worker" : "--read-token, FRESHET_READ_TOKEN or the READ_TOKEN secret of a Worker";
    return fail(c, 401, "unauthorized", `${what} needs the ${scope} token${alternative}: send the authorization header "Authorization: Bearer <token>" with the server's ${flag}${given ? "; the token sent is not it" : ""}`, "authorization");
  };

  app.use("*", async (c, next) => {
    const started = performance.now();
    const incoming = c.req.header("x-request-id");
    const rid = incoming !== undefined && /^[\w.:@-]{1,128}$/.test(incoming) ? incoming : crypto.randomUUID();
    requestIds.set(c, rid);
    c.header("x-request-id", rid);
    await next();
    if (c.res.status < 300 && outage.down && STORE_ROUTES.has(c.req.routePath)) outage.ok();
    // The route's template, never the raw path (a scan of random paths must not grow the series).
    const labels = { route: routeLabel(c), method: METHODS.has(c.req.method) ? c.req.method : "other", status: String(c.res.status) };
    metrics.inc("freshet_http_requests_total", labels);
    metrics.observe("freshet_http_request_duration_seconds", labels, (performance.now() - started) / 1000);
  });
  if (opts.loopbackOnly) {
    app.use("*", async (c, next) => {
      const host = c.req.header("host") ?? new URL(c.req.url).host;
      if (isLoopbackHost(host)) return await next();
      return fail(c, 421, "host_not_allowed", `the host header "${truncate(host, 100)}" is not a loopback name; this server listens on loopback without credentials and only answers requests for localhost, 127.0.0.1 or [::1] (protection against DNS rebinding). To expose it, give it a write/read token or a webhook secret`, "host");
    });
  }
  if (opts.corsOrigins?.length) {
    app.use("*", cors({
      origin: [...opts.corsOrigins],
      allowMethods: ["GET", "POST", "OPTIONS"],
      allowHeaders: ["content-type", "authorization", "webhook-id", "webhook-timestamp", "webhook-signature", "x-request-id"],
      exposeHeaders: ["x-request-id", "retry-after"],
      maxAge: 600,
    }));
  }
  app.onError((err, c) => {
    if (isRetriable(err)) return fail(c, 503, "store_unavailable", (err as Error).message, undefined, undefined, err);
    if (err instanceof FreshetError && err.code === "TOO_LARGE") return fail(c, 413, "too_large", err.message, "df");
    return fail(c, 500, "internal", "internal error; the cause is in the server log under this request id", undefined, undefined, err);
  });
  app.notFound((c) => fail(c, 404, "not_found", `no route ${c.req.method} ${c.req.path}; try POST /push, POST /get-online-features, GET /health, /metrics, /registry, /status, /openapi.json or / (the status page)`));

  const jsonOnly: MiddlewareHandler = async (c, next) => {
    const type = c.req.header("content-type");
    if (isJsonType(type)) return await next();
    return fail(c, 415, "unsupported_media_type", `${c.req.method} ${c.req.path} takes JSON: send the content-type header "application/json"${type === undefined ? " (none was sent)" : ` (got "${truncate(type, 100)}")`}`, "content-type");
  };
  const limit = (bytes: number, hint: string): MiddlewareHandler => {
    const tooLarge = (c: Context) => fail(c, 413, "body_too_large", `the body is larger than ${bytes} bytes; ${hint}`, "body");
    const streamed = bodyLimit({ maxSize: bytes, onError: tooLarge });
    return async (c, next) => {
      // A declared length is checked from the header alone: hono's bodyLimit first asks
      // the request for its body stream, which on Node makes @hono/node-server build a
      // whole web Request (and lose its direct body read). Chunked bodies are counted as they stream.
      const length = c.req.header("content-length");
      if (length !== undefined && c.req.header("transfer-encoding") === undefined && /^\d{1,15}$/.test(length)) {
        return Number(length) > bytes ? tooLarge(c) : await next();
      }
      return await streamed(c, next);
    };
  };
  const readAuth: MiddlewareHandler = async (c, next) => {
    if (readToken === undefined || (await bearerMatches(c, readToken))) return next();
    return unauthorized(c, "read");
  };
  // Set by pushAuth when the write token authorized the push, so that no signature is needed.
  const byToken = new WeakSet<Context>();
  const pushAuth: MiddlewareHandler = async (c, next) => {
    if (writeToken !== undefined) {
      if (await bearerMatches(c, writeToken)) {
        byToken.add(c);
        return next();
      }
      if (!webhook || c.req.header("webhook-signature") === undefined) return unauthorized(c, "write", webhook ? " or a Standard Webhooks signature" : "");
    } else if (webhook && c.req.header("webhook-signature") === undefined) {
      return fail(c, 401, "invalid_signature", "webhook signature check failed: this server takes signed pushes only (Standard Webhooks): the webhook-signature header is missing", "webhook-signature");
    }
    return next();
  };
  const webhookIdBound: MiddlewareHandler = async (c, next) => {
    const id = c.req.header("webhook-id");
    if (id !== undefined && id.length > MAX_WEBHOOK_ID) return fail(c, 422, "invalid_request", `webhook-id is ${id.length} characters long; at most ${MAX_WEBHOOK_ID} are accepted`, "webhook-id");
    return await next();
  };

  app.post(
    "/push",
    pushAuth,
    jsonOnly,
    webhookIdBound,
    limit(maxBody, "split the push into smaller requests"),
    async (c) => {
      const text = await c.req.text();
      const id = c.req.header("webhook-id");
      if (webhook && !byToken.has(c)) {
        try {
          webhook.verify(text, {
            "webhook-id": id ?? "",
            "webhook-timestamp": c.req.header("webhook-timestamp") ?? "",
            "webhook-signature": c.req.header("webhook-signature") ?? "",
          }, { jsonParse: false }); // a signed but malformed body is a 400 below, not a bad signature
        } catch (e) {
          if (writeToken !== undefined) c.header("WWW-Authenticate", 'Bearer realm="freshet"');
          return fail(c, 401, "invalid_signature", `webhook signature check failed: ${(e as Error).message}${writeToken !== undefined ? "; or send the write token as Authorization: Bearer <token>" : ""}`, "webhook-signature");
        }
      }
      if (!text.trim()) return fail(c, 400, "empty_body", 'the body is empty; send {"push_source_name": ..., "df": {...}}', "body");
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch (e) {
        return fail(c, 400, "invalid_json", `the body is not valid JSON: ${(e as Error).message}`, "body");
      }
      const parsed = parsePush(body, registry.sources);
      if ("error" in parsed) return fail(c, 422, "invalid_request", parsed.error.message, parsed.error.field);
      const { source, rows, to } = parsed;
      const given = isObject(body) && body.to !== undefined;
      if (to !== "online" && !processor.offline) return fail(c, 422, "invalid_request", `to "${to}" needs an offline store, and this deployment has none; push with to "online"`, "to");
      if (to !== "offline" && !processor.online) return fail(c, 422, "invalid_request", `${given ? `to "${to}"` : 'a push without "to" goes online (as in Feast), which'} needs an online store, and this deployment has none; push with to "offline"`, "to");

      const requestId = id ?? requestIds.get(c) ?? crypto.randomUUID();
      const records: RawRecord[] = rows.map((value, index) => ({ value, position: { kind: "push", requestId, index } }));
      const rejectRows = (rejected: RecordIssue[]) => {
        const shown = rejected.slice(0, MAX_ISSUES).map((i) => issueJson(i, parsed.columnar));
        const first = shown[0];
        const more = rejected.length > shown.length ? ` (the first ${shown.length} are listed)` : "";
        return fail(c, 422, "invalid_rows", `${rejected.length} invalid row(s)${more}; first: ${first.field ?? "row"}: ${first.message}`, first.field, { issues: shown, issues_total: rejected.length });
      };
      const ok = (result: BatchResult) =>
        c.json({ status: "ok", request_id: requestId, records: result.records, written: result.written, stale: result.stale, expired: result.expired, late: result.late, views: result.views });
      if (id === undefined) {
        const prepared = await processor.prepare(source, records, { to, onInvalid: "reject" });
        if (prepared.rejected) return rejectRows(prepared.rejected);
        return ok(await processor.commit(prepared));
      }

      // Idempotency: pending while this delivery runs, done in the same atomic step as its write.
      if (!store) return fail(c, 500, "no_store", "idempotency by webhook-id needs an online store");
      const key = `push:${registry.project}:${id}`;
      const fingerprint = await sha256(text);
      const state = await store.meta.begin(key, fingerprint, pendingTtl);
      if (state.state !== "started") {
        if (state.fingerprint !== fingerprint) {
          return fail(c, 422, "webhook_id_reused", `webhook-id ${id} was already used for a different body; give each distinct message its own id`, "webhook-id");
        }
        if (state.state === "pending") {
          return fail(c, 409, "in_progress", `webhook-id ${id} is being processed (or its delivery died less than ${Math.ceil(pendingTtl / 1000)} s ago); retry later`, "webhook-id");
        }
        metrics.inc("freshet_records_total", { source, view: "", outcome: "duplicate" }, rows.length);
        return c.json({ status: "duplicate", webhook_id: id, records: rows.length });
      }
      try {
        const prepared = await processor.prepare(source, records, { to, onInvalid: "reject" });
        if (prepared.rejected) {
          await store.meta.abandon(key, state.token).catch(() => {});
          return rejectRows(prepared.rejected);
        }
        return ok(await processor.commit(prepared, { idempotency: { key, fingerprint, ttlMs: idemTtl } }));
      } catch (e) {
        // Released so that the client's retry is processed; if this fails too, the pending key expires.
        await store.meta.abandon(key, state.token).catch(() => {});
        throw e;
      }
    },
  );

  app.post(
    "/get-online-features",
    readAuth,
    jsonOnly,
    limit(maxReadBody, "ask for fewer entities or features per request"),
    async (c) => {
      const text = await c.req.text();
      if (!text.trim()) return fail(c, 400, "empty_body", 'the body is empty; send {"entities": {...}, "features": ["view:feature", ...]}', "body");
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch (e) {
        return fail(c, 400, "invalid_json", `the body is not valid JSON: ${(e as Error).message}`, "body");
      }
      if (!store) return fail(c, 500, "no_store", "no online store is configured");
      const req = parseGetOnline(body, registry.views, registry.featureServices, limits, refs);
      if ("error" in req) return fail(c, 422, req.error.code ?? "invalid_request", req.error.message, req.error.field);
      const n = req.rows;
      const byView = new Map<string, string[]>();
      for (const [view, feature] of req.features) {
        const list = byView.get(view);
        if (list) list.push(feature);
        else byView.set(view, [feature]);
      }
      const reads = new Map(await Promise.all([...byView].map(async ([viewName, features]) => {
        const view = registry.view(viewName);
        const keys: string[] = new Array(n);
        for (let i = 0; i < n; i++) {
          const row: Row = {};
          for (const k of view.joinKeys) row[k] = req.entities[k][i];
          keys[i] = entityKey(view.joinKeys, row);
        }
        return [viewName, await store.read(view, keys, features)] as const;
      })));
      const featureNames = [...req.joinKeys];
      const results: { values: unknown[]; statuses: string[]; event_timestamps: string[] }[] = req.joinKeys.map((k) => ({
        values: req.entities[k],
        statuses: req.entities[k].map(() => "PRESENT"),
        event_timestamps: req.entities[k].map(() => EPOCH),
      }));
      // Each distinct ref once, in the order of its first appearance in the request. The features of
      // one row share its event time: its ISO text is made once, not once per feature.
      let lastTime: number | undefined, lastIso = EPOCH;
      for (const [viewName, f] of req.features) {
        const rows = reads.get(viewName)!;
        featureNames.push(req.fullFeatureNames ? `${viewName}__${f}` : f);
        const values: unknown[] = new Array(n), statuses: string[] = new Array(n), times: string[] = new Array(n);
        for (let i = 0; i < n; i++) {
          const v = rows[i][f];
          values[i] = v.value;
          statuses[i] = v.status;
          if (v.eventTime === undefined) times[i] = EPOCH;
          else {
            if (v.eventTime !== lastTime) [lastTime, lastIso] = [v.eventTime, new Date(v.eventTime).toISOString().replace(".000Z", "Z")];
            times[i] = lastIso;
          }
        }
        results.push({ values, statuses, event_timestamps: times });
      }
      return c.json({ metadata: { feature_names: featureNames }, results });
    },
  );

  app.get("/health", async (c) => {
    // A load balancer's probe gets its answer within a second, whatever the store is doing.
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        store?.ping?.(),
        new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer to a ping within ${HEALTH_TIMEOUT_MS} ms`)), HEALTH_TIMEOUT_MS))),
      ]);
      return c.json({ status: "ok", project: registry.project, store: store?.name ?? null });
    } catch (e) {
      return fail(c, 503, "store_unavailable", `store ${store?.name} is down: ${(e as Error).message}`, undefined, undefined, e);
    } finally {
      clearTimeout(timer);
    }
  });
  app.get("/metrics", readAuth, (c) => c.text(metrics.render(), 200, { "content-type": "text/plain; version=0.0.4" }));
  let description: unknown;
  app.get("/registry", readAuth, (c) => c.json((description ??= registry.describe(opts.describeOptions)) as object));
  app.get("/status", readAuth, (c) => c.json(statusOf(processor)));
  // The page holds no data (it fetches /status with the read token), so it is served to anyone; no script or style from elsewhere may run in it.
  app.get("/", (c) => c.html(STATUS_PAGE, 200, { "content-security-policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'", "cache-control": "no-cache" }));
  let openapi: unknown;
  app.get("/openapi.json", (c) => c.json((openapi ??= openApiDocument({ project: registry.project, readToken: readToken !== undefined, writeToken: writeToken !== undefined, webhook: webhook !== undefined })) as object));
  return app;
}

const EPOCH = "1970-01-01T00:00:00Z";

const REQUEST_ID = Symbol("freshet.requestId");
type WithRequestId = Context & { [REQUEST_ID]?: string };

const METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);

/** The matched route's template (`/push`), or `unmatched` for a request no route took (404, or refused before routing). */
function routeLabel(c: Context): string {
  const route = c.req.routePath;
  return route && route !== "*" && route !== "/*" ? route : "unmatched";
}

/** The routes whose success shows the store is reachable. */
const STORE_ROUTES = new Set(["/push", "/get-online-features", "/health"]);

/** How long GET /health waits for the store's ping. */
const HEALTH_TIMEOUT_MS = 800;

/** The longest accepted `webhook-id` (Standard Webhooks ids are about 30 characters). */
const MAX_WEBHOOK_ID = 256;

const encoder = new TextEncoder();

async function sha256Bytes(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(text)));
}

/** SHA-256 of a request body, hex: the fingerprint that tells a retry from a reused id. */
async function sha256(text: string): Promise<string> {
  let hex = "";
  for (const b of await sha256Bytes(text)) hex += b.toString(16).padStart(2, "0");
  return hex;
}

/** The token of an `Authorization: Bearer <token>` header. */
function bearer(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const m = /^Bearer[ \t]+([^ \t]+)[ \t]*$/i.exec(header);
  return m ? m[1] : undefined;
}

/** `application/json`, with or without parameters, and `application/<anything>+json`. */
function isJsonType(type: string | undefined): boolean {
  if (type === undefined) return false;
  const media = type.split(";", 1)[0].trim().toLowerCase();
  return media === "application/json" || /^application\/[a-z0-9!#$&^_.-]+\+json$/.test(media);
}

/** `localhost`, `127.x.x.x` or `[::1]`, with an optional port. */
function isLoopbackHost(host: string): boolean {
  const m = /^(localhost|127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})|\[::1\])(?::(\d{1,5}))?$/.exec(host.toLowerCase());
  if (!m) return false;
  if (m[2] !== undefined && [m[2], m[3], m[4]].some((o) => Number(o) > 255)) return false;
  return m[5] === undefined || Number(m[5]) <= 65535;
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}... (${text.length - max} more characters)`;
}

/** Removes configured secrets, bearer tokens and URL credentials from a text bound for an answer or a log line. */
function redactor(secrets: (string | undefined)[]): (text: string) => string {
  const known = secrets.filter((s): s is string => typeof s === "string" && s.length >= 4).sort((a, b) => b.length - a.length);
  return (text) => {
    let out = String(text);
    for (const s of known) if (out.includes(s)) out = out.split(s).join("[redacted]");
    return out
      .replace(/\b(Bearer|Basic)[ \t]+[A-Za-z0-9._~+/=-]+/gi, "$1 [redacted]")
      .replace(/\b([a-z][a-z0-9+.-]*:\/\/)[^\s/@:]*:[^\s/@]*@/gi, "$1[redacted]@");
  };
}

/** An error's message and the messages of its causes, on one line. */
function causeText(e: unknown): string {
  const parts: string[] = [];
  let cur: unknown = e;
  for (let depth = 0; cur !== undefined && cur !== null && depth < 4; depth++) {
    const text = cur instanceof Error ? `${cur.name}: ${cur.message}` : String(cur);
    parts.push(text);
    cur = cur instanceof Error ? (cur as { cause?: unknown }).cause : undefined;
  }
  return parts.join(" <- caused by ").replace(/\s*\n\s*/g, " ");
}

function entityKey(joinKeys: string[], row: Row): string {
  const ek = entityKeyOf(joinKeys, row);
  return "key" in ek ? ek.key : ""; // parseGetOnline checked every join key is present and encodable
}

type Parsed<T> = T | { error: { message: string; field: string; code?: string } };

function parsePush(body: unknown, sources: ReadonlyMap<string, { kind: string }>): Parsed<{ source: string; rows: Row[]; to: WriteTarget; columnar: boolean }> {
  const err = (field: string, message: string) => ({ error: { field, message } });
  // The shape, by the schema /openapi.json is made of; the data is read from the body as sent (a record's output leaves out keys such as "constructor").
  if (!isObject(body)) return err("body", 'the body must be a JSON object: {"push_source_name": ..., "df": {...}, "to": "online"}'); // valibot's object takes an array
  const checked = check(PushRequest, body);
  if ("error" in checked) return checked;
  const { push_source_name: name, to } = checked.value;
  const src = sources.get(name);
  if (!src) return err("push_source_name", `unknown push source "${truncate(name, 100)}"; known: ${[...sources.values()].filter((s) => s.kind === "push").map((s) => (s as { name?: string }).name).join(", ") || "none"}`);
  if (src.kind !== "push") return err("push_source_name", `source "${name}" is a ${src.kind} source, not a push source`);
  const df = body.df ?? body.rows;
  if (Array.isArray(df)) {
    if (df.length === 0) return err(body.df ? "df" : "rows", "no rows to push");
    return { source: name, rows: df as Row[], to, columnar: false };
  }
  if (!isObject(df)) return err("df", 'df is required: columns of values, {"driver_id": [1001], "conv_rate": [0.5], ...}, or a rows array');
  const cols = Object.keys(df);
  if (cols.length === 0) return err("df", "df has no columns");
  // As pandas builds a DataFrame: a scalar beside list columns repeats on every row, and all scalars make one row.
  let n = -1;
  let first = "";
  for (const col of cols) {
    const values = df[col];
    if (!Array.isArray(values)) {
      // The schema checks this too, except for the keys valibot leaves out ("constructor", "__proto__").
      if (isObject(values)) return err(`df.${truncate(col, 100)}`, `column "${truncate(col, 100)}" must be an array of values (or one scalar value for every row), not an object`);
      continue;
    }
    if (n === -1) [n, first] = [values.length, col];
    else if (values.length !== n) return err(`df.${truncate(col, 100)}`, `column "${truncate(col, 100)}" has ${values.length} values but "${truncate(first, 100)}" has ${n}; every column needs one value per row (or one scalar for all rows)`);
  }
  if (n === -1) n = 1;
  if (n === 0) return err("df", "no rows to push");
  const rows: Row[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const row: Row = {};
    for (const col of cols) {
      const values = df[col];
      row[col] = Array.isArray(values) ? values[i] : values;
    }
    rows[i] = row;
  }
  return { source: name, rows, to: to as WriteTarget, columnar: true };
}

function issueJson(i: RecordIssue, columnar: boolean) {
  const path = i.path === undefined ? undefined : truncate(i.path, 100);
  const field = path ? (columnar ? `df.${path}[${i.index}]` : `rows[${i.index}].${path}`) : (columnar ? `df[${i.index}]` : `rows[${i.index}]`);
  return { field, message: truncate(i.message, MAX_ISSUE_MESSAGE), reason: i.reason, row: i.index, view: i.view };
}

/** A feature ref the registry serves, parsed once. */
interface FeatureRef {
  view: string;
  feature: string;
  joinKeys: string[];
}

interface ReadLimits {
  entities: number;
  refs: number;
  values: number;
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const wellFormed = (s: string): boolean => {
  const f = (s as { isWellFormed?: () => boolean }).isWellFormed;
  return f ? f.call(s) : !LONE_SURROGATE.test(s);
};

function parseGetOnline(
  body: unknown,
  views: ReadonlyMap<string, { joinKeys: string[]; features: string[]; aggregations?: readonly { name: string }[] }>,
  services: ReadonlyMap<string, { features: readonly string[] }>,
  limits: ReadLimits,
  refs: Map<string, FeatureRef>,
): Parsed<{
  entities: Record<string, unknown[]>;
  joinKeys: string[];
  /** Distinct [view, feature] pairs, in the order of their first appearance. */
  features: [string, string][];
  rows: number;
  fullFeatureNames: boolean;
}> {
  const err = (field: string, message: string, code?: string) => ({ error: { field, message, code } });
  if (!isObject(body)) return err("body", 'the body must be {"entities": {...}, "features": ["view:feature", ...]}');
  const checked = check(GetOnlineFeaturesRequest, body);
  if ("error" in checked) return checked;
  const entities = body.entities;
  if (!isObject(entities) || Object.keys(entities).length === 0) return err("entities", 'entities is required, e.g. {"driver_id": [1001, 1002]}');
  // Sizes first, before any work that grows with them.
  let rows = -1;
  for (const [k, v] of Object.entries(entities)) {
    const name = truncate(k, 100);
    if (!Array.isArray(v)) return err(`entities.${name}`, `entities.${name} must be an array of values`);
    if (v.length > limits.entities) return err(`entities.${name}`, `entities.${name} has ${v.length} values; at most ${limits.entities} entities are accepted per request (maxEntities): split the request`, "too_many_entities");
    if (rows === -1) rows = v.length;
    else if (v.length !== rows) return err(`entities.${name}`, "every entities column needs the same number of values");
  }
  let features = body.features;
  let field = "features";
  if (body.feature_service !== undefined) {
    if (features !== undefined) return err("feature_service", 'give either features or feature_service, not both');
    const fs = body.feature_service;
    if (typeof fs !== "string" || !fs) return err("feature_service", "feature_service must be the name of a feature service");
    const service = services.get(fs);
    if (!service) return err("feature_service", `unknown feature service "${truncate(fs, 100)}"; known: ${[...services.keys()].join(", ") || "none"}`);
    [features, field] = [service.features, "feature_service"];
  }
  if (!Array.isArray(features) || features.length === 0) return err("features", 'features is required, e.g. ["driver_hourly_stats:conv_rate"], or a feature_service name');
  if (features.length > limits.refs) return err(field, `${field} lists ${features.length} refs; at most ${limits.refs} are accepted per request (maxFeatureRefs): split the request, and list each ref once`, "too_many_features");
  const parsed: [string, string][] = [];
  const seen = new Set<string>();
  const joinKeys = new Set<string>();
  for (let i = 0; i < features.length; i++) {
    const f = features[i];
    if (typeof f === "string" && seen.has(f)) continue; // a duplicate ref is answered once
    let ref = typeof f === "string" ? refs.get(f) : undefined;
    if (!ref) {
      const m = typeof f === "string" ? /^([^:]+):(.+)$/.exec(f) : null;
      if (!m) return err(`features[${i}]`, `features[${i}] must read "view:feature"`);
      const view = views.get(m[1]);
      if (!view) return err(`features[${i}]`, `unknown feature view "${truncate(m[1], 100)}"; known: ${[...views.keys()].join(", ")}`);
      const served = servedFeatures(view);
      if (!served.includes(m[2])) return err(`features[${i}]`, `view "${m[1]}" has no feature "${truncate(m[2], 100)}"; it has ${served.join(", ")}`);
      // Only refs the registry serves are remembered: the cache is bounded by the repo, not by requests.
      refs.set(f as string, (ref = { view: m[1], feature: m[2], joinKeys: view.joinKeys }));
    }
    for (const k of ref.joinKeys) {
      if (!(k in entities)) return err("entities", `view "${ref.view}" needs join key "${k}" in entities`);
      joinKeys.add(k);
    }
    seen.add(f as string);
    parsed.push([ref.view, ref.feature]);
  }
  if (rows * parsed.length > limits.values) {
    return err(field, `${rows} entities x ${parsed.length} features = ${rows * parsed.length} values; at most ${limits.values} are answered per request (maxFeatureValues): split the request`, "too_many_values");
  }
  for (const [k, v] of Object.entries(entities)) {
    const name = truncate(k, 100);
    const values = v as unknown[];
    for (let i = 0; i < values.length; i++) {
      const x = values[i];
      if (typeof x === "number") {
        if (Number.isInteger(x) && !Number.isSafeInteger(x)) {
          return err(`entities.${name}[${i}]`, `entities.${name}[${i}] is a number beyond ±2^53-1 (${x}), which JSON numbers cannot hold exactly, so it could name another entity: send the key as a string, e.g. "12345678901234567890"`, "unsafe_integer");
        }
      } else if (typeof x === "string") {
        if (!wellFormed(x)) return err(`entities.${name}[${i}]`, `entities.${name}[${i}] holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape), which cannot be encoded as a key: send valid Unicode`, "unencodable_key");
      } else if (x === null || typeof x === "object") {
        return err(`entities.${name}[${i}]`, `entities.${name} must hold strings or numbers; entities.${name}[${i}] is ${x === null ? "null" : Array.isArray(x) ? "an array" : "an object"}`);
      }
    }
  }
  return { entities: entities as Record<string, unknown[]>, joinKeys: [...joinKeys], features: parsed, rows, fullFeatureNames: checked.value.full_feature_names };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}
