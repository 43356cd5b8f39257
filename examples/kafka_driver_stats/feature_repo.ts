/**
 * The kafka_driver_stats feature repo: Feast's driver stats, fed by a Kafka
 * topic instead of HTTP pushes. Run it with
 *
 *   KAFKA_BROKERS=localhost:9092 freshet consume examples/kafka_driver_stats/feature_repo.ts --store redis://localhost:6379
 *
 * Connection settings come from the environment, so the same repo runs
 * against a laptop broker and a TLS + SASL cluster (see README.md):
 *
 *   KAFKA_BROKERS          b1:9092,b2:9092                    (default localhost:9092)
 *   KAFKA_TOPIC            the events topic                   (default driver_stats)
 *   KAFKA_SSL              1 for TLS with the system's CAs
 *   KAFKA_SASL_MECHANISM   plain | scram-sha-256 | scram-sha-512
 *   KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD
 */
import process from "node:process";
import * as v from "valibot";
import { entity, featureRepo, fileSource, type KafkaSasl, kafkaSource, streamFeatureView } from "../../mod.ts";
import { jsonFormat } from "../../plugins/formats/json.ts";

const env = process.env;

export const driver = entity({ name: "driver", joinKeys: ["driver_id"], description: "A driver, by id" });

/** The same events, kept as a file for backfills (`freshet materialize`). */
export const driverStatsHistory = fileSource({
  name: "driver_stats_history",
  path: new URL("../driver_stats/data/driver_stats.jsonl", import.meta.url).pathname,
  timestampField: "event_timestamp",
  createdTimestampColumn: "created",
});

const sasl: KafkaSasl | undefined = env.KAFKA_SASL_USERNAME
  ? {
    mechanism: (env.KAFKA_SASL_MECHANISM ?? "scram-sha-512") as "plain" | "scram-sha-256" | "scram-sha-512",
    username: env.KAFKA_SASL_USERNAME,
    password: env.KAFKA_SASL_PASSWORD ?? "",
  }
  : undefined;

export const driverStatsKafka = kafkaSource({
  name: "driver_stats_kafka",
  kafkaBootstrapServers: env.KAFKA_BROKERS ?? "localhost:9092",
  topic: env.KAFKA_TOPIC ?? "driver_stats",
  messageFormat: jsonFormat(),
  clientId: "freshet-driver-stats",
  // Offsets are committed for this group only after Redis took the rows.
  groupId: "freshet-driver-stats",
  // TLS and SASL go to kafkajs as they are; see README.md for a CA, a client certificate or OAUTHBEARER.
  ssl: env.KAFKA_SSL === "1" || env.KAFKA_SSL === "true" ? true : undefined,
  sasl,
  // A new group starts at the beginning of the topic; "latest" or { timestamp: "2025-06-01T00:00:00Z" } also work.
  startFrom: "earliest",
  // Up to 500 records per partition per batch; the broker may wait 200 ms to fill a fetch.
  batchSize: 500,
  lingerMs: 200,
  timestampField: "event_timestamp",
  createdTimestampColumn: "created",
  // Events more than 5 minutes older than the newest of their batch are dead-lettered as "late".
  watermarkDelay: "5m",
  // Records that cannot be decoded, validated or transformed go here, with reason and partition/offset headers.
  deadLetterTopic: "driver_stats.dead-letters",
  batchSource: driverStatsHistory,
  description: "Driver stats events produced by the trips service",
});

export const driverHourlyStats = streamFeatureView({
  name: "driver_hourly_stats",
  entities: [driver],
  source: driverStatsKafka,
  ttl: "1d",
  schema: v.object({
    driver_id: v.pipe(v.number(), v.integer()),
    conv_rate: v.pipe(v.number(), v.minValue(0), v.maxValue(1)),
    acc_rate: v.pipe(v.number(), v.minValue(0), v.maxValue(1)),
    avg_daily_trips: v.pipe(v.number(), v.integer(), v.minValue(0)),
  }),
  // A UDF sees the validated rows of a batch and returns rows: here it adds a derived feature.
  udf: function addReliability(rows) {
    return rows.map((r) => ({ ...r, reliability: Math.round(Number(r.conv_rate) * Number(r.acc_rate) * 1000) / 1000 }));
  },
  // Features are the schema's fields unless listed: the UDF's derived one is listed here.
  features: ["conv_rate", "acc_rate", "avg_daily_trips", "reliability"],
  online: true,
  owner: "ml-platform@example.com",
  tags: { team: "driver_performance" },
});

export default featureRepo({
  project: "kafka_driver_stats",
  definitions: [driver, driverStatsKafka, driverHourlyStats],
});
