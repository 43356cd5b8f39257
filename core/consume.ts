/**
 * @module
 * Runs a streaming source through the processor: prepare, commit, then ack,
 * retrying the commit while a store is down. The source awaits each batch, so a store
 * outage pauses the source instead of buffering (bounded memory).
 */
import type { Logger, SourceBatch, StreamSource } from "./contracts.ts";
import { FreshetError, isRetriable } from "./errors.ts";
import { outageLog } from "./outage.ts";
import type { BatchResult, PreparedBatch, Processor } from "./processor.ts";

/** Options of {@link consume}. */
export interface ConsumeOptions {
  /** Stops the source; in-flight batches finish and are acknowledged first. */
  signal: AbortSignal;
  /** Where retries and stops are logged. Default `console`. */
  logger?: Logger;
  /** Backoff while a store is down. Defaults: 200 ms doubling to 10 s. */
  retry?: { initialMs?: number; maxMs?: number };
  /** How often to log lag and throughput, in ms; 0 turns it off. Default 10 s. */
  logEveryMs?: number;
  /** Called after each batch is acknowledged. */
  onBatch?: (result: BatchResult, batch: SourceBatch) => void;
}

/**
 * Consumes a source until `signal` aborts.
 *
 * @example
 * ```ts
 * const ac = new AbortController()
 * await consume(kafkaConsumer(trips), processor, { signal: ac.signal })
 * ```
 */
export async function consume(source: StreamSource, processor: Processor, opts: ConsumeOptions): Promise<void> {
  const { signal, logger } = opts;
  const initial = opts.retry?.initialMs ?? 200;
  const max = opts.retry?.maxMs ?? 10_000;
  const metrics = processor.metrics;
  let records = 0;
  let lastReport = Date.now();
  /** Partitions whose lag gauge is set: one no longer held is removed, not left at its last value. */
  const reported = new Set<string>();
  const report = () => {
    const now = Date.now();
    const rate = records / Math.max((now - lastReport) / 1000, 0.001);
    metrics.set("freshet_source_events_per_second", { source: source.name }, Math.round(rate));
    const lag = source.lag?.() ?? {};
    let total = 0;
    for (const part of reported) if (!(part in lag)) metrics.remove("freshet_source_lag", { source: source.name, partition: part });
    reported.clear();
    for (const [part, value] of Object.entries(lag)) {
      metrics.set("freshet_source_lag", { source: source.name, partition: part }, value);
      reported.add(part);
      total += value;
    }
    const held = Object.keys(lag).length;
    if (source.lag) metrics.set("freshet_source_partitions", { source: source.name }, held);
    if (logger && opts.logEveryMs !== 0) {
      // No partition (or shard) held: the lag is not known, which is not 0.
      const lagText = held > 0 || !source.lag
        ? `lag ${total} ${source.lagUnit ?? "records"} over ${held} partitions`
        : `lag unknown: no ${source.kind === "kinesis" ? "shards held" : "partitions assigned"}`;
      logger.info(`[freshet] [${source.kind}] "${source.name}": ${Math.round(rate)} events/s, ${lagText}`);
    }
    records = 0;
    lastReport = now;
  };
  // One line when the store goes down and one when it is back, however many partitions retry meanwhile.
  const outage = outageLog(logger, `[${source.kind}] "${source.name}"`, `source paused, retrying (backoff ${initial} ms doubling to ${max} ms)`);
  const timer = opts.logEveryMs === 0 ? undefined : setInterval(report, opts.logEveryMs ?? 10_000);

  async function onBatch(batch: SourceBatch): Promise<void> {
    let delay = initial;
    // Prepared once: a retry after a store failure only retries the writes, so dead letters are written once.
    let prepared: PreparedBatch | undefined;
    for (;;) {
      if (batch.isStale?.()) {
        metrics.inc("freshet_batches_total", { source: source.name, result: "stale" });
        return; // revoked or lease lost: another worker owns these records now
      }
      // With other partitions' batches in flight, one that began before the outage may succeed after it began.
      const attemptAt = Date.now();
      try {
        prepared ??= await processor.prepare(source.name, batch.records);
        const result = await processor.commit(prepared);
        if (batch.isStale?.()) {
          metrics.inc("freshet_batches_total", { source: source.name, result: "stale" });
          return;
        }
        await batch.ack();
        outage.ok(attemptAt);
        records += batch.records.length;
        opts.onBatch?.(result, batch);
        return;
      } catch (e) {
        if (!isRetriable(e)) throw e;
        if (signal.aborted) throw new FreshetError("ABORTED", `stopped while the store was down; ${batch.records.length} records left unacknowledged for redelivery`, { plugin: source.kind, cause: e });
        metrics.inc("freshet_batches_total", { source: source.name, result: "retry" });
        outage.failed(e, `${batch.records.length} records waiting`);
        // Sleep in short steps, so that a batch revoked meanwhile is given up at once.
        const until = Date.now() + delay * (0.5 + Math.random() / 2);
        while (Date.now() < until && !signal.aborted && !batch.isStale?.()) await sleep(Math.min(250, until - Date.now()), signal);
        delay = Math.min(delay * 2, max);
      }
    }
  }

  try {
    await source.run(onBatch, signal);
  } finally {
    if (timer !== undefined) clearInterval(timer);
    report();
  }
}

/** Sleeps, waking early when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
