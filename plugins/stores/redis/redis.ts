/**
 * @module
 * The Redis online store, over TCP with ioredis (Node, Bun and Deno).
 *
 * A write is one EVALSHA per batch, whatever its size, and its commit
 * (watermarks, the idempotency key it guards) rides in the same call: a
 * Lua script keeps the newest row per entity atomically, even under
 * concurrent writers (see ./layout.ts for the keys and ./scripts.ts for the
 * scripts, shared with Upstash). A read is one pipelined round trip of
 * HMGETs. Idempotency keys, watermarks, checkpoints and leases are scripts
 * too (./meta.ts).
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
import type { AggregatingStore, CommitMeta, FeatureRow, FeatureValue, OnlineStore, WriteResult } from "../../../core/contracts.ts";
import type { FeatureView } from "../../../core/definitions.ts";
import { FreshetError, missingPackage } from "../../../core/errors.ts";
import { decodeRead, encodeCommit, encodeRows, readFields, redisLayout } from "./layout.ts";
import { redisMeta } from "./meta.ts";
import { redisTiles } from "./tiles.ts";
import { decodeWriteReply, WRITE_ROWS, writeScriptArgs } from "./scripts.ts";
import { evalScript, redisError, type RedisTransport } from "./transport.ts";

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
  /** The store's clock for ttl: a row whose event time + ttl is not after it is not written (expired) and reads as NOT_FOUND. Default `Date.now`. Leases and idempotency keys expire on Redis' clock. */
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
export interface RedisOnlineStore extends OnlineStore, AggregatingStore {
  /** PING; rejects with STORE_UNAVAILABLE when Redis cannot be reached. */
  ping(): Promise<void>;
  /** Quits the client the store created (a client passed in `client` stays open). */
  close(): Promise<void>;
}

const PLUGIN = "redis";

/**
 * An online store on Redis. The client is created on first use.
 *
 * @example
 * ```ts
 * const store = redisStore({ url: process.env.REDIS_URL, project: "driver_stats" })
 * const { written, stale, expired } = await store.write(view, rows, { watermarks: { "push:driver_push": maxEventTime } })
 * const [driver] = await store.read(view, ["driver_id=1001"], ["conv_rate"])
 * await store.close()
 * ```
 */
export function redisStore(opts: RedisStoreOptions = {}): RedisOnlineStore {
  const layout = redisLayout({ prefix: opts.prefix, project: opts.project, plugin: PLUGIN });
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
    const { Redis: IORedis } = await import("ioredis").catch(missingPackage("ioredis", "the Redis store", PLUGIN));
    const c = new IORedis(url, {
      lazyConnect: true,
      // Fail fast: nothing queues while disconnected, and a command in
      // flight when the connection drops is rejected, not resent.
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

  const transport: RedisTransport = {
    send: async (command, args) => (await ready()).call(command, args),
  };

  const call = async <T>(definition: string | undefined, f: (c: Redis) => Promise<T>): Promise<T> => {
    try {
      return await f(await ready());
    } catch (e) {
      throw redisError(PLUGIN, e, definition);
    }
  };

  const tiles = redisTiles({ transport, layout, plugin: PLUGIN, now });

  return {
    name: "redis",
    meta: redisMeta({ transport, layout, plugin: PLUGIN, now }),
    foldTiles: (view, deltas, commit) => tiles.foldTiles(view, deltas, commit),
    getAppliedMark: (key) => tiles.getAppliedMark(key),
    clearTiles: (view, range) => tiles.clearTiles(view, range),
    write(view: FeatureView, rows: FeatureRow[], commit?: CommitMeta): Promise<WriteResult> {
      let keys: string[], args: string[];
      try {
        const encoded = encodeCommit(layout, commit, PLUGIN, view.name);
        if (rows.length === 0 && !encoded) return Promise.resolve({ written: 0, stale: 0, expired: 0 });
        ({ keys, args } = writeScriptArgs(encodeRows(layout, view, rows, PLUGIN), view.ttlMs, now(), encoded));
      } catch (e) {
        return Promise.reject(e);
      }
      return call(view.name, async () => {
        const reply = await evalScript(transport, WRITE_ROWS, keys, args, view.name);
        const counts = decodeWriteReply(reply);
        if (!counts) throw new Error(`unexpected answer to the write script: ${JSON.stringify(reply)}`);
        return counts;
      });
    },
    read(view: FeatureView, entityKeys: string[], features: string[]): Promise<Record<string, FeatureValue>[]> {
      if (view.aggregations?.length) return tiles.read(view, entityKeys, features);
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

/** The url without its password, for messages. */
function redact(url: string): string {
  return url.replace(/\/\/([^@/]*)@/, (_m, auth: string) => `//${auth.includes(":") ? auth.slice(0, auth.indexOf(":") + 1) + "***" : "***"}@`);
}
