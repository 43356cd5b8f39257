/**
 * @module
 * Dead letters to a Kafka topic: each dead letter is one JSON message, keyed
 * by where the record came from, with its reason and source position in the
 * headers so that a consumer of the dead-letter topic can route and replay
 * without parsing the body.
 */
import type { Kafka, Message, Producer } from "kafkajs";
import type { DeadLetter, DeadLetterSink, Logger } from "../../../core/index.ts";
import { FreshetError } from "../../../core/errors.ts";
import { createKafka, type KafkaConnection, loadKafkajs } from "./client.ts";

/**
 * Options of {@link kafkaDeadLetters}.
 *
 * @example
 * ```ts
 * const opts: KafkaDeadLettersOptions = { brokers: "b1:9093", topic: "trips.dead-letters", ssl: true }
 * ```
 */
export interface KafkaDeadLettersOptions extends Partial<KafkaConnection> {
  /** The dead-letter topic. */
  topic: string;
  /** A kafkajs client of your own, instead of `brokers`, `ssl` and `sasl`. */
  kafka?: Kafka;
  /** Where producer warnings go. Default `console`. */
  logger?: Logger;
  /**
   * Largest message value, in bytes. A dead letter above it keeps its
   * position and reason but its payload is cut to fit, and the
   * `payload-truncated` header holds the original size: the record itself is
   * still in the source topic at that position. Default 1,000,000 (just
   * under Kafka's default `message.max.bytes`).
   */
  maxMessageBytes?: number;
}

const encoder = new TextEncoder();

/**
 * A dead-letter sink that produces to a Kafka topic (acks from all in-sync
 * replicas). It throws when the broker does not take a letter, so the
 * processor retries the batch instead of losing it.
 *
 * Headers: `reason`, `source`, `view`, `source-topic`, `source-partition`,
 * `source-offset` (Kafka records; other sources put their position in
 * `position`), and `payload-truncated` when the payload was cut.
 *
 * @example
 * ```ts
 * const deadLetters = kafkaDeadLetters({ brokers: "localhost:9092", topic: "driver_stats.dead-letters" })
 * const processor = createProcessor({ registry, online, deadLetters })
 * ```
 */
export function kafkaDeadLetters(opts: KafkaDeadLettersOptions): DeadLetterSink {
  if (typeof opts?.topic !== "string" || !opts.topic) throw new FreshetError("INVALID_CONFIG", 'kafkaDeadLetters needs a topic, e.g. topic: "driver_stats.dead-letters"', { plugin: "kafka" });
  if (!opts.kafka && opts.brokers === undefined) throw new FreshetError("INVALID_CONFIG", "kafkaDeadLetters needs brokers (or a kafka client)", { plugin: "kafka" });
  const maxBytes = opts.maxMessageBytes ?? 1_000_000;
  const label = `dead-letters:${opts.topic}`;
  let producer: Promise<Producer> | undefined;

  const connect = () =>
    (producer ??= (async () => {
      const kafka = opts.kafka ?? await createKafka({ brokers: opts.brokers!, clientId: opts.clientId, ssl: opts.ssl, sasl: opts.sasl, retry: opts.retry }, { label, logger: opts.logger });
      const { Partitioners } = await loadKafkajs();
      const p = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner, allowAutoTopicCreation: true });
      await p.connect();
      return p;
    })().catch((e) => {
      producer = undefined; // connect again on the next write
      throw e;
    }));

  return {
    name: `kafka:${opts.topic}`,
    async write(letters: DeadLetter[]): Promise<void> {
      if (letters.length === 0) return;
      const messages = letters.map((l) => toMessage(l, maxBytes));
      try {
        const p = await connect();
        await p.send({ topic: opts.topic, acks: -1, messages });
      } catch (e) {
        throw new FreshetError("STORE_UNAVAILABLE", `cannot produce ${letters.length} dead letters to ${opts.topic}: ${(e as Error).message}`, { plugin: "kafka", cause: e, retriable: true });
      }
    },
    async close() {
      const p = producer;
      producer = undefined;
      if (p) await (await p.catch(() => undefined))?.disconnect();
    },
  };
}

function toMessage(letter: DeadLetter, maxBytes: number): Message {
  const pos = letter.position;
  const headers: Record<string, string> = { reason: letter.reason, source: letter.source };
  if (letter.view) headers.view = letter.view;
  let key: string;
  if (pos.kind === "kafka") {
    headers["source-topic"] = pos.topic;
    headers["source-partition"] = String(pos.partition);
    headers["source-offset"] = pos.offset;
    key = `${pos.topic}/${pos.partition}/${pos.offset}`;
  } else {
    headers.position = JSON.stringify(pos);
    key = `${letter.source}/${JSON.stringify(pos)}`;
  }
  let value = JSON.stringify(letter);
  const size = encoder.encode(value).length;
  if (size > maxBytes) {
    const payloadBytes = encoder.encode(letter.payload).length;
    const room = Math.max(0, maxBytes - (size - payloadBytes) - 256);
    let payload = letter.payload.slice(0, room);
    while (payload.length > 0 && encoder.encode(payload).length > room) payload = payload.slice(0, Math.floor(payload.length * 0.9));
    value = JSON.stringify({ ...letter, payload, message: `${letter.message} (payload cut from ${payloadBytes} to ${encoder.encode(payload).length} bytes; the record is at its position in the source)` });
    headers["payload-truncated"] = String(payloadBytes);
  }
  return { key, value, headers };
}

/**
 * Reads a dead-letter topic from its start to its end as it is now (the
 * high watermarks when called), in chunks, for `freshet replay`. It reads
 * without a consumer group's commits (a group of its own, never committed),
 * so every replay sees the whole topic; the replay's idempotency keys make a
 * second replay of the same letters a no-op. A message that is not a dead
 * letter is refused, naming its partition and offset.
 *
 * @example
 * ```ts
 * const { total, chunks } = await readKafkaDeadLetters({ brokers: "localhost:9092", topic: "driver_stats.dead-letters" })
 * ```
 */
export async function readKafkaDeadLetters(opts: KafkaDeadLettersOptions & { chunkSize?: number }): Promise<{ total: number; chunks: AsyncIterable<DeadLetter[]> }> {
  if (!opts.kafka && opts.brokers === undefined) throw new FreshetError("INVALID_CONFIG", "readKafkaDeadLetters needs brokers (or a kafka client)", { plugin: "kafka" });
  const label = `replay:${opts.topic}`;
  const kafka = opts.kafka ?? await createKafka({ brokers: opts.brokers!, clientId: opts.clientId, ssl: opts.ssl, sasl: opts.sasl, retry: opts.retry }, { label, logger: opts.logger });
  const admin = kafka.admin();
  await admin.connect();
  let ends: Map<number, bigint>;
  let total = 0;
  try {
    const offsets = await admin.fetchTopicOffsets(opts.topic);
    ends = new Map(offsets.map((o) => [o.partition, BigInt(o.high)]));
    for (const o of offsets) total += Number(BigInt(o.high) - BigInt(o.low));
  } catch (e) {
    throw new FreshetError("INVALID_CONFIG", `cannot read dead-letter topic ${opts.topic}: ${(e as Error).message}`, { plugin: "kafka", cause: e });
  } finally {
    await admin.disconnect();
  }
  const chunkSize = opts.chunkSize ?? 500;
  async function* chunks(): AsyncGenerator<DeadLetter[]> {
    const open = new Map([...ends].filter(([, high]) => high > 0n));
    if (open.size === 0) return;
    // A group of one member that never commits: short timings, so that a rebalance (there is no one else to wait for) is quick.
    const consumer = kafka.consumer({ groupId: `freshet-replay-${crypto.randomUUID()}`, allowAutoTopicCreation: false, sessionTimeout: 6000, rebalanceTimeout: 6000, heartbeatInterval: 500, maxWaitTimeInMs: 500 });
    // A hand-off between kafkajs's push (eachBatch) and this pull: one chunk at a time.
    const queue: DeadLetter[][] = [];
    let wake: (() => void) | undefined;
    let failure: unknown;
    let finished = false;
    let taken: (() => void) | undefined;
    const notify = () => {
      wake?.();
      wake = undefined;
    };
    await consumer.connect();
    try {
      await consumer.subscribe({ topic: opts.topic, fromBeginning: true });
      await consumer.run({
        autoCommit: false,
        eachBatchAutoResolve: false,
        eachBatch: async ({ batch, resolveOffset }) => {
          const end = open.get(batch.partition);
          if (end === undefined) return;
          let out: DeadLetter[] = [];
          for (const m of batch.messages) {
            if (BigInt(m.offset) >= end) break;
            const text = m.value?.toString("utf8") ?? "";
            let letter: DeadLetter;
            try {
              letter = JSON.parse(text);
            } catch {
              failure = new FreshetError("INVALID_CONFIG", `${opts.topic} partition ${batch.partition} offset ${m.offset} is not a dead letter (not JSON)`, { plugin: "kafka" });
              notify();
              return;
            }
            out.push(letter);
            resolveOffset(m.offset);
            if (BigInt(m.offset) + 1n >= end) open.delete(batch.partition);
            if (out.length >= chunkSize) {
              queue.push(out);
              out = [];
              notify();
              await new Promise<void>((r) => (taken = r));
            }
          }
          if (out.length) {
            queue.push(out);
            notify();
            await new Promise<void>((r) => (taken = r));
          }
          if (open.size === 0) {
            finished = true;
            notify();
          }
        },
      });
      for (;;) {
        if (failure) throw failure;
        const next = queue.shift();
        if (next) {
          yield next;
          const t = taken;
          taken = undefined;
          t?.();
          continue;
        }
        if (finished) return;
        await new Promise<void>((r) => (wake = r));
      }
    } finally {
      taken?.();
      await consumer.disconnect().catch(() => {});
    }
  }
  return { total, chunks: chunks() };
}
