/**
 * @module
 * The Redis online store, over TCP with ioredis (Node, Bun and Deno).
 *
 * A write is one EVALSHA of the write script, and its commit (watermarks,
 * the idempotency key it guards) rides in the same call: a Lua script keeps
 * the newest row per entity atomically, even under concurrent writers (see
 * ./layout.ts for the keys and ./scripts.ts for the scripts, shared with
 * Upstash). A batch of more than `maxRowsPerCall` rows is several calls in
 * order, its commit on the last. Group commit: the small writes (at most 64
 * rows) of one turn of the event loop, such as concurrent pushes, are ONE
 * call, a part per write, each answered with its own counts and failing
 * apart (not on a cluster, nor with `replicaAcks`). A read is one pipelined
 * round trip of HMGETs. Idempotency keys, watermarks, checkpoints and leases
 * are scripts too (./meta.ts).
 *
 * It fails fast: while Redis is unreachable, calls reject within about
 * `connectTimeoutMs` with a retriable `STORE_UNAVAILABLE` instead of
 * queueing, and the client reconnects by itself in the background.
 *
 * On a Redis Cluster (`redis+cluster://` seeds, or `cluster: [...]`) it uses
 * ioredis `Cluster` and the layout of ./cluster.ts: a batch is one script
 * per bucket of its rows, then one for its metadata (why that is safe:
 * ./cluster.ts). Redirections (MOVED, ASK) are followed by ioredis; while a
 * failover runs (CLUSTERDOWN, TRYAGAIN, a node gone) calls fail with the
 * same retriable `STORE_UNAVAILABLE`.
 *
 * @example
 * ```ts
 * import { redisStore } from "freshet/stores/redis"
 * const online = redisStore({ url: "redis://127.0.0.1:6379", project: "driver_stats" })
 * const sharded = redisStore({ url: "redis+cluster://10.0.0.1:7000,10.0.0.2:7000", project: "driver_stats" })
 * ```
 */
import type { Cluster, ClusterNode, ClusterOptions, Redis, RedisOptions } from "ioredis";
import type { AggregatingStore, CommitMeta, FeatureRow, FeatureValue, OnlineStore, WriteResult } from "../../../core/contracts.ts";
import type { FeatureView } from "../../../core/definitions.ts";
import { FreshetError, missingPackage } from "../../../core/errors.ts";
import { clusterLayout, clusterSeeds } from "./cluster.ts";
import { decodeRead, type EncodedRow, encodeCommit, encodeRows, readFields, redisLayout } from "./layout.ts";
import { redisMeta } from "./meta.ts";
import { redisTiles } from "./tiles.ts";
import { decodePartError, decodeWriteReply, groupScriptArgs, maxRowsPerCall, WRITE_ROWS, writeScriptArgs } from "./scripts.ts";
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
  /**
   * Rows per write script call at most, so that one call never blocks Redis for long: a bigger batch is
   * written in order, in several calls, its commit on the last one (pending until then). Default 5000: a
   * script spends about 7-14 µs per row, so up to 35-70 ms; lower it where other clients need Redis sooner.
   */
  maxRowsPerCall?: number;
  /**
   * Group commit (default true; not on a cluster, nor with `replicaAcks`): the small writes (at most
   * 64 rows) that arrive in one turn of the event loop (concurrent pushes) go to Redis as ONE script
   * call, up to `maxRowsPerCall` rows, each write a part of it with its own counts and commit. A lone
   * write waits for nothing but the end of the current turn. A write whose part fails in Redis (a key
   * of another type) fails alone, before its commit, while the others in the call are applied; when
   * the call itself fails (Redis down), every write in it fails. A bigger write has its own call,
   * which overlaps with the encoding of the next.
   */
  groupCommit?: boolean;
  /**
   * `redis://[:password@]host:port[/db]` or `rediss://` for TLS. Default `redis://127.0.0.1:6379`.
   * A Redis Cluster: `redis+cluster://[user:password@]host:port,host:port,...` (any reachable
   * nodes; the rest are discovered), or `rediss+cluster://` for TLS.
   */
  url?: string;
  /**
   * The seed nodes of a Redis Cluster, as ioredis `new Cluster(nodes)` takes them
   * (`[{ host, port }]`, `"host:port"` or a port), instead of a `redis+cluster://` url.
   */
  cluster?: ClusterNode[];
  /** More ioredis `Cluster` options (`natMap`, `scaleReads`, ...), applied after Freshet's; node options go in `redisOptions`. */
  clusterOptions?: ClusterOptions;
  /**
   * On a Redis Cluster: the buckets each view's entities are spread over, one hash slot each
   * (see the README). Part of the layout: it cannot change once the store holds data. Default 16.
   */
  buckets?: number;
  /**
   * A client of your own (a `Redis`, or a `Cluster` for a Redis Cluster). It is used as it is
   * (its queueing and retry settings stay yours) and is not closed by `close()`.
   */
  client?: Redis | Cluster;
  /**
   * On a Redis Cluster with replicas: how many replicas of each master must hold a batch's
   * rows before its watermarks and done mark are written, and hold those before the write
   * resolves (WAIT). Replication is asynchronous, so without it a failover can lose the last
   * acknowledged writes. Default 0 (do not wait).
   */
  replicaAcks?: number;
  /** First segment of every key. Default "freshet". */
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
  const url = opts.url ?? "redis://127.0.0.1:6379";
  const seeds: { nodes: ClusterNode[]; username?: string; password?: string; tls: boolean } | undefined = opts.cluster ? { nodes: opts.cluster, tls: false } : clusterSeeds(url);
  const isCluster = !!seeds || (opts.client as Cluster | undefined)?.isCluster === true;
  const layout = isCluster
    ? clusterLayout({ prefix: opts.prefix, project: opts.project, plugin: PLUGIN, buckets: opts.buckets })
    : redisLayout({ prefix: opts.prefix, project: opts.project, plugin: PLUGIN });
  const now = opts.now ?? Date.now;
  const connectTimeoutMs = opts.connectTimeoutMs ?? 1000;
  const rowsPerCall = maxRowsPerCall(opts.maxRowsPerCall, PLUGIN);
  const commandTimeoutMs = opts.commandTimeoutMs ?? 5000;
  const owned = !opts.client;
  let client: Redis | Cluster | undefined = opts.client;
  let creating: Promise<Redis | Cluster> | undefined;
  let lastError: unknown;
  let readyWait: Promise<void> | undefined;
  let layoutChecked: Promise<void> | undefined;
  let closed = false;
  // Keep reconnecting in the background, at most a second apart.
  const backoff = (times: number) => Math.min(50 * 2 ** Math.min(times, 5), 1000);
  const nodeOptions: RedisOptions = {
    lazyConnect: true,
    // Fail fast: nothing queues while disconnected, and a command in
    // flight when the connection drops is rejected, not resent.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    connectTimeout: connectTimeoutMs,
    commandTimeout: commandTimeoutMs,
    retryStrategy: backoff,
  };

  const create = async (): Promise<Redis | Cluster> => {
    const { Redis: IORedis, Cluster: IOCluster } = await import("ioredis").catch(missingPackage("ioredis", "the Redis store", PLUGIN));
    const c = seeds
      ? new IOCluster(seeds.nodes, {
        lazyConnect: true,
        enableOfflineQueue: false,
        // One round trip per node for the commands of a tick (the per-bucket scripts, a read's HMGETs).
        enableAutoPipelining: true,
        clusterRetryStrategy: backoff,
        // MOVED and ASK are followed (a resharding); CLUSTERDOWN and TRYAGAIN retried briefly, then reported as unavailable.
        maxRedirections: 16,
        retryDelayOnFailover: 100,
        retryDelayOnClusterDown: 100,
        retryDelayOnTryAgain: 100,
        slotsRefreshTimeout: connectTimeoutMs,
        redisOptions: {
          ...nodeOptions,
          ...(seeds.username ? { username: seeds.username } : {}),
          ...(seeds.password !== undefined ? { password: seeds.password } : {}),
          ...(seeds.tls ? { tls: {} } : {}),
          ...opts.redisOptions,
        },
        ...opts.clusterOptions,
      })
      : new IORedis(url, { ...nodeOptions, ...opts.redisOptions });
    c.on("error", (e: unknown) => void (lastError = e));
    return c;
  };

  /** On a cluster, once: the bucket count on record must be this store's (it decides every key's name). */
  const checkLayout = async (c: Redis | Cluster) => {
    const { layoutKey, layoutValue } = layout.cluster!;
    try {
      if (await c.set(layoutKey, layoutValue, "NX") === "OK") return;
      const stored = await c.get(layoutKey);
      if (stored === layoutValue) return;
      throw new FreshetError("INVALID_CONFIG", `this Redis Cluster holds a Freshet store laid out as "${stored}" under ${layout.base}, and this store is "${layoutValue}": open it with the same buckets option, or use another project or prefix`, { plugin: PLUGIN, retriable: false });
    } catch (e) {
      layoutChecked = undefined;
      throw redisError(PLUGIN, e);
    }
  };

  const ready = async (): Promise<Redis | Cluster> => {
    if (closed) throw new FreshetError("STORE_UNAVAILABLE", "the store is closed", { plugin: PLUGIN, retriable: false });
    const c = await connected();
    if (layout.cluster) await (layoutChecked ??= checkLayout(c));
    return c;
  };

  const connected = async (): Promise<Redis | Cluster> => {
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

  /**
   * A redirection that reaches here (ioredis follows them, but not every one
   * of a pipelined batch) means the slots moved (a failover, a resharding, a
   * restarted node): refresh the map of slots and report it as retriable.
   */
  const redirected = (c: Redis | Cluster, e: unknown): unknown => {
    const msg = (e as { name?: string; message?: string })?.name === "ReplyError" ? String((e as Error).message) : "";
    if (!isCluster || !/^(MOVED|ASK) /.test(msg)) return e;
    (c as unknown as { refreshSlotsCache?: () => void }).refreshSlotsCache?.();
    return new FreshetError("STORE_UNAVAILABLE", `store unavailable: the cluster moved a slot (${msg}); retry`, { plugin: PLUGIN, retriable: true, cause: e });
  };

  const replicaAcks = opts.replicaAcks ?? 0;
  if (!Number.isInteger(replicaAcks) || replicaAcks < 0) throw new FreshetError("INVALID_CONFIG", `replicaAcks ${JSON.stringify(opts.replicaAcks)} must be a whole number of replicas (0: do not wait)`, { plugin: PLUGIN });
  /** WAIT on every master's connection: the writes this client sent there are on `replicaAcks` replicas. */
  const replicated = async () => {
    const c = await ready();
    const nodes = "nodes" in c && typeof c.nodes === "function" ? (c as Cluster).nodes("master") : [c as Redis];
    await Promise.all(nodes.map(async (n) => {
      const acks = Number(await n.call("WAIT", String(replicaAcks), String(Math.ceil(commandTimeoutMs / 2))));
      if (acks < replicaAcks) {
        throw new FreshetError("STORE_UNAVAILABLE", `store unavailable: ${acks} of ${replicaAcks} replicas of ${n.options.host}:${n.options.port} acknowledged the writes within ${Math.ceil(commandTimeoutMs / 2)} ms`, { plugin: PLUGIN, retriable: true });
      }
    }));
  };

  const transport: RedisTransport = {
    ...(replicaAcks > 0 ? { replicated } : {}),
    send: async (command, args) => {
      const c = await ready();
      try {
        return await c.call(command, args);
      } catch (e) {
        throw redirected(c, e);
      }
    },
    masters: async () => {
      const c = await ready();
      const nodes = "nodes" in c && typeof c.nodes === "function" ? (c as Cluster).nodes("master") : [c as Redis];
      return nodes.map((n) => ({ send: (command: string, args: string[]) => n.call(command, args) }));
    },
  };

  const call = async <T>(definition: string | undefined, f: (c: Redis | Cluster) => Promise<T>): Promise<T> => {
    let c: Redis | Cluster | undefined;
    try {
      c = await ready();
      return await f(c);
    } catch (e) {
      throw redisError(PLUGIN, c ? redirected(c, e) : e, definition);
    }
  };

  const tiles = redisTiles({ transport, layout, plugin: PLUGIN, now });

  type Call = { keys: string[]; args: string[] };
  type Member = { call: Call; definition: string; resolve: (r: WriteResult) => void; reject: (e: unknown) => void };
  const grouping = opts.groupCommit !== false && !isCluster && replicaAcks === 0;
  let group: { members: Member[]; rows: number } | undefined;
  /** Sends a group's parts as one script call and answers each write with its own part's counts. */
  const flush = async (members: Member[]) => {
    let c: Redis | Cluster | undefined;
    try {
      c = await ready();
      const { keys, args } = groupScriptArgs(members.map((m) => m.call));
      const reply = await evalScript(transport, WRITE_ROWS, keys, args, members[0].definition);
      for (let i = 0; i < members.length; i++) {
        // A part that failed (a key of another type) fails its own write only; the script went on with the others.
        const failed = members.length > 1 ? decodePartError(reply, i) : undefined;
        if (failed !== undefined) {
          members[i].reject(redisError(PLUGIN, Object.assign(new Error(failed), { name: "ReplyError" }), members[i].definition));
          continue;
        }
        const counts = decodeWriteReply(reply, i);
        if (counts) members[i].resolve(counts);
        else members[i].reject(redisError(PLUGIN, new Error(`unexpected answer to the write script: ${JSON.stringify(reply).slice(0, 200)}`), members[i].definition));
      }
    } catch (e) {
      const cause = c ? redirected(c, e) : e;
      for (const m of members) m.reject(redisError(PLUGIN, cause, m.definition));
    }
  };
  /** Joins this turn's group (a new one when the write would take it past maxRowsPerCall rows). */
  const grouped = (call: Call, rows: number, definition: string) =>
    new Promise<WriteResult>((resolve, reject) => {
      if (group && group.rows + rows > rowsPerCall) group = undefined;
      if (!group) {
        const g: { members: Member[]; rows: number } = { members: [], rows: 0 };
        group = g;
        defer(() => {
          if (group === g) group = undefined;
          void flush(g.members);
        });
      }
      group.members.push({ call, definition, resolve, reject });
      group.rows += rows;
    });

  return {
    name: "redis",
    meta: redisMeta({ transport, layout, plugin: PLUGIN, now }),
    foldTiles: (view, deltas, commit) => tiles.foldTiles(view, deltas, commit),
    getAppliedMark: (key) => tiles.getAppliedMark(key),
    clearTiles: (view, range) => tiles.clearTiles(view, range),
    ...(layout.cluster ? { markKey: (view: FeatureView, entityKey: string, key: string) => layout.cluster!.markKey(view.name, entityKey, key) } : {}),
    write(view: FeatureView, rows: FeatureRow[], commit?: CommitMeta): Promise<WriteResult> {
      let calls: Call[];
      let sequential = false;
      let metaCall: Call | undefined;
      try {
        const encoded = encodeCommit(layout, commit, PLUGIN, view.name);
        if (rows.length === 0 && !encoded) return Promise.resolve({ written: 0, stale: 0, expired: 0 });
        const t = now();
        const encodedRows = encodeRows(layout, view, rows, PLUGIN);
        if (!layout.cluster) {
          // At most maxRowsPerCall rows per script, so that one call never holds Redis for long; in order, the
          // commit riding on the last one: until it lands, the batch is pending (a retry re-applies latest-wins).
          calls = [];
          for (let i = 0; i < encodedRows.length || calls.length === 0; i += rowsPerCall) {
            const last = i + rowsPerCall >= encodedRows.length;
            calls.push(writeScriptArgs(encodedRows.slice(i, i + rowsPerCall), view.ttlMs, t, last ? encoded : undefined));
          }
          if (calls.length > 1) sequential = true;
        }
        else {
          // One script per bucket (one slot each), then the metadata in its own slot: see ./cluster.ts.
          const groups = new Map<number, EncodedRow[]>();
          for (let i = 0; i < rows.length; i++) {
            const b = layout.cluster.bucketOf(view.name, rows[i].entityKey);
            const g = groups.get(b);
            if (g) g.push(encodedRows[i]);
            else groups.set(b, [encodedRows[i]]);
          }
          calls = [...groups.values()].map((g) => writeScriptArgs(g, view.ttlMs, t));
          if (encoded) metaCall = writeScriptArgs([], 0, t, encoded);
        }
      } catch (e) {
        return Promise.reject(e);
      }
      const one = async ({ keys, args }: Call) => {
        const reply = await evalScript(transport, WRITE_ROWS, keys, args, view.name);
        const counts = decodeWriteReply(reply);
        if (!counts) throw new Error(`unexpected answer to the write script: ${JSON.stringify(reply)}`);
        return counts;
      };
      if (grouping && rows.length <= GROUP_MAX_ROWS && calls.length === 1) return grouped(calls[0], rows.length, view.name);
      return call(view.name, async () => {
        if (calls.length === 1 && !metaCall && replicaAcks === 0) return await one(calls[0]);
        const sum = { written: 0, stale: 0, expired: 0 };
        const results = [];
        if (sequential) for (const c of calls) results.push(await one(c));
        else results.push(...await Promise.all(calls.map(one)));
        for (const c of results) {
          sum.written += c.written;
          sum.stale += c.stale;
          sum.expired += c.expired;
        }
        // Only once every bucket holds its rows (on its replicas, with replicaAcks): the watermarks and the done mark.
        if (replicaAcks > 0) await replicated();
        if (metaCall) await one(metaCall);
        if (replicaAcks > 0 && metaCall) await replicated();
        return sum;
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
        } else if (layout.cluster) {
          // Keys on several nodes: concurrent HMGETs, which auto-pipelining sends as one batch per node.
          replies = await Promise.all(entityKeys.map((ek) => c.hmget(layout.entityKey(view.name, ek), ...fields)));
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

/**
 * The largest write that joins a group. The call per write is what a group saves, and for a
 * bigger write it is already a small share of the script's 7-20 µs per row; a group of big
 * writes would also be answered all at once, so the encoding of the next ones could not
 * overlap with Redis running the script. (On this shared machine, 8 writes of 500 rows in
 * flight grouped or not were within the noise of each other: 3 pairs, 8.7-12.4k against
 * 7.1-12.8k rows/s.)
 */
const GROUP_MAX_ROWS = 64;

/** Runs `f` at the end of the current turn of the event loop (after its I/O callbacks): `setImmediate` where there is one, else a 0 ms timer. */
const defer: (f: () => void) => void = (globalThis as { setImmediate?: (f: () => void) => void }).setImmediate ?? ((f) => void setTimeout(f, 0));

/** The url without its password, for messages. */
function redact(url: string): string {
  return url.replace(/\/\/([^@/]*)@/, (_m, auth: string) => `//${auth.includes(":") ? auth.slice(0, auth.indexOf(":") + 1) + "***" : "***"}@`);
}
