/**
 * @module
 * The Upstash online store: Redis over Upstash's REST API, with `fetch`
 * only (no TCP, no `node:` import), so it runs on Cloudflare Workers as
 * well as on Node, Bun and Deno.
 *
 * It runs the same Lua scripts, key layout and MetaStore as the Redis store
 * (./layout.ts, ./scripts.ts, ./meta.ts): a write is one EVALSHA per batch,
 * or a few when the request would pass Upstash's 1 MB limit or the batch
 * has more than `maxRowsPerCall` rows (each one is still atomic per entity,
 * and latest-wins per row keeps the result the same); the batch's commit (watermarks, the idempotency key marked done)
 * rides in the last of them, so it never lands before every row did. Reads
 * are one pipeline request of HMGETs. 429 and 5xx answers and network
 * errors are retried with jittered exponential backoff, a bounded number of
 * times, then fail as a retriable `STORE_UNAVAILABLE`. A bad token fails at
 * once with a non-retriable `INVALID_CONFIG`.
 *
 * @example
 * ```ts
 * import { upstashStore } from "freshet/stores/upstash"
 * const online = upstashStore({ url: env.UPSTASH_REDIS_REST_URL, token: env.UPSTASH_REDIS_REST_TOKEN, project: "driver_stats" })
 * ```
 */
import type { Redis, Requester } from "@upstash/redis";
import type { AggregatingStore, CommitMeta, FeatureRow, FeatureValue, OnlineStore, WriteResult } from "../../../core/contracts.ts";
import type { FeatureView } from "../../../core/definitions.ts";
import { FreshetError, storeUnavailable } from "../../../core/errors.ts";
import { decodeRead, type EncodedCommit, type EncodedRow, encodeCommit, encodeRows, readFields, redisLayout } from "./layout.ts";
import { redisMeta } from "./meta.ts";
import { redisTiles } from "./tiles.ts";
import { decodeWriteReply, maxRowsPerCall, WRITE_ROWS, writeScriptArgs } from "./scripts.ts";
import { evalScript, redisError, RedisReplyError, type RedisTransport } from "./transport.ts";

/**
 * Options of {@link upstashStore}. Give `url` and `token`, or a `client`.
 *
 * @example
 * ```ts
 * const opts: UpstashStoreOptions = { url: "https://eu1-example.upstash.io", token: "AX...", project: "driver_stats", retries: 3 }
 * ```
 */
export interface UpstashStoreOptions {
  /** The REST URL (UPSTASH_REDIS_REST_URL). */
  url?: string;
  /** The REST token (UPSTASH_REDIS_REST_TOKEN). */
  token?: string;
  /**
   * An `@upstash/redis` client, used through its own transport instead of
   * `url`/`token`. Its HTTP errors carry no status code, so they are told
   * apart by their message; `url` and `token` give exact status handling.
   */
  client?: Redis;
  /** First segment of every key. Default "freshet". */
  prefix?: string;
  /** Second segment of every key, usually the feature repo's project. Default "default". */
  project?: string;
  /** The store's clock for ttl: a row whose event time + ttl is not after it is not written (expired) and reads as NOT_FOUND. Default `Date.now`. Leases and idempotency keys expire on Redis' clock. */
  now?: () => number;
  /** Retries after a 429, a 5xx or a network error. Default 5. */
  retries?: number;
  /** First backoff delay; it doubles on each retry, with jitter. Default 50 ms. */
  retryBaseMs?: number;
  /** Largest backoff delay, also the cap on a 429's Retry-After. Default 2000 ms. */
  retryMaxMs?: number;
  /** Largest request body; a bigger write is split. Default 1_000_000 (Upstash's 1 MB). */
  maxRequestBytes?: number;
  /**
   * Most rows in one script call (default 5000, as the Redis store): a bigger write is split, in
   * order, with its commit in the last call, so that one call never holds the database for long
   * (the script spends about 7-14 µs per row). Small rows reach this before `maxRequestBytes`.
   */
  maxRowsPerCall?: number;
  /** Time limit of one HTTP request. Default 10_000 ms. */
  requestTimeoutMs?: number;
}

/**
 * What {@link upstashStore} returns: an OnlineStore whose `ping` and `close` are always there.
 *
 * @example
 * ```ts
 * const store: UpstashOnlineStore = upstashStore({ url, token })
 * await store.ping()
 * ```
 */
export interface UpstashOnlineStore extends OnlineStore, AggregatingStore {
  /** PING; rejects with STORE_UNAVAILABLE when Upstash cannot be reached. */
  ping(): Promise<void>;
  /** Marks the store closed (HTTP holds no connection to release). */
  close(): Promise<void>;
}

const PLUGIN = "upstash";

/** One command's answer, as Upstash gives it. */
interface Reply {
  result?: unknown;
  error?: string;
}

/** What one HTTP attempt gave: an answer, or a reason to try again. */
type Attempt = { body: unknown } | { retry: string; cause?: unknown; afterMs?: number };

/** Sends one request body to `/` (a command) or `/pipeline`. Throws a FreshetError when retrying cannot help. */
type Wire = (path: "" | "pipeline", body: unknown[]) => Promise<Attempt>;

/** The REST API over fetch, with the HTTP status at hand. */
function fetchWire(url: string, token: string, timeoutMs: number): Wire {
  const base = url.replace(/\/+$/, "");
  let syncToken = "";
  return async (path, body) => {
    let res: Response;
    try {
      const headers: Record<string, string> = { Authorization: `Bearer ${token}`, "Content-Type": "application/json" };
      // Read-your-writes across Upstash replicas, as @upstash/redis does it.
      if (syncToken) headers["upstash-sync-token"] = syncToken;
      res = await fetch(path ? `${base}/${path}` : base, { method: "POST", headers, body: JSON.stringify(body), signal: AbortSignal.timeout(timeoutMs) });
    } catch (e) {
      return { retry: `request failed: ${(e as Error)?.message ?? String(e)}`, cause: e };
    }
    syncToken = res.headers.get("upstash-sync-token") ?? syncToken;
    const text = await res.text().catch(() => "");
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch { /* a proxy's HTML page, or nothing */ }
    const said = typeof (parsed as Reply)?.error === "string" ? `: ${(parsed as Reply).error}` : "";
    if (res.status === 401 || res.status === 403) {
      throw new FreshetError("INVALID_CONFIG", `Upstash refused the token (HTTP ${res.status}${said}): check token (UPSTASH_REDIS_REST_TOKEN) and url`, { plugin: PLUGIN, retriable: false });
    }
    if (res.status === 429 || res.status >= 500) {
      const ra = Number(res.headers.get("retry-after"));
      return { retry: `HTTP ${res.status}${said}`, afterMs: Number.isFinite(ra) && ra > 0 ? ra * 1000 : undefined };
    }
    if (parsed === undefined) return { retry: `HTTP ${res.status} with a body that is not JSON` };
    // 400 carries a Redis error for the command: the caller decides.
    if (res.ok || (res.status === 400 && path === "")) return { body: parsed };
    throw new FreshetError("INTERNAL", `Upstash answered HTTP ${res.status}${said}`, { plugin: PLUGIN, retriable: false });
  };
}

/** The transport of an `@upstash/redis` client. Its errors have no status, so they are sorted by message. */
function requesterWire(requester: Requester): Wire {
  return async (path, body) => {
    try {
      return { body: await requester.request({ path: path ? [path] : undefined, body }) };
    } catch (e) {
      // "<error>, command was: <the whole command>": keep the error only.
      const msg = String((e as Error)?.message ?? e).split(", command was:")[0].slice(0, 300);
      if (/^(Unauthorized|WRONGPASS|NOAUTH)/i.test(msg)) {
        throw new FreshetError("INVALID_CONFIG", `Upstash refused the token (${msg}): check the client's token and url`, { plugin: PLUGIN, retriable: false, cause: e });
      }
      // A Redis error reply ("ERR ...", "NOSCRIPT ...") for a single command, unless it is a rate limit (429).
      if (path === "" && /^[A-Z]{2,} /.test(msg) && !isRateLimit(msg)) return { body: { error: msg } };
      return { retry: msg, cause: e };
    }
  };
}

/** Upstash's answers to a 429 ("ERR max daily request limit exceeded", ...), not its request size limit. */
const isRateLimit = (msg: string) => /limit exceeded/i.test(msg) && !/request size/i.test(msg);

/** The transport inside an `@upstash/redis` client (a protected field, so reached at runtime). */
function requesterOf(client: Redis): Requester {
  const r = (client as unknown as { client?: Requester }).client;
  if (!r || typeof r.request !== "function") {
    throw new FreshetError("INVALID_CONFIG", "client is not an @upstash/redis Redis client: pass one made with new Redis({ url, token }), or pass url and token", { plugin: PLUGIN });
  }
  return r;
}

/** UTF-8 bytes of `JSON.stringify(s)`. */
function jsonBytes(s: string): number {
  let n = 2;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += c === 34 || c === 92 ? 2 : c < 0x20 ? 6 : 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 4;
      i++;
    } else n += c >= 0xd800 && c < 0xe000 ? 6 : 3; // a lone surrogate is escaped as \\uXXXX
  }
  return n;
}

/** Splits encoded rows into runs of at most `maxRows` whose script call stays under `budget` bytes (exact for the EVALSHA body, header and trailer aside). */
function chunkRows(rows: EncodedRow[], budget: number, maxRows: number): EncodedRow[][] {
  const chunks: EncodedRow[][] = [];
  let cur: EncodedRow[] = [];
  let size = 0;
  let fields: string[] | undefined;
  for (const r of rows) {
    let bytes = jsonBytes(r.key) + jsonBytes(r.ts) + jsonBytes(r.ct) + 3;
    for (const v of r.values) bytes += jsonBytes(v) + 1;
    // Where the fields change, writeScriptArgs starts a segment: count, fields, rows.
    const header = fields && sameFields(fields, r.fields) ? 0 : r.fields.reduce((n, f) => n + jsonBytes(f) + 1, 32);
    if (cur.length > 0 && (size + bytes + header > budget || cur.length >= maxRows)) {
      chunks.push(cur);
      cur = [];
      size = 0;
      fields = undefined;
      bytes += r.fields.reduce((n, f) => n + jsonBytes(f) + 1, 32);
    } else bytes += header;
    size += bytes;
    fields = r.fields;
    cur.push(r);
  }
  if (cur.length) chunks.push(cur);
  return chunks;
}

function sameFields(a: string[], b: string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The bytes a commit adds to a script call: its keys and its trailer. */
function commitBytes(c: EncodedCommit | undefined): number {
  if (!c) return 0;
  let n = 16;
  for (let i = 0; i < c.watermarks.length; i++) n += jsonBytes(c.watermarkKeys[i]) + jsonBytes(c.watermarks[i]) + 2;
  if (c.done) n += jsonBytes(c.done.key) + jsonBytes(c.done.fingerprint) + jsonBytes(c.done.ttlMs) + 3;
  return n;
}

/**
 * An online store on Upstash Redis, over its REST API.
 *
 * @example
 * ```ts
 * const store = upstashStore({ url: env.UPSTASH_REDIS_REST_URL, token: env.UPSTASH_REDIS_REST_TOKEN, project: "driver_stats" })
 * const { written, stale, expired } = await store.write(view, rows)
 * const [driver] = await store.read(view, ["driver_id=1001"], ["conv_rate"])
 * ```
 */
export function upstashStore(opts: UpstashStoreOptions = {}): UpstashOnlineStore {
  if (!opts.client && (!opts.url || !opts.token)) {
    throw new FreshetError("INVALID_CONFIG", "upstashStore needs url and token (UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN), or an @upstash/redis client", { plugin: PLUGIN });
  }
  if (opts.url && !/^https?:\/\/[^\s/]/.test(opts.url)) {
    throw new FreshetError("INVALID_CONFIG", `url ${JSON.stringify(opts.url)} is not an http(s) URL: use the REST URL, e.g. https://eu1-example.upstash.io`, { plugin: PLUGIN });
  }
  const layout = redisLayout({ prefix: opts.prefix, project: opts.project, plugin: PLUGIN });
  const now = opts.now ?? Date.now;
  const retries = Math.max(0, opts.retries ?? 5);
  const baseMs = opts.retryBaseMs ?? 50;
  const maxMs = opts.retryMaxMs ?? 2000;
  const maxRequestBytes = opts.maxRequestBytes ?? 1_000_000;
  const rowsPerCall = maxRowsPerCall(opts.maxRowsPerCall, PLUGIN);
  let wire: Wire | undefined;
  let closed = false;

  const send = async (path: "" | "pipeline", body: unknown[], definition?: string): Promise<unknown> => {
    if (closed) throw new FreshetError("STORE_UNAVAILABLE", "the store is closed", { plugin: PLUGIN, definition, retriable: false });
    wire ??= opts.client ? requesterWire(requesterOf(opts.client)) : fetchWire(opts.url!, opts.token!, opts.requestTimeoutMs ?? 10_000);
    for (let attempt = 0; ; attempt++) {
      const a = await wire(path, body);
      if ("body" in a) return a.body;
      if (attempt >= retries) {
        throw new FreshetError("STORE_UNAVAILABLE", `store unavailable: ${a.retry} (after ${attempt + 1} attempts)`, { plugin: PLUGIN, definition, retriable: true, cause: a.cause });
      }
      // Exponential backoff with "equal jitter": half fixed, half random.
      const cap = Math.min(maxMs, baseMs * 2 ** attempt);
      const delay = Math.min(maxMs, Math.max(a.afterMs ?? 0, cap / 2 + Math.random() * cap / 2));
      await new Promise((r) => setTimeout(r, delay));
    }
  };

  /** One command: its reply, or a RedisReplyError for an error reply. */
  const transport: RedisTransport = {
    async send(command, args, definition) {
      const r = (await send("", [command].concat(args), definition)) as Reply;
      if (r === null || typeof r !== "object") throw storeUnavailable(PLUGIN, new Error(`unexpected answer ${JSON.stringify(r)}`), definition);
      if (r.error !== undefined && r.error !== null) throw new RedisReplyError(r.error);
      return r.result;
    },
  };

  /** A pipeline, split so that no request passes the size limit; answers in order. */
  const pipeline = async (cmds: string[][], definition?: string): Promise<unknown[]> => {
    const batches: string[][][] = [];
    let cur: string[][] = [];
    let size = 2;
    for (const c of cmds) {
      const bytes = c.reduce((n, a) => n + jsonBytes(a) + 1, 3);
      if (cur.length && size + bytes > maxRequestBytes - 1000) {
        batches.push(cur);
        cur = [];
        size = 2;
      }
      cur.push(c);
      size += bytes;
    }
    if (cur.length) batches.push(cur);
    const answers = await Promise.all(batches.map((b) => send("pipeline", b, definition)));
    const out: unknown[] = [];
    for (const a of answers) {
      if (!Array.isArray(a)) throw storeUnavailable(PLUGIN, new Error("a pipeline answer was not an array"), definition);
      for (const r of a as Reply[]) {
        if (r?.error) throw redisError(PLUGIN, new RedisReplyError(r.error), definition);
        out.push(r?.result);
      }
    }
    return out;
  };

  // What an EVAL of the write script adds besides the rows (the fallback sends the source).
  const writeOverhead = jsonBytes(WRITE_ROWS.source) + 200;

  const tiles = redisTiles({ transport, layout, plugin: PLUGIN, now });

  return {
    name: "upstash",
    meta: redisMeta({ transport, layout, plugin: PLUGIN, now }),
    // The fold script's request carries the merged tiles (at least the deltas' size, more for lists): a third of a request.
    maxFoldBytes: Math.floor(maxRequestBytes / 3),
    foldTiles: (view, deltas, commit) => tiles.foldTiles(view, deltas, commit),
    getAppliedMark: (key) => tiles.getAppliedMark(key),
    clearTiles: (view, range) => tiles.clearTiles(view, range),
    async write(view: FeatureView, rows: FeatureRow[], commit?: CommitMeta): Promise<WriteResult> {
      const encodedCommit = encodeCommit(layout, commit, PLUGIN, view.name);
      const out: WriteResult = { written: 0, stale: 0, expired: 0 };
      if (rows.length === 0 && !encodedCommit) return out;
      const t = now();
      const chunks = rows.length ? chunkRows(encodeRows(layout, view, rows, PLUGIN), maxRequestBytes - writeOverhead - commitBytes(encodedCommit), rowsPerCall) : [[]];
      // In order: a later chunk may hold a newer row for the same entity,
      // and the commit rides in the last one, once every row has landed.
      for (let i = 0; i < chunks.length; i++) {
        const { keys, args } = writeScriptArgs(chunks[i], view.ttlMs, t, i === chunks.length - 1 ? encodedCommit : undefined);
        let reply: unknown;
        try {
          reply = await evalScript(transport, WRITE_ROWS, keys, args, view.name);
        } catch (e) {
          throw redisError(PLUGIN, e, view.name);
        }
        const counts = decodeWriteReply(reply);
        if (!counts) throw storeUnavailable(PLUGIN, new Error(`unexpected write answer ${JSON.stringify(reply)}`), view.name);
        out.written += counts.written;
        out.stale += counts.stale;
        out.expired += counts.expired;
      }
      return out;
    },
    async read(view: FeatureView, entityKeys: string[], features: string[]): Promise<Record<string, FeatureValue>[]> {
      if (view.aggregations?.length) return tiles.read(view, entityKeys, features);
      if (entityKeys.length === 0) return [];
      const fields = readFields(features);
      const replies = await pipeline(entityKeys.map((ek) => ["HMGET", layout.entityKey(view.name, ek), ...fields]), view.name);
      const t = now();
      return replies.map((r) => decodeRead(view, r as (string | null)[] | null, features, t));
    },
    async ping() {
      try {
        await transport.send("PING", []);
      } catch (e) {
        throw redisError(PLUGIN, e);
      }
    },
    close() {
      closed = true;
      return Promise.resolve();
    },
  };
}
