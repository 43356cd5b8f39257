/**
 * @module
 * The Kinesis source: a shard-aware polling consumer with checkpoints and
 * leases in the online store's metadata, built on @aws-sdk/client-kinesis.
 *
 * - Shards are discovered with ListShards, again every `discoverEveryMs` and
 *   whenever a shard ends. Each shard this worker holds is read in its own
 *   GetRecords loop, at most 5 calls/s, with jittered backoff on throttling.
 * - A child shard starts only when its parents were read to their end and
 *   checkpointed as such, which keeps per-key order across splits and merges.
 * - A batch's `ack()` writes the shard's checkpoint (the last sequence
 *   number), fenced by the shard's lease. A worker that lost its lease cannot
 *   write, and its in-flight batches turn stale.
 * - Workers share a stream through the leases: each takes up to its fair
 *   share, takes over expired leases, and hands shards over when more
 *   workers join.
 *
 * @example
 * ```ts
 * import { consume, createProcessor } from "freshet"
 * import { kinesisConsumer } from "freshet/sources/kinesis"
 *
 * const source = kinesisConsumer(clicks, { meta: store.meta })
 * await consume(source, createProcessor({ registry, online: store, deadLetters }), { signal })
 * ```
 */
import type { KinesisClient } from "@aws-sdk/client-kinesis";
import { FreshetError, isApplicationName, type KinesisSource, missingPackage, type Logger, type MetaStore, parseEventTime, sleep, type SourceBatch, type SourceLag, type StreamSource } from "../../core/index.ts";
import { kinesisKeys, readCheckpoint } from "./kinesis/checkpoints.ts";
import { fairShare, type HeldLease, leaseTable, leaseValid } from "./kinesis/leases.ts";
import { isConfigError, listShards, readableShards, readShard, type Sdk, type ShardOutcome, type StartPosition } from "./kinesis/shards.ts";

export { deaggregate, KPL_MAGIC, type UserRecord } from "./kinesis/deaggregate.ts";
export { kinesisKeys, type KinesisKeys, readCheckpoint, SHARD_END, type ShardCheckpoint } from "./kinesis/checkpoints.ts";
export { fairShare } from "./kinesis/leases.ts";
export { MIN_CALL_INTERVAL_MS } from "./kinesis/shards.ts";

/** Options of {@link kinesisConsumer}. */
export interface KinesisConsumerOptions {
  /** Where checkpoints and leases live; usually `store.meta` of the online store. Shared by every worker of the stream. */
  meta: MetaStore;
  /** This worker's name in the leases; unique per process. Default: a random id. */
  workerId?: string;
  /** A client of your own (it is not destroyed on stop). Give it `maxAttempts: 1` so that throttling reaches the consumer's backoff. */
  client?: KinesisClient;
  /** How long a shard lease lasts without renewal, in ms; renewed every third of it. Default 10 000. */
  leaseTtlMs?: number;
  /** How often to list shards and rebalance, in ms. Default 10 000. */
  discoverEveryMs?: number;
  /** Where shard events and retries are logged. Default `console`. */
  logger?: Logger;
  /** The most shards this worker reads at once. Default: no limit beyond its fair share. */
  maxShardsPerWorker?: number;
  /** The name checkpoints and leases are kept under (KCL's application name); wins over the definition's `application`. Default: the definition's, else the source's name. */
  application?: string;
  /** Backoff on ProvisionedThroughputExceeded: doubles from `initialMs` (default 500) to `maxMs` (default 10 000), with jitter. */
  throttle?: { initialMs?: number; maxMs?: number };
}

/** A shard this worker reads. */
export interface OwnedShard {
  /** The shard's id. */
  shardId: string;
  /** The lease's fencing counter. */
  counter: number;
}

/** The Kinesis source, with a view of what this worker holds. */
export interface KinesisConsumer extends StreamSource {
  /** Always "kinesis". */
  readonly kind: "kinesis";
  /** Lag is the age of the newest record read, in ms. */
  readonly lagUnit: "ms";
  /** This worker's id in the lease table. */
  readonly workerId: string;
  /** The application whose checkpoints and leases this worker uses. */
  readonly application: string;
  /** The shards this worker reads now. */
  owned(): OwnedShard[];
}

interface ShardWorker {
  lease: HeldLease;
  stop: AbortController;
  done: Promise<void>;
  handingOver: boolean;
}

/**
 * Creates a Kinesis consumer for a `kinesisSource` definition.
 *
 * @example
 * ```ts
 * const clicks = kinesisSource({ name: "clicks", streamName: "clicks", region: "eu-west-1", timestampField: "ts" })
 * const source = kinesisConsumer(clicks, { meta: redis.meta, workerId: `clicks-${hostname}` })
 * await consume(source, processor, { signal: ac.signal })
 * ```
 */
export function kinesisConsumer(def: KinesisSource, opts: KinesisConsumerOptions): KinesisConsumer {
  if (def?.kind !== "kinesis") throw new FreshetError("INVALID_CONFIG", "kinesisConsumer needs a kinesisSource(...) definition", { plugin: "kinesis" });
  if (!opts?.meta) throw new FreshetError("INVALID_CONFIG", "kinesisConsumer needs a MetaStore for checkpoints and leases: { meta: store.meta }", { plugin: "kinesis", definition: def.name });
  const ttlMs = opts.leaseTtlMs ?? 10_000;
  if (!(ttlMs >= 300)) throw new FreshetError("INVALID_CONFIG", `leaseTtlMs must be at least 300 ms, got ${ttlMs}`, { plugin: "kinesis", definition: def.name });
  const discoverEveryMs = opts.discoverEveryMs ?? 10_000;
  const workerId = opts.workerId ?? `worker-${globalThis.crypto.randomUUID().slice(0, 8)}`;
  const start = startPosition(def);
  const application = opts.application ?? def.application ?? def.name;
  if (!isApplicationName(application)) throw new FreshetError("INVALID_CONFIG", `application ${JSON.stringify(application)} must be letters, digits, "_", "-" or "."`, { plugin: "kinesis", definition: def.name });
  const keys = kinesisKeys(application, def.streamName);
  const meta = opts.meta;
  const logger = opts.logger;
  const where = `[freshet] [kinesis] "${def.name}" (${workerId}${application === def.name ? "" : `, application ${application}`})`;
  const workers = new Map<string, ShardWorker>();
  const lag = new Map<string, number>();
  let running = false;

  async function run(onBatch: (batch: SourceBatch) => Promise<void>, signal: AbortSignal): Promise<void> {
    if (running) throw new FreshetError("INVALID_CONFIG", "this consumer is already running; create one consumer per run", { plugin: "kinesis", definition: def.name });
    running = true;
    const sdk: Sdk = await import("@aws-sdk/client-kinesis").catch(missingPackage("@aws-sdk/client-kinesis", "the Kinesis source", "kinesis"));
    const client = opts.client ?? (await createClient(sdk, def));
    const leases = leaseTable(meta, keys, workerId, ttlMs);
    const finished = new Set<string>();
    const halt = new AbortController(); // discovery and every shard loop
    const renewal = new AbortController(); // outlives halt, until in-flight batches are done
    let fatal: unknown;
    let wake: (() => void) | undefined;
    const rediscover = () => wake?.();
    const onAbort = () => halt.abort();
    signal.addEventListener("abort", onAbort, { once: true });
    if (signal.aborted) halt.abort();
    halt.signal.addEventListener("abort", () => {
      for (const w of workers.values()) w.stop.abort();
      rediscover();
    }, { once: true });

    function startWorker(shardId: string, lease: HeldLease, checkpoint: { sequenceNumber?: string; ended: boolean }, parentsRead: boolean) {
      const stop = new AbortController();
      const worker: ShardWorker = { lease, stop, handingOver: false, done: Promise.resolve() };
      workers.set(shardId, worker);
      logger?.info(`${where}: reading ${shardId} (lease counter ${lease.counter}) ${checkpoint.sequenceNumber ? `after ${checkpoint.sequenceNumber}` : "from the start position"}`);
      worker.done = (async () => {
        let outcome: ShardOutcome | "failed" = "failed";
        try {
          outcome = await readShard({
            sdk, client, meta, keys, lease, checkpoint, onBatch, lag, logger,
            sourceName: def.name,
            streamName: def.streamName,
            shardId,
            // A child of a shard this application read starts at its first
            // record, whatever the start position, so nothing between the
            // split and this moment is skipped.
            start: parentsRead && start === "LATEST" ? "TRIM_HORIZON" : start,
            limit: def.limit,
            pollIntervalMs: def.pollIntervalMs ?? 1000,
            stop: stop.signal,
            throttle: opts.throttle,
          });
        } catch (e) {
          fatal ??= e;
          halt.abort();
        } finally {
          workers.delete(shardId);
          lag.delete(shardId);
          if (outcome === "ended") finished.add(shardId);
          if (outcome === "lost") logger?.warn(`${where}: lost the lease of ${shardId}; stopped reading it`);
          await leases.release(lease).catch((e) => logger?.warn(`${where}: cannot release the lease of ${shardId}: ${(e as Error).message}`));
          if (outcome !== "stopped" || worker.handingOver) rediscover();
        }
      })();
    }

    /** The shards this worker waits for, with their owners (to log a wait once), and since when. */
    let waitingFor = "";
    let waitingSince = 0;

    /** Lists shards and takes a fair share; returns when to look again if a lease this worker waits for expires sooner than the next round. */
    async function discover(): Promise<number | undefined> {
      const shards = await listShards(sdk, client, def.streamName, halt.signal);
      for (const s of shards) {
        if (s.closed && !finished.has(s.shardId) && !workers.has(s.shardId)) {
          if ((await readCheckpoint(meta, keys.checkpoint(s.shardId))).ended) finished.add(s.shardId);
        }
      }
      const readable = readableShards(shards, finished);
      const { shardOwners, workers: live } = await leases.survey();
      const share = fairShare(readable.length, live.size, opts.maxShardsPerWorker);
      const mine = [...workers.entries()].filter(([, w]) => !w.handingOver);
      if (mine.length > share) {
        // More than a fair share while others are alive: hand one shard over
        // per round. It finishes its batch, then its lease is released.
        const [shardId, w] = mine[mine.length - 1];
        w.handingOver = true;
        w.stop.abort();
        logger?.info(`${where}: handing ${shardId} over (${mine.length} held, fair share ${share} over ${live.size} workers)`);
        return undefined;
      }
      let held = mine.length;
      const leasedElsewhere: { shardId: string; owner: string; expiresAt: number }[] = [];
      for (const s of readable) {
        if (held >= share || halt.signal.aborted) break;
        if (workers.has(s.shardId)) continue;
        const other = shardOwners.get(s.shardId);
        if (other && other.owner !== workerId) {
          leasedElsewhere.push({ shardId: s.shardId, owner: other.owner, expiresAt: other.expiresAt });
          continue;
        }
        const lease = await leases.acquire(s.shardId);
        if (!lease) continue;
        const checkpoint = await readCheckpoint(meta, keys.checkpoint(s.shardId)).catch(async (e) => {
          await leases.release(lease).catch(() => {});
          throw e;
        });
        if (checkpoint.ended || halt.signal.aborted) {
          if (checkpoint.ended) finished.add(s.shardId);
          await leases.release(lease);
          continue;
        }
        startWorker(s.shardId, lease, checkpoint, s.parents.some((p) => finished.has(p)));
        held++;
      }
      return waitForLeases(held < share ? leasedElsewhere : []);
    }

    /**
     * Below its fair share with shards leased by other workers: says what it
     * waits for (a killed worker's leases run out only at their expiry), once
     * per set of shards and owners, and wakes discovery when the first expires.
     */
    function waitForLeases(leased: { shardId: string; owner: string; expiresAt: number }[]): number | undefined {
      const key = leased.map((l) => `${l.shardId}@${l.owner}`).join(",");
      if (leased.length === 0) {
        if (waitingFor) logger?.info(`${where}: no longer waiting for other workers' leases (waited ${Math.round((Date.now() - waitingSince) / 100) / 10} s)`);
        waitingFor = "";
        return undefined;
      }
      const first = Math.min(...leased.map((l) => l.expiresAt));
      if (key !== waitingFor) {
        if (!waitingFor) waitingSince = Date.now();
        waitingFor = key;
        const owners = [...new Set(leased.map((l) => l.owner))].join(", ");
        const last = Math.max(...leased.map((l) => l.expiresAt));
        logger?.info(`${where}: waiting for the leases of ${leased.map((l) => l.shardId).join(", ")} held by ${owners}: they expire within ${Math.max(0, Math.ceil((last - Date.now()) / 1000))} s unless renewed (a stopped or killed worker's are not), then this worker takes them over (leaseTtlMs ${ttlMs})`);
      }
      return first + 50;
    }

    const renewer = (async () => {
      while (!renewal.signal.aborted) {
        await sleep(ttlMs / 3, renewal.signal);
        if (renewal.signal.aborted) break;
        try {
          if (!(await leases.heartbeat())) logger?.warn(`${where}: another live worker uses the id "${workerId}"; give each worker its own workerId`);
        } catch (e) {
          logger?.warn(`${where}: cannot renew the worker lease: ${(e as Error).message}`);
        }
        await Promise.all([...workers.entries()].map(async ([shardId, w]) => {
          try {
            if (!(await leases.renew(w.lease))) {
              logger?.warn(`${where}: the lease of ${shardId} was taken over; stopping it`);
              w.stop.abort();
            }
          } catch (e) {
            logger?.warn(`${where}: cannot renew the lease of ${shardId}: ${(e as Error).message}`);
            if (!leaseValid(w.lease)) w.stop.abort();
          }
        }));
      }
    })();

    try {
      await leases.heartbeat().catch((e) => logger?.warn(`${where}: cannot write the worker lease: ${(e as Error).message}`));
      let failures = 0;
      while (!halt.signal.aborted) {
        let wakeAt: number | undefined;
        try {
          wakeAt = await discover();
          failures = 0;
        } catch (e) {
          if (halt.signal.aborted) break;
          if (isConfigError(e)) {
            fatal ??= new FreshetError("INVALID_CONFIG", `cannot list the shards of stream "${def.streamName}": ${(e as Error).message}; set region (or AWS_REGION) and credentials`, { plugin: "kinesis", definition: def.name, cause: e });
            break;
          }
          failures++;
          logger?.warn(`${where}: shard discovery failed (${(e as Error).name}: ${(e as Error).message}); retry ${failures}`);
        }
        await new Promise<void>((resolve) => {
          const ms = failures ? Math.min(discoverEveryMs, 250 * 2 ** failures) : Math.max(100, Math.min(discoverEveryMs, (wakeAt ?? Infinity) - Date.now()));
          const t = setTimeout(done, ms);
          function done() {
            clearTimeout(t);
            wake = undefined;
            resolve();
          }
          wake = done;
          if (halt.signal.aborted) done();
        });
      }
    } finally {
      halt.abort();
      await Promise.all([...workers.values()].map((w) => w.done));
      renewal.abort();
      await renewer;
      await leases.leave().catch(() => {});
      signal.removeEventListener("abort", onAbort);
      if (!opts.client) client.destroy();
      running = false;
    }
    if (fatal) throw fatal;
  }

  return {
    kind: "kinesis",
    name: def.name,
    lagUnit: "ms",
    workerId,
    application,
    run,
    lag(): SourceLag {
      return Object.fromEntries(lag);
    },
    owned(): OwnedShard[] {
      return [...workers.entries()].filter(([, w]) => !w.lease.lost).map(([shardId, w]) => ({ shardId, counter: w.lease.counter }));
    },
  };
}

function startPosition(def: KinesisSource): StartPosition {
  const s = def.startFrom ?? "TRIM_HORIZON";
  if (s === "TRIM_HORIZON" || s === "LATEST") return s;
  const timestamp = typeof s === "object" && s ? parseEventTime(s.timestamp) : undefined;
  if (timestamp === undefined) {
    throw new FreshetError("INVALID_CONFIG", `startFrom ${JSON.stringify(s)} is not valid: use "TRIM_HORIZON", "LATEST" or { timestamp: epochMs | "2026-01-01T00:00:00Z" }`, { plugin: "kinesis", definition: def.name });
  }
  return { timestamp };
}

async function createClient(sdk: Sdk, def: KinesisSource): Promise<KinesisClient> {
  const { NodeHttpHandler } = await import("@smithy/node-http-handler").catch(missingPackage("@smithy/node-http-handler", "the Kinesis source", "kinesis"));
  return new sdk.KinesisClient({
    // A custom endpoint (kinesis-local, LocalStack) still needs some region to sign with.
    region: def.region ?? (def.endpoint ? "us-east-1" : undefined),
    endpoint: def.endpoint,
    credentials: def.credentials,
    // The consumer paces and retries itself, within the per-shard limits.
    maxAttempts: 1,
    // HTTP/1.1: GetRecords needs no HTTP/2, and local servers refuse it.
    requestHandler: new NodeHttpHandler({ connectionTimeout: 5_000, requestTimeout: 30_000 }),
  });
}
