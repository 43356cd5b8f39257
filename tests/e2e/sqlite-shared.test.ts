// @runtimes node
/**
 * Reliability scenario 13, several processes on the embedded store:
 * `freshet serve`, `freshet consume` (Kafka, the mock cluster) and
 * `freshet materialize` run at the same time on ONE SQLite database (the
 * default store, <data-dir>/freshet.db), and each is SIGKILLed in the middle
 * of its work and restarted, round after round.
 *
 * Two views, each written by two processes at once, on shared keys:
 * - `pushed_view`: pushes to `serve` and the push source's batch file through `materialize`;
 * - `kafka_view`: the topic through `consume` and the Kafka source's batch file through `materialize`.
 * Every event has a unique id, and its event time is T0 + id ms, with the
 * ids of all sources shuffled together, so every process writes values that
 * are older and newer than the others'. About a third of the events go to 16
 * shared keys per view (latest-wins between processes); the others each to
 * a key of their own (a lost write is a missing key, not an overwritten one).
 *
 * After every round of kills, against the file itself (read by the test
 * process, a fourth connection):
 * - every acknowledged write is there: a 2xx push, a Kafka record below the
 *   committed offset, every row of a view whose materialize report was
 *   printed; its key holds it or a newer event (its own, for a unique key);
 * - every stored value is one that was sent, with its own event time;
 * and throughout, a poller reading the shared keys every 30 ms never sees a
 * value go back. At the end, with every push retried until acknowledged,
 * the consumer caught up and a last materialize completed, the store holds
 * exactly the newest event of every key, and nothing more: the exact counts.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FeatureView } from "../../mod.ts";
import { sqliteStore } from "../../plugins/stores/sqlite/index.ts";
import { freePort, sleep, startChild, waitFor, type Child } from "../services/system.ts";
import { caughtUp, offsets, unique, until, useKafkaTestBed } from "../fixtures/kafka-harness.ts";
import { kcatProduce, root } from "../fixtures/cli-harness.ts";

const bed = useKafkaTestBed();

const ROUNDS = 4;
const SHARED = 16;
const HISTORY = 12_000; // rows per batch file
const KAFKA_PER_ROUND = 1500;
const PUSHES_PER_ROUND = 150;
const ROWS_PER_PUSH = 4;

interface Event {
  k: string;
  id: number;
}

function writeRepo(dir: string, o: { project: string; brokers: string[]; topic: string; groupId: string }): string {
  symlinkSync(join(root, "node_modules"), join(dir, "node_modules"), "dir");
  const path = join(dir, "feature_repo.ts");
  writeFileSync(path, `import * as v from "valibot";
import { entity, featureRepo, fileSource, kafkaSource, pushSource, streamFeatureView } from ${JSON.stringify(join(root, "mod.ts"))};

const key = entity({ name: "key", joinKeys: ["k"] });
const schema = v.object({ k: v.string(), id: v.pipe(v.number(), v.integer()), ts: v.number() });
const pushed = pushSource({ name: "pushed", timestampField: "ts", batchSource: fileSource({ name: "pushed_history", path: ${JSON.stringify(join(dir, "pushed_history.jsonl"))}, timestampField: "ts" }) });
const kafka = kafkaSource({
  name: "stream", kafkaBootstrapServers: ${JSON.stringify(o.brokers)}, topic: ${JSON.stringify(o.topic)}, groupId: ${JSON.stringify(o.groupId)},
  batchSize: 50, lingerMs: 20, startFrom: "earliest", timestampField: "ts",
  batchSource: fileSource({ name: "kafka_history", path: ${JSON.stringify(join(dir, "kafka_history.jsonl"))}, timestampField: "ts" }),
});
export default featureRepo({ project: ${JSON.stringify(o.project)}, definitions: [
  key, pushed, kafka,
  streamFeatureView({ name: "pushed_view", entities: [key], source: pushed, ttl: 0, schema }),
  streamFeatureView({ name: "kafka_view", entities: [key], source: kafka, ttl: 0, schema }),
] });
`);
  return path;
}

/** A shuffled permutation of 0..n-1 (seeded, so a failure can be replayed). */
function shuffled(n: number, seed: number): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  let s = seed >>> 0;
  const rnd = () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/** Keys: a third shared per view, the rest one per event. */
const keyOf = (view: string, id: number) => (id % 3 === 0 ? `${view}-s${(id / 3) % SHARED}` : `${view}-u${id}`);

interface PushReq {
  id: string;
  body: string;
  events: Event[];
  acked: boolean;
}

/** One run of a CLI command, with its lines. */
class Proc {
  readonly child: Child;
  readonly lines: string[] = [];
  readonly closed: Promise<number | null>;
  constructor(args: string[], env: Record<string, string> = {}) {
    this.child = startChild(process.execPath, ["--import", "tsx", "adapters/cli.ts", ...args], { cwd: root, env, onLine: (l) => this.lines.push(l) });
    this.closed = new Promise((r) => this.child.proc.on("close", (code) => r(code)));
  }
  has(re: RegExp): boolean {
    return this.lines.some((l) => re.test(l));
  }
  async kill(): Promise<void> {
    await this.child.stop("SIGKILL");
    await this.closed;
  }
}

test("scenario 13: serve, consume and materialize on one SQLite file, each SIGKILLed mid-work and restarted: no acknowledged write lost, latest-wins across processes, exact counts", { timeout: 300_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "freshet-sqlite-shared-"));
  const dataDir = join(dir, "data");
  const dbPath = join(dataDir, "freshet.db");
  const topic = unique("shared");
  const groupId = unique("g-shared");
  const project = unique("shared").replace(/-/g, "_");
  const repo = writeRepo(dir, { project, brokers: bed.kafkaSvc.brokers, topic, groupId });
  const registry = (await import(repo)).default;
  const views: Record<string, FeatureView> = { pushed_view: registry.view("pushed_view"), kafka_view: registry.view("kafka_view") };

  // ---- every event of the run, ids shuffled across sources; event time T0 + id.
  const kafkaTotal = ROUNDS * KAFKA_PER_ROUND;
  const pushTotal = ROUNDS * PUSHES_PER_ROUND * ROWS_PER_PUSH;
  const ids = shuffled(2 * HISTORY + kafkaTotal + pushTotal, 13);
  let next = 0;
  const take = (view: string, n: number): Event[] => ids.slice(next, (next += n)).map((id) => ({ k: keyOf(view, id), id }));
  const T0 = Date.now() - 60 * 60_000;
  const line = (e: Event) => JSON.stringify({ k: e.k, id: e.id, ts: T0 + e.id });
  const pushedHistory = take("pushed_view", HISTORY);
  const kafkaHistory = take("kafka_view", HISTORY);
  const kafkaEvents = take("kafka_view", kafkaTotal);
  const pushEvents = take("pushed_view", pushTotal);
  writeFileSync(join(dir, "pushed_history.jsonl"), pushedHistory.map(line).join("\n") + "\n");
  writeFileSync(join(dir, "kafka_history.jsonl"), kafkaHistory.map(line).join("\n") + "\n");
  const pushes: PushReq[] = [];
  for (let i = 0; i < pushEvents.length; i += ROWS_PER_PUSH) {
    const events = pushEvents.slice(i, i + ROWS_PER_PUSH);
    const body = JSON.stringify({ push_source_name: "pushed", df: { k: events.map((e) => e.k), id: events.map((e) => e.id), ts: events.map((e) => T0 + e.id) }, to: "online" });
    pushes.push({ id: `msg_${i}`, body, events, acked: false });
  }

  // ---- the test's own connection to the file, and what must be there.
  const store = sqliteStore({ path: dbPath });
  const readAll = async (view: string, keys: string[]): Promise<Map<string, { id: number; eventTime: number } | undefined>> => {
    const out = new Map<string, { id: number; eventTime: number } | undefined>();
    const unique = [...new Set(keys)];
    for (let i = 0; i < unique.length; i += 2000) {
      const chunk = unique.slice(i, i + 2000);
      const rows = await store.read(views[view], chunk.map((k) => `k=${k}`), ["id"]);
      rows.forEach((r, j) => out.set(chunk[j], r.id.status === "NOT_FOUND" ? undefined : { id: Number(r.id.value), eventTime: r.id.eventTime! }));
    }
    return out;
  };
  /** Every event in `acked` is there: its key holds it or a newer one, its own if the key is its own; every stored value is one that was sent, at its own event time. */
  const checkAcked = async (what: string, view: string, acked: Event[]) => {
    if (!acked.length) return;
    const stored = await readAll(view, acked.map((e) => e.k));
    let missing = 0;
    let older = 0;
    for (const e of acked) {
      const s = stored.get(e.k);
      if (!s) missing++;
      else {
        assert.equal(s.eventTime, T0 + s.id, `${what}: ${e.k} holds id ${s.id} with its own event time`);
        if (s.id < e.id || (!e.k.includes("-s") && s.id !== e.id)) older++;
      }
    }
    assert.equal(missing, 0, `${what}: ${missing} of ${acked.length} acknowledged events have no value`);
    assert.equal(older, 0, `${what}: ${older} of ${acked.length} acknowledged events are overwritten by an older one`);
  };

  // ---- a poller: the shared keys never go back.
  const sharedKeys = (view: string) => Array.from({ length: SHARED }, (_, i) => `${view}-s${i}`);
  const seen = new Map<string, number>();
  let polls = 0;
  let regressions = 0;
  let polling = true;
  const poller = (async () => {
    while (polling) {
      for (const view of Object.keys(views)) {
        for (const [k, s] of await readAll(view, sharedKeys(view))) {
          if (!s) continue;
          const before = seen.get(k);
          if (before !== undefined && s.id < before) regressions++;
          seen.set(k, Math.max(before ?? -1, s.id));
        }
      }
      polls++;
      await sleep(30);
    }
  })();

  // ---- what was acknowledged so far.
  let producedKafka = 0;
  const materialized = new Set<string>();
  const kills = { serveMidBurst: 0, consumeMidBacklog: 0, materializeMidRun: 0, unackedPushes: 0 };
  const port = await freePort();
  // A short Kafka session, so that a consume restarted after its SIGKILL gets the partitions in seconds, not after kafkajs' 30 s default.
  const env = { FRESHET_PENDING_TTL_MS: "400", FRESHET_KAFKA_SESSION_TIMEOUT_MS: "6000" };
  const common = ["--data-dir", dataDir];

  const checkAll = async (when: string) => {
    await checkAcked(`${when}, pushes`, "pushed_view", pushes.filter((p) => p.acked).flatMap((p) => p.events));
    const committed = (await offsets(bed.admin, groupId, topic)).committed[0] ?? 0;
    assert.ok(committed <= producedKafka);
    await checkAcked(`${when}, Kafka below offset ${committed}`, "kafka_view", kafkaEvents.slice(0, Math.max(0, committed)));
    if (materialized.has("pushed_view")) await checkAcked(`${when}, materialized pushed_view`, "pushed_view", pushedHistory);
    if (materialized.has("kafka_view")) await checkAcked(`${when}, materialized kafka_view`, "kafka_view", kafkaHistory);
    return committed;
  };

  const startServe = async () => {
    const p = new Proc(["serve", repo, "--port", String(port), "--host", "127.0.0.1", ...common], env);
    await waitFor("freshet serve", async () => {
      try {
        return (await fetch(`http://127.0.0.1:${port}/health`)).status === 200;
      } catch {
        return false;
      }
    }, { child: p.child.proc, output: p.child.output, timeoutMs: 30_000 });
    return p;
  };
  const push = async (r: PushReq): Promise<number> => {
    const res = await fetch(`http://127.0.0.1:${port}/push`, { method: "POST", headers: { "content-type": "application/json", "webhook-id": r.id }, body: r.body });
    const body = await res.json();
    if (res.status === 200) {
      assert.ok(body.status === "ok" || body.status === "duplicate", JSON.stringify(body));
      r.acked = true;
    }
    return res.status;
  };
  const materializeReports = (p: Proc) => {
    for (const view of Object.keys(views)) if (p.has(new RegExp(`INFO +materialized ${view}: ${HISTORY} rows read`))) materialized.add(view);
  };

  try {
    const roundMs: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const roundStart = Date.now();
      materialized.clear(); // a report is checked against the store of its own round (later rounds only add newer values)
      await kcatProduce(bed.kafkaSvc.brokers, topic, kafkaEvents.slice(producedKafka, producedKafka + KAFKA_PER_ROUND).map(line), { lingerMs: 50 });
      producedKafka += KAFKA_PER_ROUND;
      const before = (await offsets(bed.admin, groupId, topic)).committed[0] ?? 0;

      // All three at once on the one file.
      const serve = await startServe();
      const consume = new Proc(["consume", repo, ...common], env);
      const mat = new Proc(["materialize", repo, ...common], env);

      // serve: a burst of pushes from 6 senders, killed once a third of them are acknowledged.
      const burst = pushes.slice(round * PUSHES_PER_ROUND, (round + 1) * PUSHES_PER_ROUND);
      let i = 0;
      const sender = async () => {
        while (i < burst.length) {
          const r = burst[i++];
          try {
            await push(r);
          } catch { /* the server died under it */ }
        }
      };
      const senders = Promise.all(Array.from({ length: 6 }, sender));
      const killServe = (async () => {
        await until("a third of the burst acknowledged", () => burst.filter((r) => r.acked).length >= PUSHES_PER_ROUND / 3, 30_000, 2);
        await serve.kill();
      })();

      // consume: killed once it committed part of this round's records, not all.
      const killConsume = (async () => {
        const target = before + 100 + Math.floor(Math.random() * 600);
        await until("consume commits part of the round", async () => ((await offsets(bed.admin, groupId, topic)).committed[0] ?? 0) >= target, 60_000, 10);
        await consume.kill();
        if (((await offsets(bed.admin, groupId, topic)).committed[0] ?? 0) < producedKafka) kills.consumeMidBacklog++;
      })();

      // materialize: killed at a point of its run: right after its first report (the second view in progress), or at a random moment.
      const killMat = (async () => {
        if (round % 2 === 0) await until("a first materialize report", () => mat.has(/INFO +materialized /), 60_000, 1);
        else await until("materialize starts reading", () => mat.has(/INFO +materialize \w+: \d+ rows read/) || mat.has(/INFO +materialized /), 60_000, 5).then(() => sleep(Math.random() * 400));
        await mat.kill();
        materializeReports(mat);
        if (materialized.size < 2) kills.materializeMidRun++;
      })();

      await Promise.all([killServe, killConsume, killMat]);
      await senders;
      const unacked = burst.filter((r) => !r.acked).length;
      kills.unackedPushes += unacked;
      if (unacked) kills.serveMidBurst++;
      // The file as the kills left it: every acknowledged write is there.
      await checkAll(`round ${round} after the kills`);
      roundMs.push(Date.now() - roundStart);
    }

    // ---- the last run: nothing killed. Every push retried until acknowledged, the consumer caught up, a full materialize.
    const serve = await startServe();
    const consume = new Proc(["consume", repo, ...common], env);
    const mat = new Proc(["materialize", repo, ...common], env);
    let conflicts = 0;
    for (const r of pushes.filter((p) => !p.acked)) {
      for (let attempt = 0; !r.acked; attempt++) {
        assert.ok(attempt < 100, `${r.id} still not accepted`);
        const status = await push(r);
        if (status === 409) {
          conflicts++;
          await sleep(100);
        } else assert.equal(status, 200);
      }
    }
    assert.equal(await mat.closed, 0, `the last materialize completes:\n${mat.child.output()}`);
    materializeReports(mat);
    assert.deepEqual([...materialized].sort(), ["kafka_view", "pushed_view"]);
    await until("consume caught up", () => caughtUp(bed.admin, groupId, topic), 60_000, 100);
    const committed = await checkAll("the end");
    assert.equal(committed, kafkaTotal, "every record committed");
    await serve.child.stop("SIGTERM", 15_000);
    await consume.child.stop("SIGTERM", 15_000);
    assert.equal(await serve.closed, 0, serve.child.output());
    assert.equal(await consume.closed, 0, consume.child.output());
    polling = false;
    await poller;

    // ---- exactly the newest event of every key, and nothing else.
    for (const [view, events] of [["pushed_view", [...pushedHistory, ...pushEvents]], ["kafka_view", [...kafkaHistory, ...kafkaEvents]]] as const) {
      const newest = new Map<string, number>();
      for (const e of events) newest.set(e.k, Math.max(newest.get(e.k) ?? -1, e.id));
      const stored = await readAll(view, [...newest.keys()]);
      const wrong = [...newest].filter(([k, id]) => stored.get(k)?.id !== id);
      assert.deepEqual(wrong.slice(0, 5).map(([k, id]) => ({ k, expected: id, got: stored.get(k)?.id })), [], `${view}: ${wrong.length} keys do not hold their newest event`);
      const db = await store.ready();
      const [{ n }] = await db.all("SELECT count(*) AS n FROM freshet_features WHERE view = ?1", [view]);
      assert.equal(Number(n), newest.size, `${view}: exactly one row per key sent`);
      const sharedN = [...newest.keys()].filter((k) => k.includes("-s")).length;
      assert.equal(sharedN, SHARED, `${view}: all ${SHARED} shared keys were written by both of its processes`);
    }
    const letters = join(dataDir, "dead-letters.jsonl");
    assert.equal(existsSync(letters) ? readFileSync(letters, "utf8") : "", "", "no dead letters");
    assert.equal(regressions, 0, `a shared key went back ${regressions} times in ${polls} polls`);
    assert.ok(polls > 20, `the poller ran (${polls} polls)`);
    // The kills hit work in flight.
    assert.ok(kills.serveMidBurst > 0 && kills.unackedPushes > 0, `serve killed in a burst: ${JSON.stringify(kills)}`);
    assert.ok(kills.consumeMidBacklog > 0, `consume killed before it caught up: ${JSON.stringify(kills)}`);
    assert.ok(kills.materializeMidRun > 0, `materialize killed before its last report: ${JSON.stringify(kills)}`);
    console.log(`[scenario 13] ${ROUNDS} rounds of SIGKILLs on one SQLite file: ${JSON.stringify(kills)}, ${conflicts} pushes answered 409 while pending, ${polls} polls of the shared keys; rounds of ${roundMs.map((ms) => (ms / 1000).toFixed(1)).join(", ")} s; ` +
      `${pushes.length} pushes (${pushTotal} rows), ${kafkaTotal} Kafka records, 2 x ${HISTORY} history rows`);
  } finally {
    polling = false;
    await poller.catch(() => {});
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
