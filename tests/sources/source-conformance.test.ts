// @runtimes node
/** The StreamSource conformance suite (freshet/testing) on the Kafka source against the mock cluster, and on the Kinesis source against kinesalite. */
import { after, before } from "node:test";
import { PutRecordsCommand } from "@aws-sdk/client-kinesis";
import { kafkaSource, kinesisSource } from "../../mod.ts";
import { kafkaConsumer } from "../../plugins/sources/kafka.ts";
import { kinesisConsumer } from "../../plugins/sources/kinesis.ts";
import { memoryStore } from "../../plugins/stores/memory.ts";
import { testStreamSource } from "../../testing/source.ts";
import { connectProducer, testKafka, unique } from "../fixtures/kafka-harness.ts";
import { startKafka, type KafkaService } from "../services/kafka.ts";
import { createStream, kinesisClient, startKinesis, type KinesisService } from "../services/kinesis.ts";
import type { Producer } from "kafkajs";
import type { KinesisClient } from "@aws-sdk/client-kinesis";

let kafka: KafkaService;
let producer: Producer;
let kinesis: KinesisService;
let client: KinesisClient;
before(async () => {
  [kafka, kinesis] = await Promise.all([startKafka(), startKinesis("kinesalite")]);
  producer = await connectProducer(testKafka(kafka.brokers));
  client = kinesisClient(kinesis.endpoint);
});
after(async () => {
  await producer?.disconnect();
  client?.destroy();
  await Promise.all([kafka?.stop(), kinesis?.stop()]);
});

testStreamSource("kafka", async () => {
  const topic = unique("conformance");
  const def = kafkaSource({ name: "conformance_kafka", topic, groupId: unique("conformance-group"), kafkaBootstrapServers: kafka.brokers, timestampField: "ts", startFrom: "earliest", batchSize: 7 });
  await producer.send({ topic, messages: [] }).catch(() => {});
  return {
    // Three keys, so the records spread over the topic's partitions.
    produce: async (values) => void await producer.send({ topic, messages: values.map((value, i) => ({ key: `k${i % 3}`, value })) }),
    open: () => kafkaConsumer(def, { sessionTimeout: 6000, heartbeatInterval: 500 }),
  };
});

testStreamSource("kinesis", async () => {
  const stream = unique("conformance");
  await createStream(client, stream, 2);
  const def = kinesisSource({ name: "conformance_kinesis", streamName: stream, endpoint: kinesis.endpoint, region: "us-east-1", credentials: { accessKeyId: "AKIDLOCAL", secretAccessKey: "local-secret" }, timestampField: "ts", pollIntervalMs: 100, limit: 7 });
  // Checkpoints and leases outlive each source instance, as they would in a store.
  const { meta } = memoryStore();
  return {
    produce: async (values) => {
      const res = await client.send(new PutRecordsCommand({ StreamName: stream, Records: values.map((v, i) => ({ Data: new TextEncoder().encode(v), PartitionKey: `k${i % 5}` })) }));
      if (res.FailedRecordCount) throw new Error(`${res.FailedRecordCount} records not put`);
    },
    open: () => kinesisConsumer(def, { meta, workerId: "conformance", leaseTtlMs: 3000, discoverEveryMs: 200 }),
  };
});
