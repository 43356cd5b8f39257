/**
 * @module
 * The Kafka source: a consumer group on kafkajs `eachBatch` that commits an
 * offset only after the stores accepted the records before it
 * (at-least-once), survives rebalances without committing what it lost,
 * pauses while a store is down, and stops cleanly on an AbortSignal. Also
 * a dead-letter sink that produces to a Kafka topic.
 *
 * Works on Node, Bun and Deno; kafkajs is loaded on first use.
 *
 * @example
 * ```ts
 * import { consume } from "freshet"
 * import { kafkaConsumer, kafkaDeadLetters } from "freshet/sources/kafka"
 *
 * const ac = new AbortController()
 * await consume(kafkaConsumer(driverStatsSource, { logger: console }), processor, { signal: ac.signal })
 * ```
 */
export { kafkaConsumer, type KafkaConsumerEvent, type KafkaConsumerOptions, type KafkaStreamSource } from "./kafka/consumer.ts";
export { kafkaDeadLetters, type KafkaDeadLettersOptions, readKafkaDeadLetters } from "./kafka/dead-letters.ts";
export { kafkaClientConfig, kafkajsLogBridge, type KafkaConnection } from "./kafka/client.ts";
