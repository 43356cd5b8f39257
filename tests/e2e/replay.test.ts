// @runtimes node
/**
 * `freshet replay`: dead letters run back through the same pipeline after a
 * schema fix, from a dead-letter file and from a Kafka dead-letter topic
 * (the mock cluster); what now passes is written, what still fails is
 * reported with its new reason, and a second replay does nothing twice.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createProcessor, type DeadLetter, type Registry } from "../../mod.ts";
import { fileDeadLetters } from "../../plugins/stores/file/index.ts";
import { kafkaDeadLetters } from "../../plugins/sources/kafka.ts";
import { sqliteStore } from "../../plugins/stores/sqlite/index.ts";
import { root } from "../fixtures/cli-harness.ts";
import { unique, useKafkaTestBed } from "../fixtures/kafka-harness.ts";

const bed = useKafkaTestBed();

/** A repo whose conv_rate is a number (strict) or also a numeric string (fixed). */
function writeRepo(dir: string, name: string, o: { fixed: boolean; brokers: string[]; topic: string; dlq: string }): string {
  const path = join(dir, name);
  const conv = o.fixed ? "v.union([v.number(), v.pipe(v.string(), v.decimal(), v.transform(Number))])" : "v.number()";
  writeFileSync(path, `import * as v from "valibot";
import { entity, featureRepo, kafkaSource, pushSource, streamFeatureView } from ${JSON.stringify(join(root, "mod.ts"))};
const driver = entity({ name: "driver", joinKeys: ["driver_id"] });
const push = pushSource({ name: "stats_push", timestampField: "event_timestamp" });
const stream = kafkaSource({ name: "stats_stream", topic: ${JSON.stringify(o.topic)}, kafkaBootstrapServers: ${JSON.stringify(o.brokers)}, timestampField: "event_timestamp", deadLetterTopic: ${JSON.stringify(o.dlq)} });
const schema = v.object({ driver_id: v.number(), conv_rate: ${conv}, event_timestamp: v.string() });
export default featureRepo({ project: "replay_test", definitions: [
  streamFeatureView({ name: "driver_stats", entities: [driver], source: push, ttl: "30d", schema }),
  streamFeatureView({ name: "driver_stream", entities: [driver], source: stream, ttl: "30d", schema }),
] });
`);
  return path;
}

function setup() {
  const dir = mkdtempSync(join(tmpdir(), "freshet-replay-"));
  symlinkSync(join(root, "node_modules"), join(dir, "node_modules"), "dir");
  writeFileSync(join(dir, "package.json"), JSON.stringify({ type: "module" }));
  const topic = unique("replay-src");
  const dlq = unique("replay-dlq");
  const o = { brokers: bed.kafkaSvc.brokers, topic, dlq };
  return { dir, dlq, strict: writeRepo(dir, "strict.ts", { fixed: false, ...o }), fixed: writeRepo(dir, "fixed.ts", { fixed: true, ...o }) };
}

const cli = (...args: string[]) => spawnSync(process.execPath, ["bin/freshet.mjs", ...args], { cwd: root, encoding: "utf8", timeout: 120_000 });
const ts = new Date(Date.now() - 60_000).toISOString();
/** Five bad rows under the strict schema: four with conv_rate as a numeric string (fixed by the new schema), one with none that no schema takes. */
const rows = [
  ...[1, 2, 3, 4].map((id) => ({ driver_id: id, conv_rate: `0.${id}`, event_timestamp: ts })),
  { driver_id: 5, conv_rate: "not a number", event_timestamp: ts },
];

async function loadStrict(path: string): Promise<Registry> {
  return (await import(path)).default as Registry;
}

async function readBack(db: string, registry: Registry, view: string): Promise<unknown[]> {
  const store = sqliteStore({ path: db });
  try {
    const got = await store.read(registry.view(view), [1, 2, 3, 4, 5].map((id) => `driver_id=${id}`), ["conv_rate"]);
    return got.map((r) => r.conv_rate?.value ?? null);
  } finally {
    await store.close?.();
  }
}

describe("freshet replay", () => {
  it("replays a dead-letter file after a schema fix: what passes is written, what fails is reported, and again is a no-op", { timeout: 120_000 }, async () => {
    const { dir, strict, fixed } = setup();
    const db = join(dir, "freshet.db");
    const letters = join(dir, "dead-letters.jsonl");
    // The strict repo dead-letters all five, through the real pipeline and the real file sink.
    const registry = await loadStrict(strict);
    const online = sqliteStore({ path: db });
    const processor = createProcessor({ registry, online, deadLetters: fileDeadLetters(letters) });
    const r = await processor.process("stats_push", rows.map((value, index) => ({ value, position: { kind: "push", requestId: "req-1", index } })));
    assert.equal(r.invalid, 5);
    await online.close?.();
    assert.equal(readFileSync(letters, "utf8").trim().split("\n").length, 5);

    const first = cli("replay", fixed, "--dead-letters", letters, "--store", `sqlite:${db}`, "--data-dir", dir);
    assert.equal(first.status, 0, first.stdout + first.stderr);
    assert.match(first.stdout, /replayed 5 dead letters of .*dead-letters\.jsonl: 4 now pass \(4 rows written, 0 stale, 0 expired, 0 skipped by the UDF\), 1 still fail \(schema 1\) -> .*dead-letters\.jsonl\.still-failing\.jsonl/);
    assert.deepEqual(await readBack(db, registry, "driver_stats"), [0.1, 0.2, 0.3, 0.4, null]);
    const still = readFileSync(`${letters}.still-failing.jsonl`, "utf8").trim().split("\n").map((l) => JSON.parse(l) as DeadLetter);
    assert.equal(still.length, 1);
    assert.equal(still[0].reason, "schema");
    assert.equal(still[0].path, "conv_rate");
    assert.deepEqual(still[0].position, { kind: "push", requestId: "req-1", index: 4 }, "the original position");

    const again = cli("replay", fixed, "--dead-letters", letters, "--store", `sqlite:${db}`, "--data-dir", dir);
    assert.equal(again.status, 0, again.stderr);
    assert.match(again.stdout, /replayed 5 dead letters .*: 0 now pass .*, 0 still fail, 5 already replayed before \(nothing done\)/);
    assert.equal(readFileSync(`${letters}.still-failing.jsonl`, "utf8").trim().split("\n").length, 1, "nothing written twice");
  });

  it("refuses a file that is not a dead-letter file, naming the line, and --out equal to the input", () => {
    const { dir, fixed } = setup();
    const bad = join(dir, "bad.jsonl");
    writeFileSync(bad, `${JSON.stringify({ source: "stats_push", reason: "schema", message: "m", payload: "{}", position: { kind: "memory", index: 0 }, at: "x" })}\n{"hello": 1}\n{}\n`);
    const r = cli("replay", fixed, "--dead-letters", bad, "--data-dir", dir);
    assert.equal(r.status, 2, r.stdout + r.stderr);
    assert.match(r.stderr, /bad\.jsonl line 2 is not a dead letter: no "source"/);
    const same = cli("replay", fixed, "--dead-letters", bad, "--out", bad, "--data-dir", dir);
    assert.equal(same.status, 2);
    const neither = cli("replay", fixed, "--data-dir", dir);
    assert.equal(neither.status, 2);
    assert.match(neither.stderr, /needs --dead-letters <file> or --dead-letter-topic <topic>/);
  });

  it("replays a Kafka dead-letter topic from its start to its end", { timeout: 120_000 }, async () => {
    const { dir, dlq, strict, fixed } = setup();
    const db = join(dir, "freshet.db");
    const registry = await loadStrict(strict);
    const online = sqliteStore({ path: db });
    // The strict repo's stream dead-letters to the topic, as `freshet consume` would.
    const sink = kafkaDeadLetters({ brokers: bed.kafkaSvc.brokers, topic: dlq });
    const processor = createProcessor({ registry, online, deadLetters: fileDeadLetters(join(dir, "unused.jsonl")), sourceDeadLetters: { stats_stream: sink } });
    const r = await processor.process("stats_stream", rows.map((value, i) => ({ value: JSON.stringify(value), position: { kind: "kafka", topic: "src", partition: 0, offset: String(100 + i) } })));
    assert.equal(r.invalid, 5);
    await sink.close?.();
    await online.close?.();

    const out = join(dir, "still.jsonl");
    const res = cli("replay", fixed, "--dead-letter-topic", dlq, "--store", `sqlite:${db}`, "--data-dir", dir, "--out", out);
    assert.equal(res.status, 0, res.stdout + res.stderr);
    assert.match(res.stdout, new RegExp(`replayed 5 dead letters of topic ${dlq}: 4 now pass .*1 still fail \\(schema 1\\)`));
    assert.deepEqual(await readBack(db, registry, "driver_stream"), [0.1, 0.2, 0.3, 0.4, null]);
    const still = readFileSync(out, "utf8").trim().split("\n").map((l) => JSON.parse(l) as DeadLetter);
    assert.deepEqual(still.map((l) => l.position), [{ kind: "kafka", topic: "src", partition: 0, offset: "104" }]);
    const unknown = cli("replay", fixed, "--dead-letter-topic", "nope", "--data-dir", dir);
    assert.equal(unknown.status, 2);
    assert.match(unknown.stderr, new RegExp(`no Kafka source of this repo has deadLetterTopic "nope"; the repo's dead-letter topics: ${dlq}`));
  });
});
