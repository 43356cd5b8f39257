/**
 * P13: Kafka -> Redis Cluster scale-out. Two `freshet consume` processes in
 * one consumer group against one, on the same 3-master Redis Cluster
 * (tests/services/redis-cluster.ts) and librdkafka's mock Kafka cluster
 * (3 brokers, 4 partitions per topic), with the view of bench/stream-repo.ts.
 *
 * Each run starts the consumers on a fresh topic (a fresh group, `freshet
 * consume <repo> --store redis+cluster://...` as an operator runs it),
 * waits until the group is Stable with every member and the first 4 events
 * (one per partition) are committed, then pauses the consumers (SIGSTOP),
 * produces the whole backlog of `records` events (in sends of 5000), resumes
 * them (SIGCONT) and polls the group's committed offsets every 50 ms.
 * events/s = records / (resume to last commit): a backlog drained, so the
 * consumers, not the producer (this process, idle while it is measured), set
 * the rate. The group join (3 s and more on the mock cluster, once 60 s when
 * the second member came late) and the produce are left out; the pause is
 * kept well under the session timeout (30 s). Runs alternate one consumer,
 * two consumers, A B A B. The CPU share of every process over the measured
 * span (consumers, each Redis node, the mock broker, this process) says
 * whether a run was CPU-bound (the machine has 2 cores).
 *
 *   npx tsx bench/cluster.ts [--runs 5] [--small] [--results dir]
 *   environment: BENCH_P13_RECORDS (default 200000, small 4000), BENCH_P13_LINGER
 *   (the consumers' lingerMs, default 10: see LINGER_MS)
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { Kafka, logLevel } from "kafkajs";
import { startKafka } from "../tests/services/kafka.ts";
import { startRedisCluster } from "../tests/services/redis-cluster.ts";
import { type CliProcess, root, startCli } from "../tests/fixtures/cli-harness.ts";
import { benchMain, type BenchOptions, type BenchRun, cpuSeconds, type Entry, fmt, isMain, paired, pairedEntry, runQueueSeconds, sleep } from "./lib.ts";
import { benchEvent } from "./stream-repo.ts";
import { childPid } from "./worker.ts";

const USERS = 10_000;
const FORM_TIMEOUT_MS = 45_000;
/**
 * lingerMs (kafkajs maxWaitTime) of the consumers. The mock broker holds every
 * fetch for the whole maxWaitTime and answers it with at most one producer send
 * per partition, so with the default 500 ms the broker, not the consumers,
 * bounds the rate: 4 partitions x 1250 events per send / 0.5 s = 10k events/s
 * for one consumer or two alike (what runs at the default measured: 7.5k to 14k).
 */
const LINGER_MS = Number(process.env.BENCH_P13_LINGER ?? 10);
/** The group never split its partitions among its members: that run is done again, on a fresh topic and group. */
class NotFormed extends Error {}

export async function runCluster(opts: BenchOptions): Promise<BenchRun> {
  const records = Number(process.env.BENCH_P13_RECORDS ?? (opts.small ? 4000 : 200_000));
  const entries: Entry[] = [];
  const notes: string[] = [];
  const failures: string[] = [];
  const dir = mkdtempSync(join(tmpdir(), "freshet-p13-"));
  const [kafkaSvc, cluster] = await Promise.all([startKafka({ brokers: 3 }), startRedisCluster({ masters: 3, appendonly: false })]);
  const kafka = new Kafka({ clientId: "p13", brokers: kafkaSvc.brokers, logLevel: logLevel.NOTHING });
  const producer = kafka.producer();
  const admin = kafka.admin();
  await Promise.all([producer.connect(), admin.connect()]);
  const kcatPid = childPid((cmd) => cmd.some((c) => c.endsWith("kcat")));
  const redisPids = cluster.nodes.map((n) => Number(/process_id:(\d+)/.exec(cluster.cli(n.port, "info", "server"))?.[1]));
  /** Each one-consumer run's rate and CPU per event, for the machine's ceiling. */
  const oneConsumerCost: { rate: number; perEvent: number; share: number }[] = [];
  const oneRun = async (consumers: number): Promise<{ value: number; notes: string }> => {
    const id = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
    const topic = `p13-${id}`, groupId = `p13-g-${id}`;
    // One event per partition first: it creates the topic, and the group is formed on it before the measured load.
    const ts = Date.now() - records;
    await producer.send({ topic, messages: Array.from({ length: 4 }, (_, p) => ({ partition: p, value: benchEvent(0, 0, ts) })) });
    const repo = join(dir, `repo-${id}.ts`);
    writeFileSync(repo, `import { kafkaSource } from ${JSON.stringify(join(root, "mod.ts"))};
import { streamRepo } from ${JSON.stringify(join(root, "bench/stream-repo.ts"))};
const src = kafkaSource({ name: "p13_kafka", kafkaBootstrapServers: ${JSON.stringify(kafkaSvc.brokers)}, topic: ${JSON.stringify(topic)}, groupId: ${JSON.stringify(groupId)}, timestampField: "event_timestamp", lingerMs: ${LINGER_MS}, rebalanceTimeout: "10s" });
export default streamRepo(src).registry;
`);
    // The same users every run: an empty cluster, so that no run finds the rows of the last one (stale rows cost less).
    for (const m of cluster.masters()) cluster.cli(m.port, "flushall");
    const clis: CliProcess[] = [];
    try {
      const args = ["consume", repo, "--store", cluster.url, "--data-dir", join(dir, `data-${id}`), "--port", "0", "--host", "127.0.0.1"];
      clis.push(...await Promise.all(Array.from({ length: consumers }, () => startCli(args, { timeoutMs: 60_000 }))));
      const committed = async () => (await admin.fetchOffsets({ groupId, topics: [topic] }))[0].partitions.reduce((s, p) => s + Math.max(0, Number(p.offset)), 0);
      // Measured only once every member has its partitions and the first events are written and committed.
      const formed = Date.now() + FORM_TIMEOUT_MS;
      let joinedMs = performance.now();
      // The mock broker has no DescribeGroups: each consumer logs the partitions of its last join.
      const joinsOf = (c: CliProcess) => [...c.output().matchAll(/joined group "[^"]*", partitions \[([\d, ]*)\]/g)];
      const assigned = () => clis.map((c) => {
        const joins = joinsOf(c);
        return joins.length ? joins[joins.length - 1][1].split(",").filter((x) => x.trim() !== "").map(Number) : [];
      });
      for (;;) {
        const parts = assigned();
        const all = parts.flat().sort();
        if (parts.every((p) => p.length > 0) && all.join() === "0,1,2,3" && await committed() >= 4) break;
        if (Date.now() > formed) throw new NotFormed(`the group of ${consumers} consumer(s) did not split the 4 partitions within ${FORM_TIMEOUT_MS / 1000} s (partitions per member ${JSON.stringify(parts)})`);
        await sleep(100);
      }
      joinedMs = performance.now() - joinedMs;
      // Rejoins during the measured span (a rebalance stops every member's fetches until the group is stable again).
      const joined0 = clis.map((c) => joinsOf(c).map((m) => m.index));
      const cpuNow = () => clis.map((c) => cpuSeconds(c.child.proc.pid) ?? 0);
      const redisNow = () => redisPids.map((p) => cpuSeconds(p) ?? 0);
      const queuedNow = () => clis.map((c) => runQueueSeconds(c.child.proc.pid) ?? 0);
      // The backlog goes in while the consumers are stopped: what is timed is the consumers draining it.
      const pause = (sig: "SIGSTOP" | "SIGCONT") => { for (const c of clis) c.child.proc.kill(sig); };
      pause("SIGSTOP");
      const p0 = performance.now();
      try {
        for (let i = 1; i <= records; i += 5000) {
          const messages = [];
          for (let j = i; j < Math.min(records + 1, i + 5000); j++) messages.push({ key: String(j % USERS), value: benchEvent(j, j % USERS, ts + j) });
          await producer.send({ topic, messages });
        }
      } finally {
        pause("SIGCONT");
      }
      const produceS = (performance.now() - p0) / 1000;
      const [cpu0, queued0, redis0, kcat0, self0, t0] = [cpuNow(), queuedNow(), redisNow(), cpuSeconds(kcatPid) ?? 0, cpuSeconds(process.pid) ?? 0, performance.now()];
      const high = (await admin.fetchTopicOffsets(topic)).reduce((s, p) => s + Number(p.high), 0);
      const deadline = Date.now() + 300_000;
      for (;;) {
        const c = await committed();
        if (c >= high) break;
        if (Date.now() > deadline) throw new Error(`P13: ${c} of ${high} committed after 300 s`);
        await sleep(50);
      }
      const span = (performance.now() - t0) / 1000;
      const pct = (x: number) => `${Math.round(x * 100)}%`;
      const cpu = cpuNow().map((x, i) => (x - cpu0[i]) / span);
      // Time each consumer was runnable but had no core: the machine, not the consumer, is then the bound.
      const queued = queuedNow().map((x, i) => (x - queued0[i]) / span);
      const rcpu = redisNow().map((x, i) => (x - redis0[i]) / span);
      const kcpu = ((cpuSeconds(kcatPid) ?? 0) - kcat0) / span;
      const scpu = ((cpuSeconds(process.pid) ?? 0) - self0) / span;
      const total = cpu.reduce((a, b) => a + b, 0) + rcpu.reduce((a, b) => a + b, 0) + kcpu + scpu;
      // The log tail keeps the last 4 kB of each consumer: enough for the lines of one run.
      // Core-seconds per event, over every process of the bench: the machine's ceiling is cores / that.
      if (consumers === 1) oneConsumerCost.push({ rate: records / span, perEvent: total / (records / span), share: cpu[0] });
      const rejoins = clis.reduce((n, c, i) => n + Math.max(0, joinsOf(c).length - joined0[i].length), 0);
      return { value: records / span, notes: `${consumers} consumer(s): ${records} events drained in ${fmt(span, 2)} s (group formed in ${fmt(joinedMs / 1000, 1)} s, backlog produced in ${fmt(produceS, 1)} s while paused, neither counted), cpu: consumer ${cpu.map(pct).join(" + ")} (waiting for a core ${queued.map(pct).join(" + ")} of the span), redis nodes ${rcpu.map(pct).join(" + ")}, broker (kcat) ${pct(kcpu)}, bench process ${pct(scpu)}, all ${pct(total)} of ${cpus().length * 100}%, load average ${loadavg()[0].toFixed(1)}, rejoins seen in the log tails ${rejoins}` };
    } finally {
      await Promise.all(clis.map((c) => c.stop()));
    }
  };
  const retried: string[] = [];
  const measured = async (consumers: number) => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await oneRun(consumers);
      } catch (e) {
        if (!(e instanceof NotFormed) || attempt >= 3) throw e;
        retried.push(e.message);
        console.log(`  ${e.message}: run again on a fresh topic and group`);
      }
    }
  };
  try {
    console.log(`P13: ${records} events per run on 4 partitions, 1 vs 2 freshet consume processes, Redis Cluster of 3 masters`);
    const pairs = await paired(opts.runs, () => measured(1), () => measured(2), (m) => console.log(m));
    entries.push(pairedEntry("P13", "node", "events/s, Kafka -> Redis Cluster (3 masters), 2 freshet consume in one group vs 1", ">= 1.6", pairs));
    notes.push(
      `P13: ${records} events (${USERS} users, the bench view: schema, UDF, watermark, ttl) produced on a 4-partition topic of the mock cluster to \`freshet consume --store redis+cluster://...\` (1 or 2 processes, one group, formed before the load, lingerMs ${LINGER_MS}: at the default 500 ms the mock broker's fetch pacing bounds one consumer and two alike to about 10k events/s) into a 3-master cluster (16 buckets per view). The consumers are paused (SIGSTOP) while the whole backlog is produced, then resumed: the rate is from the resume to the last commit, the consumers draining a backlog, with the producer (this process) idle.`,
      `P13: load average at the end ${loadavg().map((x) => x.toFixed(1)).join(" ")} on ${cpus().length} cores (other processes on the machine take CPU from every run alike, A B A B).`,
      `P13 shares ${cpus().length} cores among the consumers, 3 redis-server, kcat (the mock broker) and this process (the producer, idle while measured); each run's CPU shares are below (100% = one core). A consumer well under 100% is either starved by the rest of the machine (its "waiting for a core" share, the time its main thread was runnable with no core free, from /proc/<pid>/schedstat) or waiting on I/O (the broker's fetch, the store's scripts, the commit: the rest).`,
      ...pairs.map((p, i) => `P13 run ${i + 1}: ${p.notes}`),
      // One consumer with a core of its own drains rate / share; the machine, had the bench all of it, carries cores / perEvent.
      ...oneConsumerCost.map((c, i) => `P13 run ${i + 1}, machine ceiling: one consumer drained ${fmt(c.rate)} events/s at ${Math.round(c.share * 100)}% CPU and ${fmt(c.perEvent * 1e6, 1)} µs of CPU per event over all the processes above, so about ${fmt(c.rate / c.share)} events/s with a core of its own; ${cpus().length} cores, had the bench every one of them, carry at most ${fmt(cpus().length / c.perEvent)} events/s, a ratio of at most ${fmt(cpus().length / c.perEvent / (c.rate / c.share), 2)} for two consumers against one with its own core (1.6 needs ${fmt(1.6 * (c.rate / c.share) * c.perEvent, 1)} cores).`),
      ...(retried.length ? [`P13: ${retried.length} run(s) done again because the mock broker's group did not split the partitions (kafkajs + librdkafka mock, see issue 13 item 9): ${retried.join("; ")}`] : []),
    );
  } catch (e) {
    failures.push(`P13: ${(e as Error).stack ?? e}`);
  } finally {
    await Promise.all([producer.disconnect(), admin.disconnect()]).catch(() => {});
    await Promise.all([kafkaSvc.stop(), cluster.stop()]);
    rmSync(dir, { recursive: true, force: true });
  }
  return { entries, notes, failures };
}

if (isMain(import.meta.url)) await benchMain("cluster", runCluster);
