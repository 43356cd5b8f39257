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
