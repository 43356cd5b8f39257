/**
 * @module
 * The one MetaStore of the Redis family, over any {@link RedisTransport}:
 * idempotency keys, watermarks, checkpoints and leases, each one script or
 * one command, so every method is atomic on its key across processes.
 * Idempotency and watermark values follow the layout in ./layout.ts;
 * leases and fenced checkpoints run on Redis' clock.
 */
import type { IdempotencyState, MetaStore } from "../../../core/contracts.ts";
import { FreshetError } from "../../../core/errors.ts";
import { encodeCommit, type RedisLayout } from "./layout.ts";
import {
  ABANDON,
  ACQUIRE_LEASE,
  ADVANCE_WATERMARK,
  BEGIN,
  decodeLease,
  decodeLeaseList,
  LIST_LEASES,
  type LuaScript,
  RELEASE_LEASE,
  SET_CHECKPOINT,
  WRITE_ROWS,
  writeScriptArgs,
} from "./scripts.ts";
import { evalScript, redisError, type RedisTransport } from "./transport.ts";

/** Options of {@link redisMeta}. */
export interface RedisMetaOptions {
  transport: RedisTransport;
  layout: RedisLayout;
  /** The plugin name, for errors: "redis" or "upstash". */
  plugin: string;
  /** The store's clock. */
  now: () => number;
}

/** A value unique to one delivery. */
function deliveryToken(): string {
  // Cast: @cloudflare/workers-types declares crypto as a global const, not a property of globalThis.
  return (globalThis as { crypto?: { randomUUID?: () => string } }).crypto?.randomUUID?.() ?? `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

const ttlArg = (ms: number) => String(Math.max(1, Math.ceil(ms)));

/**
 * The MetaStore of a Redis-protocol store.
 *
 * @example
 * ```ts
 * const meta = redisMeta({ transport, layout: redisLayout({ project: "driver_stats" }), plugin: "redis", now: Date.now })
 * const s = await meta.begin("webhook:msg_1", "sha256:...", 30_000)
 * ```
 */
export function redisMeta(opts: RedisMetaOptions): MetaStore {
  const { transport, layout, plugin, now } = opts;
  const invalid = (msg: string) => new FreshetError("INVALID_INPUT", msg, { plugin, retriable: false });
  const guard = async <T>(f: () => Promise<T>): Promise<T> => {
    try {
      return await f();
    } catch (e) {
      throw redisError(plugin, e);
    }
  };
  const run = (s: LuaScript, keys: string[], args: string[]) => guard(() => evalScript(transport, s, keys, args));
  const checkMs = (what: string, ms: number) => {
    if (typeof ms !== "number" || !Number.isFinite(ms)) throw invalid(`${what} ${String(ms)} is not a finite number of ms`);
  };

  return {
    async begin(key, fingerprint, pendingTtlMs): Promise<IdempotencyState> {
      checkMs("pendingTtlMs", pendingTtlMs);
      const reply = await run(BEGIN, [layout.idemKey(key)], [String(fingerprint), deliveryToken(), ttlArg(pendingTtlMs)]);
      const [state, value] = Array.isArray(reply) ? reply.map(String) : [];
      if (state === "started") return { state, token: value };
      if (state === "pending" || state === "done") return { state, fingerprint: value };
      throw redisError(plugin, new Error(`unexpected answer to begin: ${JSON.stringify(reply)}`));
    },
    async abandon(key, token) {
      await run(ABANDON, [layout.idemKey(key)], [String(token)]);
    },
    async settle(key, fingerprint, ttlMs) {
      // The write script without rows: the one place that marks a key done.
      const commit = encodeCommit(layout, { done: { key, fingerprint, ttlMs } }, plugin);
      const { keys, args } = writeScriptArgs([], 0, now(), commit);
      await run(WRITE_ROWS, keys, args);
    },
    getCheckpoint: (key) =>
      guard(async () => {
        const v = await transport.send("GET", [layout.checkpointKey(key)]);
        return v === null || v === undefined ? undefined : String(v);
      }),
    async setCheckpoint(key, value, fence) {
      if (typeof value !== "string" || !/^\d+$/.test(value)) throw invalid(`checkpoint ${JSON.stringify(value)} is not a non-negative decimal integer`);
      const keys = fence ? [layout.checkpointKey(key), layout.leaseKey(fence.lease)] : [layout.checkpointKey(key)];
      const args = fence ? [value, fence.owner, String(fence.counter)] : [value];
      return Number(await run(SET_CHECKPOINT, keys, args)) === 1;
    },
    getWatermark: (key) =>
      guard(async () => {
        const v = await transport.send("GET", [layout.watermarkKey(key)]);
        return v === null || v === undefined ? undefined : Number(v);
      }),
    async advanceWatermark(key, eventTime) {
      checkMs("watermark", eventTime);
      return Number(await run(ADVANCE_WATERMARK, [layout.watermarkKey(key)], [String(eventTime)]));
    },
    async acquireLease(key, owner, ttlMs) {
      return decodeLease(key, owner, await run(ACQUIRE_LEASE, [layout.leaseKey(key), layout.leaseIndexKey], [owner, String(Math.ceil(ttlMs)), key]));
    },
    async releaseLease(key, owner) {
      await run(RELEASE_LEASE, [layout.leaseKey(key)], [owner]);
    },
    async listLeases(prefix) {
      return decodeLeaseList(await run(LIST_LEASES, [layout.leaseIndexKey], [prefix, layout.leaseKey("")]));
    },
  };
}
