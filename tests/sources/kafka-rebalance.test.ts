// Reliability scenario 2 through Kafka: three consumers of one group join
// and leave while slow batches are in flight. Nothing is lost, committed
// offsets never move backwards, and no member commits a partition after
// another member was given it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { kafkaConsumer, type KafkaConsumerEvent } from "../../plugins/sources/kafka.ts";
import { redisStore } from "../../plugins/stores/redis/redis.ts";
import { memoryDeadLetters } from "../../plugins/stores/memory.ts";
import { caughtUp, controllableStore, missingSeqs, offsets, produce, recordingLogger, type Running, seqEvent, seqRepo, sleep, startConsume, unique, until, useKafkaTestBed } from "../fixtures/kafka-harness.ts";

const bed = useKafkaTestBed();

test("rebalance mid-batch: members join and leave, nothing is lost, no commit after losing a partition, offsets never go back", { timeout: 120_000 }, async () => {
  const topic = unique("rebalance");
  const groupId = unique("g");
  const N = 4000;
  const { source, view, registry } = seqRepo({ kafkaBootstrapServers: bed.kafkaSvc.brokers, topic, groupId, batchSize: 40, lingerMs: 100 });
  const base = redisStore({ url: bed.redis.url, project: unique("p") });
  // Every write takes 100-400 ms, so that batches are in flight whenever the group changes.
  const online = controllableStore(base);
  const slow = Object.create(online) as typeof online;
  slow.write = async (v, rows) => {
    await sleep(100 + Math.random() * 300);
    return online.write(v, rows);
  };

  const log: { member: string; event: KafkaConsumerEvent }[] = [];
  const members = new Map<string, Running>();
  const start = (member: string) => {
    // rebalanceTimeout 10 s: the mock broker at times leaves a rebalance waiting on a member that does not rejoin; the
    // coordinator then completes it without that member after this long (kafkajs default 60 s) and the member rejoins.
    const consumer = kafkaConsumer(source, { sessionTimeout: 4000, heartbeatInterval: 500, rebalanceTimeout: 10_000, logger: recordingLogger(), onEvent: (event) => log.push({ member, event }) });
    members.set(member, startConsume(consumer, { registry, online: slow, deadLetters: memoryDeadLetters() }));
  };
  const joins = (member: string) => log.filter((l) => l.member === member && l.event.type === "assigned").length;
  const lastAssignment = (member: string) => log.filter((l) => l.member === member && l.event.type === "assigned").at(-1)?.event as Extract<KafkaConsumerEvent, { type: "assigned" }> | undefined;

  // The broker's view of the commits, sampled all along: it must never go back.
  const sampled: Record<number, number>[] = [];
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      sampled.push((await offsets(bed.admin, groupId, topic)).committed);
      await sleep(100);
    }
  })();

  let produced = 0;
  const loading = (async () => {
    while (produced < N) {
      await produce(bed.producer, topic, Array.from({ length: 100 }, (_, i) => ({ key: String(produced + i), value: seqEvent(produced + i) })));
      produced += 100;
      await sleep(300);
    }
  })();

  try {
    start("A");
    await until("A's first join", () => joins("A") >= 1, 20_000);
    await sleep(1000);
    start("B");
    await until("A and B share the partitions", () => joins("B") >= 1 && joins("A") >= 2, 30_000);
    await sleep(1500);
    start("C");
    await until("C joins", () => joins("C") >= 1, 30_000);
    await until("A and B rejoin with C", () => joins("A") >= 3 && joins("B") >= 2, 30_000);
    await sleep(1500);
    const [a, c] = [joins("A"), joins("C")];
    await members.get("B")!.stop(); // leaves the group with batches in flight elsewhere
    await until("A and C take over B's partitions", () => joins("A") > a && joins("C") > c, 30_000);
    await sleep(1500);
    const a2 = joins("A");
    await members.get("C")!.stop();
    await until("A takes every partition", () => joins("A") > a2 && lastAssignment("A")?.partitions.length === 4, 30_000);
    await loading;
    await until("all offsets committed", () => caughtUp(bed.admin, groupId, topic), 60_000, 200);
    // 1. Nothing lost.
    assert.deepEqual(await missingSeqs(base, view, N), []);
  } finally {
    sampling = false;
    await sampler;
    await loading.catch(() => {});
    for (const m of members.values()) await m.stop().catch(() => {});
    await base.close();
  }

  // 2. The broker's committed offsets never moved backwards.
  for (let i = 1; i < sampled.length; i++) {
    for (const [p, o] of Object.entries(sampled[i])) {
      const prev = sampled[i - 1][Number(p)];
      assert.ok(prev === undefined || o >= prev, `partition ${p} went back from ${prev} to ${o}`);
    }
  }
  // 3. Every commit came from the member that was last given that partition, and commits per partition only go up.
  const owner = new Map<number, string>();
  const lastCommit = new Map<number, number>();
  let commits = 0;
  for (const { member, event } of log) {
    if (event.type === "assigned") for (const p of event.partitions) owner.set(p, member);
    if (event.type === "committed") {
      commits++;
      assert.equal(owner.get(event.partition), member, `${member} committed partition ${event.partition} at ${event.offset} after ${owner.get(event.partition)} was given it`);
      const o = Number(event.offset);
      assert.ok(o >= (lastCommit.get(event.partition) ?? 0), `commit of partition ${event.partition} went back to ${o}`);
      lastCommit.set(event.partition, o);
    }
  }
  assert.ok(commits > 50);
  const stale = log.filter((l) => l.event.type === "stale");
  // Reported for the record: batches abandoned because the group changed while they were in flight.
  console.log(`# rebalance: ${log.filter((l) => l.event.type === "assigned").length} assignments, ${commits} commits, ${stale.length} stale batches (${[...new Set(stale.map((s) => (s.event as { reason: string }).reason))].join("; ")}), ${online.writes} writes for ${N} events`);
});
