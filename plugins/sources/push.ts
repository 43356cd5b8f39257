/**
 * @module
 * The HTTP interface on Hono, the same app on every runtime: Feast's
 * `POST /push` and `POST /get-online-features`, plus `GET /health`,
 * `GET /metrics` and `GET /registry`. Optional Standard Webhooks signatures,
 * idempotency by `webhook-id`, and a body-size limit.
 */
import { Hono, type Context } from "hono";
import { bodyLimit } from "hono/body-limit";
import { Webhook } from "standardwebhooks";
import { type BatchResult, entityKeyOf, isRetriable, type Processor, type RawRecord, type RecordIssue, type Row, type WriteTarget } from "../../core/index.ts";

/** Options of {@link pushApp}. */
export interface PushAppOptions {
  processor: Processor;
  /** Standard Webhooks secret (`whsec_...`). When set, every push must be signed. */
  webhookSecret?: string;
  /** How long a `webhook-id` is remembered once its effect is durable, in ms. Default 24 h, well past the 5-minute signature window. */
  idempotencyTtlMs?: number;
  /**
   * How long a `webhook-id` stays pending while its first delivery runs, in
   * ms. A concurrent delivery meanwhile gets 409. When the process dies
   * mid-request the key expires after this, and a retry is processed.
   * Default 30 s.
   */
  pendingTtlMs?: number;
  /** Largest accepted body, in bytes. Default 5 MiB. */
  maxBodyBytes?: number;
  /** Retry-After, in seconds, on a 503. Default 1. */
  retryAfterSeconds?: number;
}

/** The JSON body of every error answer. */
export interface ErrorBody {
  error: { code: string; message: string; field?: string; issues?: { field?: string; message: string; reason: string; row: number; view?: string }[] };
}

const TARGETS: WriteTarget[] = ["online", "offline", "online_and_offline"];

/**
 * Builds the Hono app. Serve it with an adapter (`adapters/node.ts`, ...), or
 * mount it in your own Hono app.
 *
 * @example
 * ```ts
 * const app = pushApp({ processor, webhookSecret: env.WEBHOOK_SECRET })
 * export default app // Bun, Deno and Workers take a fetch handler
 * ```
 */
export function pushApp(opts: PushAppOptions): Hono {
  const { processor } = opts;
  const { registry, metrics } = processor;
  const store = processor.online;
  const webhook = opts.webhookSecret ? new Webhook(opts.webhookSecret) : undefined;
  const idemTtl = opts.idempotencyTtlMs ?? 86_400_000;
  const pendingTtl = opts.pendingTtlMs ?? 30_000;
  const retryAfter = String(opts.retryAfterSeconds ?? 1);
  const maxBody = opts.maxBodyBytes ?? 5 * 1024 * 1024;

  const app = new Hono();
  const fail = (c: Context, status: 400 | 401 | 404 | 409 | 413 | 422 | 500 | 503, code: string, message: string, field?: string, extra?: Partial<ErrorBody["error"]>) => {
    if (status === 503 || status === 409) c.header("Retry-After", retryAfter);
    return c.json({ error: { code, message, ...(field ? { field } : {}), ...extra } } satisfies ErrorBody, status);
  };

  app.use("*", async (c, next) => {
    await next();
    metrics.inc("freshet_http_requests_total", { route: c.req.routePath, status: String(c.res.status) });
  });
  app.onError((err, c) => {
    if (isRetriable(err)) return fail(c, 503, "store_unavailable", (err as Error).message);
    return fail(c, 500, "internal", (err as Error)?.message ?? String(err));
  });
  app.notFound((c) => fail(c, 404, "not_found", `no route ${c.req.method} ${c.req.path}; try POST /push, POST /get-online-features, GET /health, /metrics or /registry`));

  app.post(
    "/push",
    bodyLimit({ maxSize: maxBody, onError: (c) => fail(c, 413, "body_too_large", `the body is larger than ${maxBody} bytes; split the push into smaller requests`, "body") }),
    async (c) => {
      const text = await c.req.text();
      const id = c.req.header("webhook-id");
      if (webhook) {
        try {
          webhook.verify(text, {
            "webhook-id": id ?? "",
            "webhook-timestamp": c.req.header("webhook-timestamp") ?? "",
            "webhook-signature": c.req.header("webhook-signature") ?? "",
          }, { jsonParse: false }); // a signed but malformed body is a 400 below, not a bad signature
        } catch (e) {
          return fail(c, 401, "invalid_signature", `webhook signature check failed: ${(e as Error).message}`, "webhook-signature");
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
      if (to && to !== "online" && !processor.offline) return fail(c, 422, "invalid_request", `to "${to}" needs an offline store, and this deployment has none; push with to "online"`, "to");
      if (to && to !== "offline" && !processor.online) return fail(c, 422, "invalid_request", `to "${to}" needs an online store, and this deployment has none; push with to "offline"`, "to");

      const requestId = id ?? crypto.randomUUID();
      const records: RawRecord[] = rows.map((value, index) => ({ value, position: { kind: "push", requestId, index } }));
      const rejectRows = (rejected: RecordIssue[]) => {
        const issues = rejected.map((i) => issueJson(i, parsed.columnar));
        return fail(c, 422, "invalid_rows", `${issues.length} invalid row(s); first: ${issues[0].field ?? "row"}: ${issues[0].message}`, issues[0].field, { issues });
      };
      const ok = (result: BatchResult) =>
        c.json({ status: "ok", request_id: requestId, records: result.records, written: result.written, stale: result.stale, expired: result.expired, late: result.late, views: result.views });
      if (id === undefined) {
        const prepared = await processor.prepare(source, records, { to, onInvalid: "reject" });
        if (prepared.rejected) return rejectRows(prepared.rejected);
        return ok(await processor.commit(prepared));
      }

      // Idempotency: pending while this delivery runs, done in the same atomic step as its write.
      if (id.length > MAX_WEBHOOK_ID) return fail(c, 422, "invalid_request", `webhook-id is ${id.length} characters long; at most ${MAX_WEBHOOK_ID} are accepted`, "webhook-id");
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

  app.post("/get-online-features", async (c) => {
    let body: unknown;
    try {
      body = await c.req.json();
    } catch (e) {
      return fail(c, 400, "invalid_json", `the body is not valid JSON: ${(e as Error).message}`, "body");
    }
    if (!store) return fail(c, 500, "no_store", "no online store is configured");
    const req = parseGetOnline(body, registry.views);
    if ("error" in req) return fail(c, 422, "invalid_request", req.error.message, req.error.field);
    const featureNames = [...req.joinKeys];
    const results: { values: unknown[]; statuses: string[]; event_timestamps: string[] }[] = req.joinKeys.map((k) => ({
      values: req.entities[k],
      statuses: req.entities[k].map(() => "PRESENT"),
      event_timestamps: req.entities[k].map(() => EPOCH),
    }));
    const byView = new Map<string, string[]>();
    for (const [view, feature] of req.features) byView.set(view, [...(byView.get(view) ?? []), feature]);
    const n = req.rows;
    const reads = await Promise.all([...byView].map(async ([viewName, features]) => {
      const view = registry.view(viewName);
      const keys: string[] = [];
      for (let i = 0; i < n; i++) {
        const row: Row = {};
        for (const k of view.joinKeys) row[k] = req.entities[k][i];
        keys.push(entityKey(view.joinKeys, row));
      }
      return { viewName, features, values: await store.read(view, keys, features) };
    }));
    for (const { viewName, features, values } of reads) {
      for (const f of features) {
        featureNames.push(req.fullFeatureNames ? `${viewName}__${f}` : f);
        results.push({
          values: values.map((r) => r[f].value),
          statuses: values.map((r) => r[f].status),
          event_timestamps: values.map((r) => (r[f].eventTime === undefined ? EPOCH : new Date(r[f].eventTime!).toISOString().replace(".000Z", "Z"))),
        });
      }
    }
    return c.json({ metadata: { feature_names: featureNames }, results });
  });

  app.get("/health", async (c) => {
    try {
      await store?.ping?.();
      return c.json({ status: "ok", project: registry.project, store: store?.name ?? null });
    } catch (e) {
      return fail(c, 503, "store_unavailable", `store ${store?.name} is down: ${(e as Error).message}`);
    }
  });
  app.get("/metrics", (c) => c.text(metrics.render(), 200, { "content-type": "text/plain; version=0.0.4" }));
  app.get("/registry", (c) => c.json(registry.describe()));
  return app;
}

const EPOCH = "1970-01-01T00:00:00Z";

/** The longest accepted `webhook-id` (Standard Webhooks ids are about 30 characters). */
const MAX_WEBHOOK_ID = 256;

/** SHA-256 of a request body, hex: the fingerprint that tells a retry from a reused id. */
async function sha256(text: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  let hex = "";
  for (const b of digest) hex += b.toString(16).padStart(2, "0");
  return hex;
}

function entityKey(joinKeys: string[], row: Row): string {
  const ek = entityKeyOf(joinKeys, row);
  return "key" in ek ? ek.key : ""; // parseGetOnline checked every join key is present
}

type Parsed<T> = T | { error: { message: string; field: string } };

function parsePush(body: unknown, sources: ReadonlyMap<string, { kind: string }>): Parsed<{ source: string; rows: Row[]; to?: WriteTarget; columnar: boolean }> {
  const err = (field: string, message: string) => ({ error: { field, message } });
  if (!isObject(body)) return err("body", 'the body must be a JSON object: {"push_source_name": ..., "df": {...}, "to": "online"}');
  const name = body.push_source_name;
  if (typeof name !== "string" || !name) return err("push_source_name", "push_source_name is required and must be a string");
  const src = sources.get(name);
  if (!src) return err("push_source_name", `unknown push source "${name}"; known: ${[...sources.values()].filter((s) => s.kind === "push").map((s) => (s as { name?: string }).name).join(", ") || "none"}`);
  if (src.kind !== "push") return err("push_source_name", `source "${name}" is a ${src.kind} source, not a push source`);
  const to = body.to;
  if (to !== undefined && !TARGETS.includes(to as WriteTarget)) return err("to", `to must be one of ${TARGETS.join(", ")}`);
  const df = body.df ?? body.rows;
  if (Array.isArray(df)) {
    for (let i = 0; i < df.length; i++) if (!isObject(df[i])) return err(`${body.df ? "df" : "rows"}[${i}]`, "each row must be a JSON object");
    if (df.length === 0) return err(body.df ? "df" : "rows", "no rows to push");
    return { source: name, rows: df as Row[], to: to as WriteTarget | undefined, columnar: false };
  }
  if (!isObject(df)) return err("df", 'df is required: columns of values, {"driver_id": [1001], "conv_rate": [0.5], ...}, or a rows array');
  const cols = Object.keys(df);
  if (cols.length === 0) return err("df", "df has no columns");
  let n = -1;
  for (const col of cols) {
    const values = df[col];
    if (!Array.isArray(values)) return err(`df.${col}`, `column "${col}" must be an array of values`);
    if (n === -1) n = values.length;
    else if (values.length !== n) return err(`df.${col}`, `column "${col}" has ${values.length} values but "${cols[0]}" has ${n}; every column needs one value per row`);
  }
  if (n === 0) return err("df", "no rows to push");
  const rows: Row[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const row: Row = {};
    for (const col of cols) row[col] = (df[col] as unknown[])[i];
    rows[i] = row;
  }
  return { source: name, rows, to: to as WriteTarget | undefined, columnar: true };
}

function issueJson(i: RecordIssue, columnar: boolean) {
  const field = i.path ? (columnar ? `df.${i.path}[${i.index}]` : `rows[${i.index}].${i.path}`) : (columnar ? `df[${i.index}]` : `rows[${i.index}]`);
  return { field, message: i.message, reason: i.reason, row: i.index, view: i.view };
}

function parseGetOnline(body: unknown, views: ReadonlyMap<string, { joinKeys: string[]; features: string[] }>): Parsed<{
  entities: Record<string, unknown[]>;
  joinKeys: string[];
  features: [string, string][];
  rows: number;
  fullFeatureNames: boolean;
}> {
  const err = (field: string, message: string) => ({ error: { field, message } });
  if (!isObject(body)) return err("body", 'the body must be {"entities": {...}, "features": ["view:feature", ...]}');
  if (body.feature_service !== undefined) return err("feature_service", "feature services are not supported; list features as \"view:feature\"");
  const entities = body.entities;
  if (!isObject(entities) || Object.keys(entities).length === 0) return err("entities", 'entities is required, e.g. {"driver_id": [1001, 1002]}');
  let rows = -1;
  for (const [k, v] of Object.entries(entities)) {
    if (!Array.isArray(v)) return err(`entities.${k}`, `entities.${k} must be an array of values`);
    if (v.some((x) => x === null || typeof x === "object")) return err(`entities.${k}`, `entities.${k} must hold strings or numbers`);
    if (rows === -1) rows = v.length;
    else if (v.length !== rows) return err(`entities.${k}`, "every entities column needs the same number of values");
  }
  const features = body.features;
  if (!Array.isArray(features) || features.length === 0) return err("features", 'features is required, e.g. ["driver_hourly_stats:conv_rate"]');
  const parsed: [string, string][] = [];
  const joinKeys = new Set<string>();
  for (let i = 0; i < features.length; i++) {
    const f = features[i];
    const m = typeof f === "string" ? /^([^:]+):(.+)$/.exec(f) : null;
    if (!m) return err(`features[${i}]`, `features[${i}] must read "view:feature"`);
    const view = views.get(m[1]);
    if (!view) return err(`features[${i}]`, `unknown feature view "${m[1]}"; known: ${[...views.keys()].join(", ")}`);
    if (!view.features.includes(m[2])) return err(`features[${i}]`, `view "${m[1]}" has no feature "${m[2]}"; it has ${view.features.join(", ")}`);
    for (const k of view.joinKeys) {
      if (!(k in entities)) return err("entities", `view "${m[1]}" needs join key "${k}" in entities`);
      joinKeys.add(k);
    }
    parsed.push([m[1], m[2]]);
  }
  return { entities: entities as Record<string, unknown[]>, joinKeys: [...joinKeys], features: parsed, rows, fullFeatureNames: body.full_feature_names === true };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

