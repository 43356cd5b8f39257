/**
 * @module
 * Replays dead letters through the same pipeline after a schema or UDF fix:
 * each letter's payload is decoded by its source's format, validated, run
 * through the UDF and written, as if it arrived now, but without the
 * watermark (a replay is late by design). What passes is written online and
 * logged offline; what still fails is handed back with its new reason.
 *
 * Replaying the same letters again does nothing twice: each chunk of letters
 * carries an idempotency key made from the letters it holds (done in the same
 * atomic step as its write), so an aggregation does not count a replayed
 * event twice when the same file or topic is replayed again.
 */
import type { DeadLetter, DeadLetterSink, RawRecord } from "./contracts.ts";
import { FreshetError } from "./errors.ts";
import type { Processor, RecordIssue } from "./processor.ts";

/** Progress and outcome of a replay. */
export interface ReplayProgress {
  /** Letters read so far. */
  read: number;
  /** Letters that now pass: written, stale (an equal or newer value was there), expired (outside the ttl), or skipped (the UDF filters them). */
  passed: number;
  /** Letters written. */
  written: number;
  /** Letters not newer than what the store held. */
  stale: number;
  /** Letters already outside the view's ttl. */
  expired: number;
  /** Letters the UDF filtered out. */
  skipped: number;
  /** Letters that still fail, by reason (`schema`, `udf`, `timestamp`, `decode`, `join_key`, `unknown_source`, `truncated`). */
  failed: Record<string, number>;
  /** Letters in a chunk that an earlier replay already applied (same letters, same chunk). */
  alreadyReplayed: number;
  /** Letters in all, when known up front. */
  total?: number;
  /** Whether the replay is finished. */
  done: boolean;
}

/** Options of {@link replayDeadLetters}. */
export interface ReplayOptions {
  /** Called after each chunk. */
  onProgress?: (p: ReplayProgress) => void;
  /** Letters in all, for the percentage, when the caller counted them. */
  total?: number;
  /** How long a replayed chunk is remembered as done, in ms. Default 30 days. */
  idempotencyTtlMs?: number;
  /** The clock, for the `at` of letters that still fail. */
  now?: () => number;
}

const DAY = 86_400_000;

/** The raw record a dead letter was made from. */
export function recordOfDeadLetter(letter: DeadLetter): RawRecord {
  let value: RawRecord["value"];
  if (letter.encoding === "base64") value = Uint8Array.from(atob(letter.payload), (c) => c.charCodeAt(0));
  else if (letter.encoding === "json") value = JSON.parse(letter.payload);
  else value = letter.payload;
  return { value, position: letter.position };
}

/** A stable text of what identifies a letter: its source, view, position and payload. */
function identity(l: DeadLetter): string {
  return JSON.stringify([l.source, l.view ?? null, l.position, l.encoding ?? "utf8", l.payload]);
}

async function sha256Hex(text: string): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Replays chunks of dead letters through `processor`. Letters that still
 * fail go to the processor's dead-letter sink with their new reason and
 * their original position and payload: give it a sink other than the one
 * being read (the CLI writes `<file>.still-failing.jsonl`). They are written
 * before the chunk is marked done, so a crash loses none.
 *
 * @example
 * ```ts
 * const processor = createProcessor({ registry, online, offline, deadLetters: fileDeadLetters("data/still-failing.jsonl") })
 * const result = await replayDeadLetters(processor, readDeadLetterFile("data/dead-letters.jsonl"))
 * ```
 */
export async function replayDeadLetters(processor: Processor, chunks: AsyncIterable<DeadLetter[]>, opts: ReplayOptions = {}): Promise<ReplayProgress> {
  const now = opts.now ?? Date.now;
  const ttl = opts.idempotencyTtlMs ?? 30 * DAY;
  const meta = processor.online?.meta;
  const p: ReplayProgress = { read: 0, passed: 0, written: 0, stale: 0, expired: 0, skipped: 0, failed: {}, alreadyReplayed: 0, total: opts.total, done: false };
  const refused: DeadLetter[] = [];
  const refuse = (l: DeadLetter, reason: string, message: string) => {
    p.failed[reason] = (p.failed[reason] ?? 0) + 1;
    refused.push({ ...l, reason: reason as DeadLetter["reason"], message, path: undefined, at: new Date(now()).toISOString() });
  };

  for await (const chunk of chunks) {
    p.read += chunk.length;
    // One group per source and view, in the order first met.
    const groups = new Map<string, { source: string; view?: string; letters: DeadLetter[] }>();
    for (const l of chunk) {
      if (!processor.registry.sources.has(l.source) || processor.registry.viewsForSource(l.source).length === 0) {
        refuse(l, "unknown_source", `no stream feature view reads source "${l.source}" in this repo; known sources: ${[...processor.registry.sources.keys()].join(", ")}`);
        continue;
      }
      if (/\(payload cut from \d+ to \d+ bytes/.test(l.message)) {
        refuse(l, "truncated", `the dead letter holds a cut payload; replay the record from its position in the source: ${JSON.stringify(l.position)}`);
        continue;
      }
      const view = l.view && processor.registry.viewsForSource(l.source).some((v) => v.name === l.view) ? l.view : undefined;
      const k = `${l.source}\u0000${view ?? ""}`;
      let g = groups.get(k);
      if (!g) groups.set(k, (g = { source: l.source, view, letters: [] }));
      g.letters.push(l);
    }
    if (refused.length) await processor.deadLetters.write(refused.splice(0));
    for (const g of groups.values()) {
      const key = `replay:${await sha256Hex(g.letters.map(identity).join("\n"))}`;
      let token: string | undefined;
      if (meta) {
        const state = await meta.begin(key, key, 60_000);
        if (state.state === "done") {
          p.alreadyReplayed += g.letters.length;
          continue;
        }
        if (state.state === "pending") throw new FreshetError("STORE_UNAVAILABLE", "another replay of the same dead letters is running; wait for it, then run this one again", { retriable: true });
        token = state.token;
      }
      try {
        const records = g.letters.map((l) => {
          try {
            return recordOfDeadLetter(l);
          } catch {
            // A payload that no longer parses as its encoding says: the format's decode reports it.
            return { value: l.payload, position: l.position };
          }
        });
        const prepared = await processor.prepare(g.source, records, { views: g.view ? [g.view] : undefined, watermark: false });
        // Dead letters first, then the writes, with the chunk's key done in the same step as the last one.
        const result = await processor.commit(prepared, meta ? { idempotency: { key, fingerprint: key, ttlMs: ttl } } : {});
        const bad = new Map<number, RecordIssue>();
        for (const i of result.deadLettered) if (!bad.has(i.index)) bad.set(i.index, i);
        for (const i of bad.values()) p.failed[i.reason] = (p.failed[i.reason] ?? 0) + 1;
        p.passed += g.letters.length - bad.size;
        for (const c of Object.values(result.views)) {
          p.written += c.written;
          p.stale += c.stale;
          p.expired += c.expired;
          p.skipped += c.skipped;
        }
      } catch (e) {
        if (meta && token) await meta.abandon(key, token).catch(() => {});
        throw e;
      }
    }
    opts.onProgress?.({ ...p, failed: { ...p.failed } });
  }
  p.done = true;
  opts.onProgress?.({ ...p, failed: { ...p.failed } });
  return p;
}
