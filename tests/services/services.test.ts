// Smoke tests for the test-service harness: start each service, do one real
// round trip, stop it. Runs on Node, Bun and Deno (scripts/test.mjs).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { Redis as IORedis } from "ioredis";
import { Kafka, logLevel } from "kafkajs";
import { GetRecordsCommand, GetShardIteratorCommand, PutRecordCommand } from "@aws-sdk/client-kinesis";
import { Redis as UpstashRedis } from "@upstash/redis";
import { startRedis, redisPing } from "./redis.ts";
import { startKafka } from "./kafka.ts";
import { createStream, kinesisClient, startKinesis } from "./kinesis.ts";
import { startUpstash } from "./upstash-server.ts";

const unique = (p: string) => `${p}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;

test("redis: ioredis PING, kill, restart on the same port", async () => {
  const r = await startRedis();
  const client = new IORedis(r.url, { maxRetriesPerRequest: 1, lazyConnect: true });
  try {
    await client.connect();
    assert.equal(await client.ping(), "PONG");
    await r.kill();
    assert.equal(await redisPing(r.port), false);
    await r.restart();
    assert.equal(await redisPing(r.port), true);
  } finally {
    client.disconnect();
    await r.stop();
  }
});

test("kafka: kafkajs produce and consume one message in a group", { timeout: 60_000 }, async () => {
  const k = await startKafka();
  const kafka = new Kafka({ clientId: "smoke", brokers: k.brokers, logLevel: logLevel.NOTHING });
  const topic = unique("smoke");
  const producer = kafka.producer();
  // A short maxWaitTimeInMs makes disconnect() quick (it waits for the fetch).
  const consumer = kafka.consumer({ groupId: unique("g"), maxWaitTimeInMs: 100 });
  try {
    await producer.connect();
    await producer.send({ topic, messages: [{ key: "k", value: "hello" }] });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    const got = await new Promise<string>((resolve) => {
      consumer.run({ eachMessage: async ({ message }) => resolve(String(message.value)) });
    });
    assert.equal(got, "hello");
  } finally {
    await consumer.disconnect();
    await producer.disconnect();
    await k.stop();
  }
});

for (const kind of ["kinesalite", "kinesis-local"] as const) {
  test(`kinesis: ${kind} PutRecord and GetRecords`, { timeout: 60_000 }, async () => {
    const k = await startKinesis(kind);
    const client = kinesisClient(k.endpoint);
    try {
      await createStream(client, "smoke", 1);
      const put = await client.send(new PutRecordCommand({ StreamName: "smoke", PartitionKey: "p", Data: new TextEncoder().encode("hi") }));
      const it = await client.send(new GetShardIteratorCommand({ StreamName: "smoke", ShardId: put.ShardId!, ShardIteratorType: "TRIM_HORIZON" }));
      const recs = await client.send(new GetRecordsCommand({ ShardIterator: it.ShardIterator! }));
      assert.deepEqual(recs.Records!.map((r) => new TextDecoder().decode(r.Data)), ["hi"]);
    } finally {
      client.destroy();
      await k.stop();
    }
  });
}

test("upstash fake: @upstash/redis set/get, 401, base64 encoding", async () => {
  const r = await startRedis();
  const u = await startUpstash({ redisUrl: r.url, token: "secret" });
  try {
    const redis = new UpstashRedis({ url: u.url, token: u.token, enableTelemetry: false });
    assert.equal(await redis.set("k", "välue"), "OK");
    assert.equal(await redis.get("k"), "välue");

    const bad = new UpstashRedis({ url: u.url, token: "wrong", enableTelemetry: false, retry: false });
    await assert.rejects(bad.get("k"), /Unauthorized/);
    const raw401 = await fetch(u.url, { method: "POST", body: '["GET","k"]' });
    assert.equal(raw401.status, 401);
    assert.deepEqual(await raw401.json(), { error: "Unauthorized" });

    const post = (encoding: boolean, body: unknown) =>
      fetch(u.url, {
        method: "POST",
        headers: { Authorization: `Bearer ${u.token}`, ...(encoding ? { "Upstash-Encoding": "base64" } : {}) },
        body: JSON.stringify(body),
      }).then((res) => res.json());
    assert.deepEqual(await post(true, ["GET", "k"]), { result: Buffer.from("välue").toString("base64") });
    assert.deepEqual(await post(true, ["SET", "n", 1]), { result: "OK" });
    assert.deepEqual(await post(true, ["MGET", "k", "missing"]), { result: [Buffer.from("välue").toString("base64"), null] });
    assert.deepEqual(await post(false, ["INCR", "n"]), { result: 2 });
    assert.deepEqual(await post(false, ["INCR", "k"]), { error: "ERR value is not an integer or out of range" });
  } finally {
    await u.stop();
    await r.stop();
  }
});

test("upstash fake: pipeline, multi-exec, hashes, scripts and faults", async () => {
  const r = await startRedis();
  const u = await startUpstash({ redisUrl: r.url, token: "secret" });
  try {
    // retry: false so injected faults surface at once instead of being retried.
    const redis = new UpstashRedis({ url: u.url, token: u.token, enableTelemetry: false, retry: false });
    const p = redis.pipeline();
    p.set("a", 1);
    p.incr("a");
    p.hset("h", { f: "x", n: 2 });
    p.hgetall("h");
    p.get("missing");
    assert.deepEqual(await p.exec(), ["OK", 2, 2, { f: "x", n: 2 }, null]);

    const m = redis.multi();
    m.set("s", "text");
    m.incr("s"); // runtime error: reported in its slot, the rest still runs
    m.get("s");
    const res = await m.exec({ keepErrors: true });
    assert.deepEqual(res.map((x) => x.error ?? x.result), ["OK", "ERR value is not an integer or out of range", "text"]);

    assert.deepEqual(await redis.eval("return {KEYS[1], ARGV[1], 7, {false}}", ["k"], ["v"]), ["k", "v", 7, [null]]);
    const sha = await redis.scriptLoad("return redis.call('GET', KEYS[1])");
    assert.equal(await redis.evalsha(sha, ["s"], []), "text");
    assert.equal(await redis.createScript("return ARGV[1]").exec([], ["once"]), "once"); // EVALSHA, NOSCRIPT, EVAL

    u.faults.next429 = 1;
    await assert.rejects(redis.get("a"), /max daily request limit exceeded/);
    u.faults.next5xx = 1;
    await assert.rejects(redis.get("a"), /Server Error/);
    u.faults.maxRequestBytes = 1000;
    await assert.rejects(redis.set("big", "x".repeat(2000)), /max request size exceeded/);
    u.faults.maxRequestBytes = 1_000_000;
    u.faults.down = true;
    await assert.rejects(redis.get("a"), /Service Unavailable/);
    u.faults.down = false;
    assert.equal(await redis.get("a"), 2);
  } finally {
    await u.stop();
    await r.stop();
  }
});
