/**
 * The purchases feature repo: windowed aggregations on the stream. Per user,
 * the number of purchases in the last 10 minutes, the sum and mean of their
 * amounts over the last hour, the largest over the last day, and the last 5
 * distinct categories bought. The same view twice: fed by HTTP push, and by
 * a Kafka topic (brokers from KAFKA_BROKERS, default localhost:9092).
 */
import * as v from "valibot";
import { type Aggregation, entity, featureRepo, kafkaSource, pushSource, streamFeatureView } from "../../mod.ts";

export const user = entity({ name: "user", joinKeys: ["user_id"], description: "A shopper, by id" });

const schema = v.object({
  user_id: v.pipe(v.number(), v.integer()),
  amount: v.pipe(v.number(), v.minValue(0)),
  category: v.string(),
  ts: v.string(),
});

/** Windows slide in steps of their slideInterval: the 10-minute count moves every minute. */
export const aggregations: Aggregation[] = [
  { column: "amount", function: "count", timeWindow: "10m", slideInterval: "1m" },
  { column: "amount", function: "sum", timeWindow: "1h", slideInterval: "5m" },
  { column: "amount", function: "mean", timeWindow: "1h", slideInterval: "5m" },
  { column: "amount", function: "max", timeWindow: "1d", slideInterval: "1h" },
  { column: "category", function: "lastDistinctN", n: 5, timeWindow: "1d", slideInterval: "1h", name: "last_5_categories" },
];

export const purchasesPush = pushSource({ name: "purchases_push", timestampField: "ts", watermarkDelay: "2m" });

const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env ?? {};
export const purchasesKafka = kafkaSource({
  name: "purchases_kafka",
  kafkaBootstrapServers: env.KAFKA_BROKERS ?? "localhost:9092",
  topic: env.PURCHASES_TOPIC ?? "purchases",
  timestampField: "ts",
  watermarkDelay: "2m",
});

export const purchaseStats = streamFeatureView({
  name: "purchase_stats",
  entities: [user],
  source: purchasesPush,
  ttl: 0,
  schema,
  aggregations,
  offline: true,
  description: "Purchase aggregates per user, from pushes",
});

export const purchaseStatsKafka = streamFeatureView({
  name: "purchase_stats_kafka",
  entities: [user],
  source: purchasesKafka,
  ttl: 0,
  schema,
  aggregations,
  offline: true,
  description: "The same aggregates, from the purchases topic",
});

export default featureRepo({ project: "purchases", definitions: [user, purchasesPush, purchasesKafka, purchaseStats, purchaseStatsKafka] });
