// @runtimes node
// Reliability scenario 1 through Kafka: the consumer runs as a child process
// (tests/fixtures/kafka-consumer.ts) writing to a real redis-server, and is
// SIGKILLed again and again while events are produced: half the kills at a
// random moment of its work, half right after a batch was written and before
// its commit. After a last clean run:
// - every sequence number is in Redis (each is its own entity: strict);
// - the committed offsets equal the high watermarks;
// - duplicates (processing attempts beyond N, counted in Redis by the UDF)
//   stay within the uncommitted window: the batches handed on but not
//   committed when each kill landed, plus batches abandoned as stale or
//   whose commit failed.
// Node only (heavy, and the child runs on Node).
import { test } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Redis } from "ioredis";
import { redisStore } from "../../plugins/stores/redis/redis.ts";
import { startChild, type Child } from "../services/system.ts";
import { caughtUp, missingSeqs, offsets, produce, seqEvent, seqRepo, sleep, unique, until, useKafkaTestBed } from "../fixtures/kafka-harness.ts";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

const bed = useKafkaTestBed();

/** One run of the child, with what it reported. */
class ConsumerProcess {
  readonly child: Child;
  readonly lines: string[] = [];
  /** Per partition: the batches handed on that no commit covers yet, and the next offset committed. */
  readonly handed = new Map<number, { first: number; last: number }[]>();
  readonly committed = new Map<number, number>();
  /** Records of batches that were abandoned (stale) or whose commit failed: they may be processed again. */
  stale = 0;
  joined = 0;
  written = 0;
  exit: Promise<number | null>;

  constructor(env: Record<string, string>) {
    this.child = startChild(process.execPath, ["--import", "tsx", join(root, "tests/fixtures/kafka-consumer.ts")], { cwd: root, env, onLine: (l) => this.onLine(l) });
    // "close" comes after the child's output is drained: every line it printed before dying has been seen.
    this.exit = new Promise((r) => this.child.proc.on("close", (code) => r(code)));
  }

  private onLine(line: string) {
    this.lines.push(line);
    const [kind, a, b, c] = line.trim().split(" ");
    if (kind === "J") this.joined++;
    else if (kind === "H") this.handed.set(Number(a), [...(this.handed.get(Number(a)) ?? []), { first: Number(b), last: Number(c) }]);
    else if (kind === "W") this.written++;
    else if (kind === "C") {
      const next = Math.max(Number(b), this.committed.get(Number(a)) ?? 0);
      this.committed.set(Number(a), next);
      // A commit covers every batch before it (the consumer commits a partition's chunks in order).
      this.handed.set(Number(a), (this.handed.get(Number(a)) ?? []).filter((h) => h.last >= next));
    }
    else if (kind === "X" || kind === "R") this.stale += Number(c) - Number(b) + 1;
  }

  /**
   * Records handed on and not committed: what a kill now may make run twice.
   * With the commit off the critical path that is up to two chunks per
   * partition (the one being written and the one whose commit is in flight);
   * with commits awaited, it was only the last one.
   */
  /** The most distinct uncommitted batches any partition has now. */
  widest(): number {
    let n = 0;
    for (const ranges of this.handed.values()) n = Math.max(n, new Set(ranges.map((r) => r.first)).size);
    return n;
  }

  uncommitted(): number {
    let n = 0;
    for (const ranges of this.handed.values()) for (const { first, last } of ranges) n += last - first + 1;
    return n;
  }
}

test("SIGKILLed consumer, many times: every event lands, commits reach the high watermark, duplicates stay within the uncommitted window", { timeout: 170_000 }, async () => {
  const topic = unique("crash");
  const groupId = unique("g");
  const project = unique("p");
  const N = 5000;
  const KILLS = 9;
  const env = { KAFKA_BROKERS: bed.kafkaSvc.brokers.join(","), TOPIC: topic, GROUP_ID: groupId, REDIS_URL: bed.redis.url, PROJECT: project, BATCH_SIZE: "25", ACK_DELAY_MS: "80" };
  const perCycle = Math.ceil(N / KILLS);
  let produced = 0;
  let window = 0;
  let widest = 0;
  const kills: string[] = [];

  for (let i = 0; i < KILLS; i++) {
    const proc = new ConsumerProcess(env);
    try {
      await until(`child ${i} joins`, () => proc.joined > 0, 30_000, 20);
      const batch = Array.from({ length: Math.min(perCycle, N - produced) }, (_, k) => ({ key: String(produced + k), value: seqEvent(produced + k) }));
      await produce(bed.producer, topic, batch, 100);
      produced += batch.length;
      if (i % 2 === 0) {
        // At a random moment of its work.
        await until(`child ${i} starts work`, () => proc.handed.size > 0, 20_000, 5).catch(() => {});
        await sleep(Math.random() * 600);
      } else {
        // Between a write and its commit: the k-th "written" line, k random.
        const k = 1 + Math.floor(Math.random() * 6);
        await until(`child ${i} writes ${k} batches`, () => proc.written >= k, 20_000, 1).catch(() => {});
      }
      await proc.child.stop("SIGKILL");
      await proc.exit;
      const exposed = proc.uncommitted();
      widest = Math.max(widest, proc.widest());
      window += exposed + proc.stale;
      kills.push(`${exposed}`);
    } catch (e) {
      await proc.child.stop("SIGKILL");
      throw new Error(`${(e as Error).message}\n${proc.child.output()}`);
    }
  }
  assert.equal(produced, N);

  // The last run: clean, until everything is committed.
  const last = new ConsumerProcess(env);
  try {
    await until("the last run to commit everything", () => caughtUp(bed.admin, groupId, topic), 90_000, 250);
  } finally {
    await last.child.stop("SIGTERM", 15_000);
  }
  assert.equal(await last.exit, 0, `the last run exits cleanly\n${last.child.output()}`);
  assert.ok(last.lines.includes("S"), "the last run reports a clean stop");
  window += last.stale;

  const { committed, high } = await offsets(bed.admin, groupId, topic);
  assert.deepEqual(committed, high, "committed offsets equal the high watermarks");
  assert.equal(Object.values(high).reduce((a, b) => a + b, 0), N);

  const { view } = seqRepo({ kafkaBootstrapServers: bed.kafkaSvc.brokers, topic });
  const store = redisStore({ url: bed.redis.url, project });
  const counter = new Redis(bed.redis.url);
  try {
    assert.deepEqual(await missingSeqs(store, view, N), [], "every sequence number is in Redis");
    const attempts = Number(await counter.get(`attempts:${project}`));
    const duplicates = attempts - N;
    console.log(`# crash: ${KILLS} kills (uncommitted at each: ${kills.join(", ")}), ${duplicates} duplicate attempts, window ${window}, at most ${widest} uncommitted batches per partition`);
    assert.ok(duplicates >= 0, `${attempts} attempts for ${N} events`);
    assert.ok(duplicates <= window, `${duplicates} duplicates exceed the uncommitted window of ${window}`);
    // One commit in flight per partition: at a kill, a partition has at most the chunk being written and the one whose commit is in flight.
    assert.ok(widest <= 2, `a partition had ${widest} uncommitted batches at a kill`);
  } finally {
    await store.close();
    counter.disconnect();
  }
});
