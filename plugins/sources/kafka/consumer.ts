/**
 * @module
 * The Kafka consumer: a kafkajs consumer group read with `eachBatch`, with
 * offsets committed only when Freshet acknowledges a batch.
 *
 * - At-least-once: every kafkajs batch (one partition) is handed on in chunks
 *   of `batchSize`; a chunk's `ack()` (after the stores took it) sends the
 *   commit of the offset after its last record, and returns without waiting
 *   for the broker's answer, so that the next chunk's write overlaps that
 *   commit. A partition has at most one commit in flight: the next `ack()`
 *   waits for it, and if it failed commits its own offset (which covers both)
 *   before returning, and throws if that fails too. So a crash redelivers at
 *   most the chunk being written and the one whose commit was in flight, and
 *   a commit never covers a record the stores have not accepted. Nothing
 *   else commits (autoCommit and auto-resolve are off).
 * - Rebalance-safe: a chunk is stale once this member may have lost its
 *   partition (a heartbeat or commit answered "rebalancing", "illegal
 *   generation" or "unknown member", the member rejoined, or a seek is
 *   pending); a stale chunk is neither written nor committed, and the broker
 *   fences a late commit by generation as well.
 * - Fetch overlaps write: eachBatch hands a batch on in the background and
 *   returns (its offsets resolved for the next fetch only) once the previous
 *   batch of the same partition is done, so kafkajs fetches the next batch
 *   while this one is written. Per partition at most one batch is being
 *   written and acknowledged and one fetched batch waits; what a crash
 *   redelivers is unchanged (the fetched batch was never handed on).
 * - Backpressure: kafkajs fetches again only after every batch of the last
 *   fetch was taken, so a slow or down store holds the fetch loop one batch
 *   per partition later (bounded memory) while this module keeps
 *   heartbeating so the member stays in the group.
 * - A clean stop: on abort no new chunk starts, in-flight chunks finish, every
 *   commit in flight is answered, then the member leaves the group and
 *   disconnects.
 */
import type { Admin, Consumer, EachBatchPayload, Kafka, KafkaMessage, RetryOptions } from "kafkajs";
import type { KafkaSource, Logger, RawRecord, SourceBatch, SourceLag, StreamSource } from "../../../core/index.ts";
import { FreshetError } from "../../../core/errors.ts";
import { parseDuration, parseEventTime } from "../../../core/time.ts";
import { createKafka } from "./client.ts";

/**
 * Options of {@link kafkaConsumer}. The group timings given here win over the
 * definition's (`sessionTimeout`, `heartbeatInterval`, `rebalanceTimeout`);
 * both default to kafkajs' own (session 30 s, heartbeat 3 s, rebalance 60 s).
 *
 * @example
 * ```ts
 * const opts: KafkaConsumerOptions = { logger: console, partitionsConsumedConcurrently: 8 }
 * ```
 */
export interface KafkaConsumerOptions {
  /** Where kafkajs warnings and consumer events go. Default `console`. */
  logger?: Logger;
  /** A kafkajs client of your own; its brokers, TLS and SASL are used instead of the definition's. */
  kafka?: Kafka;
  /** How many partitions are processed at once. Default 4. */
  partitionsConsumedConcurrently?: number;
  /** Group session timeout, ms: a member silent this long is removed from the group. */
  sessionTimeout?: number;
  /** How often the member heartbeats, ms, also while a slow batch is in flight. Default a fifth of the session timeout, at most 3 s. */
  heartbeatInterval?: number;
  /** How long the group waits for members to rejoin during a rebalance, ms. */
  rebalanceTimeout?: number;
  /** Largest fetch per partition, bytes (kafkajs default 1 MiB; a larger record is still fetched whole). */
  maxBytesPerPartition?: number;
  /** kafkajs' retry policy for connections and requests. */
  retry?: RetryOptions;
  /** Sees assignments, commits and stale batches: for metrics, logs and tests. */
  onEvent?: (event: KafkaConsumerEvent) => void;
}

/** What the consumer reports through `onEvent`. `generation` counts this member's joins of the group. */
export type KafkaConsumerEvent =
  | { type: "assigned"; generation: number; partitions: number[] }
  | { type: "committed"; generation: number; partition: number; offset: string }
  | { type: "stale"; generation: number; partition: number; firstOffset: string; lastOffset: string; reason: string };

/** A Kafka source: a {@link StreamSource} with lag in records. */
export interface KafkaStreamSource extends StreamSource {
  /** Always "kafka". */
  readonly kind: "kafka";
  /** Lag is counted in records. */
  readonly lagUnit: "records";
  /** High watermark minus the next offset to process, per assigned partition, as of the last fetch. */
  lag(): SourceLag;
}

/** Errors after which the member no longer owns its partitions until it rejoins. */
const GROUP_CHANGED = new Set(["REBALANCE_IN_PROGRESS", "ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID", "FENCED_INSTANCE_ID"]);
const groupChanged = (e: unknown): e is Error => GROUP_CHANGED.has((e as { type?: string })?.type ?? "");

/**
 * Consumes a Kafka topic as a stream source, on kafkajs `eachBatch`.
 *
 * @example
 * ```ts
 * const source = kafkaConsumer(trips, { logger: console })
 * const ac = new AbortController()
 * await consume(source, processor, { signal: ac.signal })
 * ```
 */
export function kafkaConsumer(def: KafkaSource, opts: KafkaConsumerOptions = {}): KafkaStreamSource {
  if (def?.kind !== "kafka") throw new FreshetError("INVALID_CONFIG", "kafkaConsumer needs a kafkaSource(...) definition", { plugin: "kafka" });
  const label = def.name;
  const fail = (msg: string) => new FreshetError("INVALID_CONFIG", msg, { plugin: "kafka", definition: label });
  const batchSize = def.batchSize ?? 500;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw fail(`batchSize ${def.batchSize} must be a positive integer`);
  const concurrency = opts.partitionsConsumedConcurrently ?? 4;
  if (!Number.isInteger(concurrency) || concurrency < 1) throw fail(`partitionsConsumedConcurrently ${concurrency} must be a positive integer`);
  let startAt: number | undefined;
  if (typeof def.startFrom === "object" && def.startFrom !== null) {
    startAt = parseEventTime(def.startFrom.timestamp);
    if (startAt === undefined) throw fail(`startFrom.timestamp ${JSON.stringify(def.startFrom.timestamp)} is not a time: use epoch ms or ISO 8601`);
  } else if (def.startFrom !== undefined && def.startFrom !== "earliest" && def.startFrom !== "latest") {
    throw fail(`startFrom ${JSON.stringify(def.startFrom)} must be "earliest", "latest" or { timestamp }`);
  }
  const timings = groupTimings(def, opts);
  const logger = opts.logger ?? console;
  const groupId = def.groupId ?? `freshet-${def.name}`;
  const topic = def.topic;
  /** Per assigned partition: the high watermark of the last fetch and the next offset to process. */
  const positions = new Map<number, { high: number; next: number }>();
  let running = false;

  async function run(onBatch: (batch: SourceBatch) => Promise<void>, signal: AbortSignal): Promise<void> {
    if (running) throw fail("this source is already running; create one kafkaConsumer per consumer");
    if (signal.aborted) return;
    running = true;
    const kafka = opts.kafka ?? await createKafka({ brokers: def.kafkaBootstrapServers, clientId: def.clientId, ssl: def.ssl, sasl: def.sasl, retry: opts.retry }, { label, logger });
    const consumer: Consumer = kafka.consumer({
      groupId,
      ...timings,
      maxBytesPerPartition: opts.maxBytesPerPartition,
      // Also bounds how long a stop waits for an idle fetch.
      maxWaitTimeInMs: def.lingerMs ?? 500,
      retry: opts.retry,
    });
    const heartbeatEvery = timings.heartbeatInterval;
    let admin: Admin | undefined;
    let generation = 0;
    let stopping = false;
    let fatal: unknown;
    let wake!: () => void;
    const stopped = new Promise<void>((resolve) => (wake = resolve));
    const stop = () => {
      stopping = true;
      wake();
    };
    const onAbort = () => stop();
    signal.addEventListener("abort", onAbort, { once: true });
    /** Per partition: the commit in flight (at most one), and whether the last one failed. */
    const commits = new Map<number, { inflight?: Promise<void>; failed?: { offset: string; error: unknown } }>();
    /** The generation a commit answered "the group changed" in: its chunks are stale from then on. */
    let lostGeneration: { generation: number; error: Error } | undefined;
    /** eachBatch calls and batches being handed on. */
    let active = 0;
    /** Per partition: the batch being handed on (at most one). */
    const processing = new Map<number, Promise<void>>();
    /** Partitions whose start position (startFrom timestamp) was settled in this generation. */
    const settled = new Set<number>();
    let timestampOffsets: Promise<Map<number, string>> | undefined;

    // While a JoinGroup is pending the coordinator holds it until the group's
    // rebalance completes: say what it waits for, instead of a silent "lag 0".
    const waiting = assignmentWait(label, groupId, timings, logger);
    consumer.on(consumer.events.REBALANCING, () => {
      positions.clear(); // eager rebalancing: nothing is assigned until the next join
      waiting.start();
    });
    consumer.on(consumer.events.GROUP_JOIN, (e) => {
      generation++;
      const partitions = [...(e.payload.memberAssignment[topic] ?? [])].sort((a, b) => a - b);
      for (const p of positions.keys()) if (!partitions.includes(p)) positions.delete(p);
      settled.clear();
      const waited = waiting.stop();
      logger.info(`[freshet] [kafka] "${label}": joined group "${groupId}", partitions [${partitions.join(", ")}] of ${topic}${waited === undefined ? "" : ` after waiting ${fmtSeconds(waited)} for the assignment`}`);
      opts.onEvent?.({ type: "assigned", generation, partitions });
      if (partitions.length > 0) void startingLag(partitions, generation);
    });

    /** The lag of newly assigned partitions before their first fetch: high watermark minus the committed offset (best effort). */
    async function startingLag(partitions: number[], gen: number): Promise<void> {
      try {
        admin ??= kafka.admin();
        await admin.connect();
        const [high, [committed]] = await Promise.all([admin.fetchTopicOffsets(topic), admin.fetchOffsets({ groupId, topics: [topic] })]);
        if (gen !== generation) return;
        for (const p of partitions) {
          if (positions.has(p)) continue;
          const h = high.find((x) => x.partition === p);
          const c = Number(committed?.partitions.find((x) => x.partition === p)?.offset ?? -1);
          if (h) positions.set(p, { high: Number(h.high), next: c >= 0 ? c : Number(h.low) });
        }
      } catch {
        // The lag of these partitions stays unknown until their first fetch.
      }
    }
    consumer.on(consumer.events.CRASH, (e) => {
      if (e.payload.restart) return; // kafkajs restarts the consumer by itself
      fatal ??= new FreshetError("SOURCE_UNAVAILABLE", `the consumer stopped: ${e.payload.error.message}`, { plugin: "kafka", definition: label, cause: e.payload.error });
      stop();
    });

    /**
     * With startFrom a timestamp, a partition the group never committed is
     * moved to the first offset at or after it. Nothing is committed until a
     * batch from there is written, so a crash before that just repeats this.
     */
    async function needsSeek(p: EachBatchPayload): Promise<boolean> {
      const { partition } = p.batch;
      if (startAt === undefined || settled.has(partition)) return false;
      admin ??= kafka.admin();
      await admin.connect();
      const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] });
      settled.add(partition);
      const mine = committed?.partitions.find((x) => x.partition === partition);
      if (mine && Number(mine.offset) >= 0) return false;
      timestampOffsets ??= admin.fetchTopicOffsetsByTimestamp(topic, startAt).then((list) => new Map(list.map((x) => [x.partition, x.offset])));
      const target = (await timestampOffsets).get(partition);
      if (target === undefined || target === p.batch.firstOffset()) return false;
      logger.info(`[freshet] [kafka] "${label}": partition ${partition} starts at offset ${target} (startFrom ${new Date(startAt).toISOString()})`);
      consumer.seek({ topic, partition, offset: target });
      return true;
    }

    /** Sends a chunk's commit; at most one per partition is in flight (the caller waited for the previous one). */
    function sendCommit(p: EachBatchPayload, partition: number, mine: number, firstOffset: string, lastOffset: string, next: string): Promise<void> {
      const state = commits.get(partition) ?? {};
      commits.set(partition, state);
      const sent: Promise<void> = p.commitOffsetsIfNecessary({ topics: [{ topic, partitions: [{ partition, offset: next }] }] }).then(
        () => {
          if (state.inflight === sent) state.inflight = undefined;
          state.failed = undefined;
          opts.onEvent?.({ type: "committed", generation: mine, partition, offset: next });
        },
        (e: unknown) => {
          if (state.inflight === sent) state.inflight = undefined;
          if (groupChanged(e)) {
            if (!lostGeneration || lostGeneration.generation < mine) lostGeneration = { generation: mine, error: e };
            opts.onEvent?.({ type: "stale", generation: mine, partition, firstOffset, lastOffset, reason: `its commit answered ${(e as { type?: string }).type ?? e.message}` });
          } else {
            state.failed = { offset: next, error: e };
            logger.warn(`[freshet] [kafka] "${label}": commit of partition ${partition} offset ${next} failed: ${(e as Error).message}; the next commit of the partition covers it`);
          }
        },
      );
      state.inflight = sent;
      return sent;
    }

    /** Waits until no eachBatch runs, then for every commit in flight; one that failed is sent again, once. */
    async function settleCommits(): Promise<void> {
      while (active > 0) await new Promise((r) => setTimeout(r, 5));
      await Promise.all([...commits.values()].map((c) => c.inflight));
      for (const [partition, c] of commits) {
        if (!c.failed) continue;
        try {
          await consumer.commitOffsets([{ topic, partition, offset: c.failed.offset }]);
          opts.onEvent?.({ type: "committed", generation, partition, offset: c.failed.offset });
        } catch (e) {
          logger.warn(`[freshet] [kafka] "${label}": commit of partition ${partition} offset ${c.failed.offset} failed again at stop: ${(e as Error).message}; its records will be redelivered`);
        }
      }
    }

    /**
     * A kafkajs batch: once the previous batch of its partition is done, it
     * is handed on in the background and its offsets resolved, so that
     * kafkajs fetches the next one while this one is written. A partition so
     * has at most one batch being processed and one fetched batch waiting.
     */
    async function eachBatch(p: EachBatchPayload): Promise<void> {
      const { batch } = p;
      const { partition } = batch;
      active++;
      let started = false;
      try {
        await processing.get(partition);
        if (stopping || !p.isRunning()) return;
        const mine = generation;
        // A heartbeat or commit said the group changed: thrown, it makes kafkajs rejoin.
        if (lostGeneration?.generation === mine) throw lostGeneration.error;
        const first = batch.messages[0]?.offset;
        if (first === undefined) return;
        positions.set(partition, { high: Number(batch.highWatermark), next: positions.get(partition)?.next ?? Number(first) });
        if (await needsSeek(p)) return;
        const work: Promise<void> = handOn(p, mine)
          .catch((e: unknown) => {
            if (!(signal.aborted && (e as FreshetError)?.code === "ABORTED")) {
              fatal ??= e;
              stop();
            }
          })
          .finally(() => {
            active--;
            if (processing.get(partition) === work) processing.delete(partition);
          });
        started = true;
        processing.set(partition, work);
        // Only the fetch position moves on: nothing is committed before its records are written.
        p.resolveOffset(batch.lastOffset());
      } finally {
        if (!started) active--;
      }
    }

    /** Hands a batch on in chunks of batchSize, in order, each acknowledged (committed) before the next starts. */
    async function handOn(p: EachBatchPayload, mine: number): Promise<void> {
      const { batch } = p;
      const { partition } = batch;
      const staleReason = (): string | undefined => {
        const lost = lostGeneration?.generation === mine ? lostGeneration.error : undefined;
        return lost ? `the group changed (${(lost as { type?: string }).type ?? lost.message})` : mine !== generation ? "the member rejoined the group" : p.isStale() ? "a seek is pending" : undefined;
      };
      const messages = batch.messages;
      for (let i = 0; i < messages.length; i += batchSize) {
        if (stopping || staleReason()) break;
        const end = Math.min(i + batchSize, messages.length);
        const records: RawRecord[] = new Array(end - i);
        for (let j = i; j < end; j++) records[j - i] = toRecord(topic, partition, messages[j]);
        const firstOffset = messages[i].offset;
        const lastOffset = messages[end - 1].offset;
        let acked = false;
        const sourceBatch: SourceBatch = {
          records,
          isStale: () => staleReason() !== undefined,
          async ack() {
            if (acked) return;
            // At most one commit in flight per partition: the previous chunk's is answered first.
            await commits.get(partition)?.inflight;
            const why = staleReason();
            if (why) throw new FreshetError("SOURCE_UNAVAILABLE", `partition ${partition} offsets ${firstOffset}-${lastOffset} not committed: ${why}; another member will redeliver them`, { plugin: "kafka", definition: label });
            const next = (BigInt(lastOffset) + 1n).toString();
            const sent = sendCommit(p, partition, mine, firstOffset, lastOffset, next);
            // The previous commit failed: this one (covering both) is waited for, so that a broker
            // that takes no commit pauses the source instead of letting the uncommitted window grow.
            if (commits.get(partition)?.failed) {
              await sent;
              const failed = commits.get(partition)?.failed;
              if (failed?.offset === next || staleReason()) {
                throw new FreshetError("SOURCE_UNAVAILABLE", `commit of partition ${partition} offset ${next} failed: ${staleReason() ?? (failed?.error as Error)?.message}`, { plugin: "kafka", definition: label, cause: failed?.error });
              }
            }
            acked = true;
            const pos = positions.get(partition);
            if (pos) pos.next = Number(next);
          },
        };
        // A slow store (consume() retrying) must not get the member kicked out of the group.
        const keepAlive = setInterval(() => {
          p.heartbeat().catch((e) => {
            if (groupChanged(e) && (!lostGeneration || lostGeneration.generation < mine)) lostGeneration = { generation: mine, error: e };
          });
        }, heartbeatEvery);
        try {
          await onBatch(sourceBatch);
        } finally {
          clearInterval(keepAlive);
        }
        if (!acked) {
          const reason = staleReason() ?? (stopping ? "stopping" : "not acknowledged");
          opts.onEvent?.({ type: "stale", generation: mine, partition, firstOffset, lastOffset, reason });
          break;
        }
      }
    }

    try {
      await consumer.connect();
      await consumer.subscribe({ topics: [topic], fromBeginning: def.startFrom !== "latest" });
      waiting.start();
      await consumer.run({ autoCommit: false, eachBatchAutoResolve: false, partitionsConsumedConcurrently: concurrency, eachBatch });
      await stopped;
    } catch (e) {
      fatal ??= new FreshetError("SOURCE_UNAVAILABLE", `cannot consume ${topic}: ${(e as Error).message}${connectHint(def, e)}`, { plugin: "kafka", definition: label, cause: e });
    } finally {
      waiting.stop();
      signal.removeEventListener("abort", onAbort);
      stopping = true;
      // In-flight batches finish and their commits are answered; then it leaves the group and closes the connections.
      await settleCommits();
      await consumer.disconnect().catch((e) => logger.warn(`[freshet] [kafka] "${label}": disconnect: ${(e as Error).message}`));
      await admin?.disconnect().catch(() => {});
      running = false;
    }
    if (fatal !== undefined) throw fatal;
  }

  return {
    kind: "kafka",
    name: def.name,
    lagUnit: "records",
    run,
    lag() {
      const out: SourceLag = {};
      for (const [p, { high, next }] of positions) out[String(p)] = Math.max(0, high - next);
      return out;
    },
  };
}

/** The group timings kafkajs gets, in ms: the options, else the definition's, else kafkajs' defaults (heartbeat: a fifth of the session, at most 3 s). */
export function groupTimings(def: KafkaSource, opts: Pick<KafkaConsumerOptions, "sessionTimeout" | "heartbeatInterval" | "rebalanceTimeout"> = {}): { sessionTimeout: number; heartbeatInterval: number; rebalanceTimeout: number } {
  const ms = (v: number | string | undefined) => (v === undefined ? undefined : parseDuration(v));
  const sessionTimeout = opts.sessionTimeout ?? ms(def.sessionTimeout) ?? 30_000;
  const rebalanceTimeout = opts.rebalanceTimeout ?? ms(def.rebalanceTimeout) ?? 60_000;
  const heartbeatInterval = opts.heartbeatInterval ?? ms(def.heartbeatInterval) ?? Math.min(3000, Math.max(100, Math.floor(sessionTimeout / 5)));
  for (const [k, v] of Object.entries({ sessionTimeout, rebalanceTimeout, heartbeatInterval })) {
    if (!(Number.isFinite(v) && v > 0)) throw new FreshetError("INVALID_CONFIG", `${k} ${v} must be a positive number of ms`, { plugin: "kafka", definition: def.name });
  }
  if (heartbeatInterval >= sessionTimeout) {
    throw new FreshetError("INVALID_CONFIG", `heartbeatInterval ${heartbeatInterval} ms must be below sessionTimeout ${sessionTimeout} ms (at most a third of it is usual)`, { plugin: "kafka", definition: def.name });
  }
  return { sessionTimeout, heartbeatInterval, rebalanceTimeout };
}

/** How long a pending JoinGroup waits before it is logged, and then how often. */
const WAIT_LOG_AFTER_MS = 5000;
const WAIT_LOG_EVERY_MS = 10_000;

const fmtSeconds = (ms: number) => `${Math.round(ms / 100) / 10} s`;

/**
 * Logs, while this member waits for a partition assignment, what the
 * coordinator waits for: the members of the previous generation to rejoin. A
 * member that was killed never does, so the group waits until its session
 * expires (measured on librdkafka's mock cluster: one to two session
 * timeouts after the kill; bench/results/kafka-recovery.txt).
 */
function assignmentWait(label: string, groupId: string, t: { sessionTimeout: number }, logger: Logger) {
  let since: number | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const log = () => {
    if (since === undefined) return;
    const now = Date.now();
    const left = since + t.sessionTimeout - now;
    const session = left > 0
      ? `previous member's session expires within ${Math.ceil(left / 1000)} s (sessionTimeout ${fmtSeconds(t.sessionTimeout)}, if it had the same)`
      : `previous member's session (sessionTimeout ${fmtSeconds(t.sessionTimeout)}, if it had the same) has run out and the coordinator has not completed the rebalance yet`;
    logger.info(`[freshet] [kafka] "${label}": waiting for partition assignment: group "${groupId}" rebalancing, ${session}; no partition is read meanwhile (${fmtSeconds(now - since)} so far; a killed member's partitions move sooner with a shorter sessionTimeout)`);
    timer = setTimeout(log, WAIT_LOG_EVERY_MS);
  };
  return {
    start() {
      if (since !== undefined) return;
      since = Date.now();
      timer = setTimeout(log, WAIT_LOG_AFTER_MS);
    },
    /** Ends the wait; how long it lasted when it was logged, else undefined. */
    stop(): number | undefined {
      if (since === undefined) return undefined;
      const waited = Date.now() - since;
      since = undefined;
      clearTimeout(timer);
      return waited >= WAIT_LOG_AFTER_MS ? waited : undefined;
    },
  };
}

/** A hint for the usual cause of a failed first connection with TLS or SASL set. */
function connectHint(def: KafkaSource, e: unknown): string {
  const msg = String((e as Error)?.message ?? e);
  if (def.sasl && /requested API version|SASL/i.test(msg)) return " (the SASL handshake was refused: does this listener take SASL?)";
  if (def.ssl && /Connection error|ECONNRESET|socket disconnected|TLS|SSL/i.test(msg)) return " (with TLS: does this listener speak TLS?)";
  return "";
}

function toRecord(topic: string, partition: number, m: KafkaMessage): RawRecord {
  const brokerTime = Number(m.timestamp);
  return {
    // A null value (a tombstone) reaches the format as empty bytes, which it rejects with a reason.
    value: m.value ?? new Uint8Array(0),
    position: { kind: "kafka", topic, partition, offset: m.offset },
    brokerTime: Number.isFinite(brokerTime) && brokerTime >= 0 ? brokerTime : undefined,
  };
}
