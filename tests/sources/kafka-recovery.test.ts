// @runtimes node
// Recovery after a SIGKILL (issue 13 item 9): a consumer of the group is
// killed (a child process, tests/fixtures/kafka-consumer.ts), and a new one
// joins the same group. Until the dead member is gone it has no partition:
// it says what it waits for, and its lag is logged as unknown, not 0. The
// group timings come from the kafkaSource definition.
// Node only (it runs a child process).
import { test } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { kafkaSource } from "../../mod.ts";
import { groupTimings, kafkaConsumer } from "../../plugins/sources/kafka/consumer.ts";
import { memoryDeadLetters } from "../../plugins/stores/memory.ts";
import { redisStore } from "../../plugins/stores/redis/redis.ts";
import { startChild } from "../services/system.ts";
import { produce, recordingLogger, seqEvent, startConsume, seqRepo, unique, until, useKafkaTestBed } from "../fixtures/kafka-harness.ts";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const bed = useKafkaTestBed();

test("after a member is SIGKILLed, a new one logs what it waits for and 'lag unknown' until it is assigned (group timings from the definition)", { timeout: 90_000 }, async () => {
  const topic = unique("recovery");
  const groupId = unique("g");
  const project = unique("p");
  await produce(bed.producer, topic, Array.from({ length: 40 }, (_, i) => ({ key: String(i), value: seqEvent(i) })));
  const SESSION = 8000;
  const env = { KAFKA_BROKERS: bed.kafkaSvc.brokers.join(","), TOPIC: topic, GROUP_ID: groupId, REDIS_URL: bed.redis.url, PROJECT: project, SESSION_TIMEOUT_MS: String(SESSION), REBALANCE_TIMEOUT_MS: String(SESSION) };
  let joined = false;
  const dead = startChild(process.execPath, ["--import", "tsx", join(root, "tests/fixtures/kafka-consumer.ts")], { cwd: root, env, onLine: (l) => (joined ||= l.startsWith("J ")) });
  try {
    await until("the first member joins", () => joined, 30_000, 20);
  } finally {
    await dead.stop("SIGKILL");
  }
  const killedAt = Date.now();

  // The new member, with the same group timings, from its definition.
  const { source, registry } = seqRepo({ kafkaBootstrapServers: bed.kafkaSvc.brokers, topic, groupId, sessionTimeout: "8s", rebalanceTimeout: "8s", heartbeatInterval: "1s", lingerMs: 100 });
  assert.deepEqual(groupTimings(source), { sessionTimeout: 8000, heartbeatInterval: 1000, rebalanceTimeout: 8000 });
  const logger = recordingLogger();
  const store = redisStore({ url: bed.redis.url, project });
  let assignedAt = 0;
  let firstWriteAt = 0;
  const consumer = kafkaConsumer(source, { logger, onEvent: (e) => (assignedAt ||= e.type === "assigned" && e.partitions.length > 0 ? Date.now() : 0) });
  const run = startConsume(consumer, { registry, online: store, deadLetters: memoryDeadLetters() }, { logger, logEveryMs: 500, onBatch: () => (firstWriteAt ||= Date.now()) });
  try {
    await until(`the new member is assigned\n${logger.lines.map((l) => l.msg).join("\n")}`, () => assignedAt > 0, 40_000, 50);
    await until("a first write", () => firstWriteAt > 0, 20_000, 20);
  } finally {
    await run.stop();
    await store.close();
  }
  const msgs = logger.lines.map((l) => l.msg);
  const before = msgs.slice(0, msgs.findIndex((m) => m.includes("joined group")));
  const label = `[freshet] [kafka] "events"`;
  assert.ok(before.some((m) => m === `${label}: 0 events/s, lag unknown: no partitions assigned`), `lag is unknown while nothing is assigned:\n${before.join("\n")}`);
  assert.ok(!before.some((m) => /lag 0 records over 0 partitions/.test(m)), "never 'lag 0 over 0 partitions'");
  const wait = before.find((m) => m.includes("waiting for partition assignment"));
  assert.ok(wait, `the wait is logged:\n${before.join("\n")}`);
  assert.match(wait, new RegExp(`^\\[freshet\\] \\[kafka\\] "events": waiting for partition assignment: group "${groupId}" rebalancing, previous member's session expires within [1-3] s \\(sessionTimeout 8 s, if it had the same\\); no partition is read meanwhile \\(5(\\.\\d)? s so far`));
  const later = before.filter((m) => m.includes("waiting for partition assignment")).slice(1);
  for (const m of later) assert.match(m, /previous member's session \(sessionTimeout 8 s, if it had the same\) has run out and the coordinator has not completed the rebalance yet/);
  assert.match(msgs.find((m) => m.includes("joined group"))!, /joined group ".*", partitions \[0, 1, 2, 3\] of .* after waiting \d+(\.\d)? s for the assignment$/);
  const recovery = firstWriteAt - killedAt;
  console.log(`# recovery: assigned ${assignedAt - killedAt} ms and first write ${recovery} ms after the kill (session and rebalance timeout ${SESSION} ms)`);
  // The mock cluster completes the rebalance about two session timeouts after the kill.
  assert.ok(recovery < 2 * SESSION + 6000, `first write ${recovery} ms after the kill`);
});

test("kafkaSource refuses group timings that cannot work, with how to fix them", () => {
  const def = { name: "t", kafkaBootstrapServers: "127.0.0.1:9092", topic: "t" };
  assert.throws(() => kafkaSource({ ...def, sessionTimeout: 10000 }), /sessionTimeout 10000 must be a duration from 1000 ms to 1 hour: seconds \(10\) or a string \("10s", "500ms"\) \(a number is seconds: for 10000 ms write "10000ms"\)/);
  assert.throws(() => kafkaSource({ ...def, sessionTimeout: "fast" }), /sessionTimeout "fast" must be a duration/);
  assert.throws(() => kafkaSource({ ...def, sessionTimeout: "6s", heartbeatInterval: "6s" }), /heartbeatInterval \(6000 ms\) must be below sessionTimeout \(6000 ms\)/);
  assert.throws(() => kafkaSource({ ...def, heartbeatInterval: "40s" }), /below sessionTimeout \(30000 ms, kafkajs' default\)/);
  assert.deepEqual(groupTimings(kafkaSource(def)), { sessionTimeout: 30_000, heartbeatInterval: 3000, rebalanceTimeout: 60_000 }, "kafkajs' defaults");
  assert.deepEqual(groupTimings(kafkaSource({ ...def, sessionTimeout: "4s" })), { sessionTimeout: 4000, heartbeatInterval: 800, rebalanceTimeout: 60_000 }, "the heartbeat follows a short session");
  // The consumer's options (the CLI's FRESHET_KAFKA_SESSION_TIMEOUT_MS) win over the definition.
  assert.deepEqual(groupTimings(kafkaSource({ ...def, sessionTimeout: "20s" }), { sessionTimeout: 5000 }), { sessionTimeout: 5000, heartbeatInterval: 1000, rebalanceTimeout: 60_000 });
  assert.throws(() => groupTimings(kafkaSource({ ...def, heartbeatInterval: "3s" }), { sessionTimeout: 2000 }), /heartbeatInterval 3000 ms must be below sessionTimeout 2000 ms/);
});
