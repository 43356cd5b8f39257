/**
 * @module
 * JSON messages: UTF-8 bytes to an object. This is what a Kafka or Kinesis
 * source uses when its definition names no format.
 *
 * @example
 * ```ts
 * import { jsonFormat } from "freshet/formats/json"
 * const trips = kafkaSource({ name: "trips", kafkaBootstrapServers: "localhost:9092", topic: "trips", messageFormat: jsonFormat() })
 * ```
 */
import type { Format } from "../../core/contracts.ts";

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });

/**
 * The JSON format. Invalid UTF-8, invalid JSON and an empty message (a Kafka
 * tombstone) throw, and the processor dead-letters the record as `decode`.
 *
 * @example
 * ```ts
 * await jsonFormat().decode(new TextEncoder().encode('{"driver_id": 1001}')) // { driver_id: 1001 }
 * ```
 */
export function jsonFormat(): Format {
  return {
    name: "json",
    decode(bytes: Uint8Array): unknown {
      if (bytes.length === 0) throw new Error("empty message (a tombstone?): expected a JSON object");
      let text: string;
      try {
        text = utf8.decode(bytes);
      } catch {
        throw new Error(`not valid UTF-8 (${bytes.length} bytes)`);
      }
      try {
        return JSON.parse(text);
      } catch (e) {
        // Runtimes word this differently; the byte count and the start of the text identify the record.
        const head = text.length > 60 ? `${text.slice(0, 60)}...` : text;
        throw new Error(`invalid JSON (${(e as Error).message}) in ${JSON.stringify(head)}`);
      }
    },
  };
}
