/**
 * @module
 * The Redis online store, over TCP with ioredis (Node, Bun and Deno).
 *
 * A write is one EVALSHA per batch, whatever its size: a Lua script keeps
 * the newest row per entity atomically, even under concurrent writers (see
 * core/redis-layout.ts for the keys and scripts, shared with Upstash). A
 * read is one pipelined round trip of HMGETs. Claims, checkpoints and
 * leases are scripts too, fenced on Redis' own clock.
 *
 * It fails fast: while Redis is unreachable, calls reject within about
 * `connectTimeoutMs` with a retriable `STORE_UNAVAILABLE` instead of
 * queueing, and the client reconnects by itself in the background.
 *
 * @example
 * ```ts
 * import { redisStore } from "freshet/stores/redis"
 * const online = redisStore({ url: "redis://127.0.0.1:6379", project: "driver_stats" })
 * ```
 */
import type { Redis, RedisOptions } from "ioredis";
import {
  ACQUIRE_LEASE,
  assertDecimal,
  CLAIM,
  decodeLease,
  decodeLeaseList,
  decodeRead,
  encodeRows,
  LIST_LEASES,
  type LuaScript,
  readFields,
  redisLayout,
  RELEASE_LEASE,
  SET_CHECKPOINT,
  WRITE_ROWS,
  writeScriptArgs,
} from "../../core/redis-layout.ts";
import { FreshetError, storeUnavailable } from "../../core/errors.ts";
import type { FeatureRow, FeatureValue, MetaStore, OnlineStore, WriteResult } from "../../core/contracts.ts";
import type { FeatureView } from "../../core/definitions.ts";

/**
 * Options of {@link redisStore}.
 *
 * @example
 * ```ts
 * const opts: RedisStoreOptions = { url: "redis://:secret@redis.internal:6379/0", project: "driver_stats" }
 * ```
 */
export interface RedisStoreOptions {
  /** `redis://[:password@]host:port[/db]` or `rediss://` for TLS. Default `redis://127.0.0.1:6379`. */
  url?: string;
  /**
   * A client of your own. It is used as it is (its queueing and retry
   * settings stay yours) and is not closed by `close()`.
   */
  client?: Redis;
  /** First segment of every key. Default "freshet"; `"{freshet}"` puts all keys in one Cluster slot. */
  prefix?: string;
  /** Second segment of every key, usually the feature repo's project. Default "default". */
  project?: string;
  /** The clock for ttl on read (OUTSIDE_MAX_AGE). Default `Date.now`. Leases use Redis' clock. */
  now?: () => number;
  /** How long a call waits for a connection before it fails with STORE_UNAVAILABLE. Default 1000 ms. */
  connectTimeoutMs?: number;
  /** How long a command may take before it fails with STORE_UNAVAILABLE. Default 5000 ms. */
  commandTimeoutMs?: number;
  /** More ioredis options (TLS, username, ...), applied after Freshet's. */
  redisOptions?: RedisOptions;
}

/**
 * What {@link redisStore} returns: an OnlineStore whose `ping` and `close` are always there.
 *
 * @example
 * ```ts
 * const store: RedisOnlineStore = redisStore()
 * await store.ping()
 * ```
 */
export interface RedisOnlineStore extends OnlineStore {
  /** PING; rejects with STORE_UNAVAILABLE when Redis cannot be reached. */
  ping(): Promise<void>;
  /** Quits the client the store created (a client passed in `client` stays open). */
  close(): Promise<void>;
}

const PLUGIN = "redis";

// Reply errors that mean "not now" rather than "never".
const RETRIABLE_REPLIES = new Set(["BUSY", "LOADING", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "OOM", "NOREPLICAS", "UNBLOCKED"]);
const AUTH_REPLIES = new Set(["NOAUTH", "WRONGPASS", "NOPERM"]);

/** Maps an ioredis error to a FreshetError: reply errors by their code, anything else (connection) as STORE_UNAVAILABLE. */
function toFreshetError(e: unknown, definition?: string): FreshetError {
  if (e instanceof FreshetError) return e;
  const err = e as { name?: string; message?: string } | undefined;
  if (err?.name === "ReplyError" && typeof err.message === "string") {
    const code = err.message.split(" ", 1)[0];
    if (AUTH_REPLIES.has(code)) {
      return new FreshetError("INVALID_CONFIG", `Redis refused the credentials (${err.message}): check the password or user in the url`, { plugin: PLUGIN, definition, retriable: false, cause: e });
    }
    if (!RETRIABLE_REPLIES.has(code)) {
      return new FreshetError("INTERNAL", `Redis replied with an error: ${err.message}`, { plugin: PLUGIN, definition, retriable: false, cause: e });
    }
  }
  return storeUnavailable(PLUGIN, e, definition);
}

/**
 * An online store on Redis. The client is created on first use.
 *
 * @example
 * ```ts
 * const store = redisStore({ url: process.env.REDIS_URL, project: "driver_stats" })
 * const { written, stale } = await store.write(view, rows)
 * const [driver] = await store.read(view, ["driver_id=1001"], ["conv_rate"])
 * await store.close()
 * ```
 */
export function redisStore(opts: RedisStoreOptions = {}): RedisOnlineStore {
  const layout = redisLayout({ prefix: opts.prefix, project: opts.project });
  const now = opts.now ?? Date.now;
  const connectTimeoutMs = opts.connectTimeoutMs ?? 1000;
  const commandTimeoutMs = opts.commandTimeoutMs ?? 5000;
  const url = opts.url ?? "redis://127.0.0.1:6379";
  const owned = !opts.client;
  let client: Redis | undefined = opts.client;
  let creating: Promise<Redis> | undefined;
  let lastError: unknown;
  let readyWait: Promise<void> | undefined;
  let closed = false;

  const create = async (): Promise<Redis> => {
    const { Redis: IORedis } = await import("ioredis");
    const c = new IORedis(url, {
      lazyConnect: true,
      // Fail fast: nothing queues while disconnected, and a command in
      // flight when the connection drops is rejected, not resent (a resent
      // claim could report a duplicate for a request it made itself).
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      connectTimeout: connectTimeoutMs,
      commandTimeout: commandTimeoutMs,
      // Keep reconnecting in the background, at most a second apart.
      retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 5), 1000),
      ...opts.redisOptions,
    });
    c.on("error", (e: unknown) => void (lastError = e));
    return c;
  };

  const ready = async (): Promise<Redis> => {
    if (closed) throw new FreshetError("STORE_UNAVAILABLE", "the store is closed", { plugin: PLUGIN, retriable: false });
    const c = client ?? (client = await (creating ??= create()));
    if (c.status === "ready") return c;
    if (c.status === "wait" || c.status === "end") c.connect().catch((e: unknown) => void (lastError = e));
    // One "ready" listener however many calls wait; each call has its own deadline.
    const wait = readyWait ??= new Promise<void>((resolve) => c.once("ready", () => {
      readyWait = undefined;
      resolve();
    }));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const why = lastError instanceof Error ? `: ${lastError.message}` : "";
        reject(new FreshetError("STORE_UNAVAILABLE", `store unavailable: no connection to ${redact(url)} within ${connectTimeoutMs} ms${why}`, { plugin: PLUGIN, retriable: true, cause: lastError }));
      }, connectTimeoutMs);
    });
    try {
      await Promise.race([wait, deadline]);
    } finally {
      clearTimeout(timer);
    }
    return c;
  };

  /** EVALSHA, then EVAL when the server does not know the script (first use, restart, SCRIPT FLUSH). */
  const run = async (c: Redis, s: LuaScript, keys: string[], args: string[]): Promise<unknown> => {
    // One array argument, never a spread: a batch can have 100k+ arguments.
    const rest = ([keys.length] as (string | number)[]).concat(keys, args);
    try {
      return await c.call("EVALSHA", [s.sha].concat(rest as string[]));
    } catch (e) {
      if (!(e instanceof Error) || !e.message.startsWith("NOSCRIPT")) throw e;
      return await c.call("EVAL", [s.source].concat(rest as string[]));
    }
  };

  const call = async <T>(definition: string | undefined, f: (c: Redis) => Promise<T>): Promise<T> => {
    try {
      return await f(await ready());
    } catch (e) {
      throw toFreshetError(e, definition);
    }
  };

  const meta: MetaStore = {
    claim: (key, ttlMs) =>
      call(undefined, async (c) => Number(await run(c, CLAIM, [layout.claimKey(key)], [claimToken(), String(Math.max(0, Math.ceil(ttlMs)))])) === 1),
    unclaim: (key) => call(undefined, async (c) => void await c.del(layout.claimKey(key))),
    getCheckpoint: (key) => call(undefined, async (c) => (await c.get(layout.checkpointKey(key))) ?? undefined),
    async setCheckpoint(key, value, fence) {
      assertDecimal(value, PLUGIN);
      return await call(undefined, async (c) => {
        const keys = fence ? [layout.checkpointKey(key), layout.leaseKey(fence.lease)] : [layout.checkpointKey(key)];
        const args = fence ? [value, fence.owner, String(fence.counter)] : [value];
        return Number(await run(c, SET_CHECKPOINT, keys, args)) === 1;
      });
    },
    acquireLease: (key, owner, ttlMs) =>
      call(undefined, async (c) => decodeLease(key, owner, await run(c, ACQUIRE_LEASE, [layout.leaseKey(key), layout.leaseIndexKey], [owner, String(Math.ceil(ttlMs)), key]))),
    releaseLease: (key, owner) => call(undefined, async (c) => void await run(c, RELEASE_LEASE, [layout.leaseKey(key)], [owner])),
    listLeases: (prefix) => call(undefined, async (c) => decodeLeaseList(await run(c, LIST_LEASES, [layout.leaseIndexKey], [prefix, layout.leaseKey("")]))),
  };

  return {
    name: "redis",
    meta,
    write(view: FeatureView, rows: FeatureRow[]): Promise<WriteResult> {
      if (rows.length === 0) return Promise.resolve({ written: 0, stale: 0 });
      let keys: string[], args: string[];
      try {
        ({ keys, args } = writeScriptArgs(encodeRows(layout, view, rows, PLUGIN), view.ttlMs));
      } catch (e) {
        return Promise.reject(e);
      }
      return call(view.name, async (c) => {
        const [written, stale] = (await run(c, WRITE_ROWS, keys, args)) as [number, number];
        return { written: Number(written), stale: Number(stale) };
      });
    },
    read(view: FeatureView, entityKeys: string[], features: string[]): Promise<Record<string, FeatureValue>[]> {
      if (entityKeys.length === 0) return Promise.resolve([]);
      const fields = readFields(features);
      return call(view.name, async (c) => {
        let replies: (string | null)[][];
        if (entityKeys.length === 1) {
          replies = [await c.hmget(layout.entityKey(view.name, entityKeys[0]), ...fields)];
        } else {
          const p = c.pipeline();
          for (const ek of entityKeys) p.hmget(layout.entityKey(view.name, ek), ...fields);
          const res = (await p.exec()) ?? [];
          replies = res.map(([err, r]) => {
            if (err) throw err;
            return r as (string | null)[];
          });
        }
        const t = now();
        return replies.map((r) => decodeRead(view, r, features, t));
      });
    },
    ping: () => call(undefined, async (c) => void await c.ping()),
    async close() {
      closed = true;
      const c = client ?? (creating ? await creating : undefined);
      if (!c || !owned) return;
      if (c.status === "ready") await c.quit().catch(() => c.disconnect());
      else c.disconnect();
    },
  };
}

/** A value unique to one claim call. */
function claimToken(): string {
  return globalThis.crypto?.randomUUID?.() ?? `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/** The url without its password, for messages. */
function redact(url: string): string {
  return url.replace(/\/\/([^@/]*)@/, (_m, auth: string) => `//${auth.includes(":") ? auth.slice(0, auth.indexOf(":") + 1) + "***" : "***"}@`);
}
