import { describe, it, after, before } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as v from "valibot";
import { parquetWriteBuffer } from "hyparquet-writer";
import { createProcessor, entity, featureRepo, fileSource, materialize, type FileSource, type MaterializeProgress, type OnlineStore, pushSource, streamFeatureView, type Udf } from "../mod.ts";
import { memoryDeadLetters, memoryStore } from "../plugins/stores/memory.ts";
import { countFileRows, progressLogger, readFileSource } from "../plugins/sources/file.ts";

const DAY = 86_400_000;
const T0 = Date.UTC(2026, 0, 10);
const START = T0 - 3 * DAY;
const END = T0 + 3 * DAY;
const ENTITIES = 300;
const PER_ENTITY = 10;

interface Good {
  driver_id: number;
  conv_rate: number;
  acc_rate: number;
  avg_daily_trips: number;
  t: number;
}

/** A small deterministic PRNG, so a failure can be reproduced. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed * 1664525 + 1013904223) >>> 0;
    return seed / 2 ** 32;
  };
}

/** Several rows per entity over ten days (some outside the range), shuffled. The last entity has none in range. */
function goodRows(): Good[] {
  const rand = prng(42);
  const rows: Good[] = [];
  for (let id = 1; id <= ENTITIES; id++) {
    for (let k = 0; k < PER_ENTITY; k++) {
      const offset = id === ENTITIES ? 4 * DAY + k * 1000 : Math.floor((rand() - 0.5) * 10 * DAY / 1000) * 1000 + k;
      rows.push({ driver_id: id, conv_rate: Math.round(rand() * 1000) / 1000, acc_rate: Math.round(rand() * 1000) / 1000, avg_daily_trips: Math.floor(rand() * 500), t: T0 + offset });
    }
  }
  for (let i = rows.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [rows[i], rows[j]] = [rows[j], rows[i]];
  }
  return rows;
}

const GOOD = goodRows();
const IN_RANGE = GOOD.filter((r) => r.t >= START && r.t < END);
const EXPECTED = new Map<number, Good>();
for (const r of IN_RANGE) if (!EXPECTED.has(r.driver_id) || EXPECTED.get(r.driver_id)!.t < r.t) EXPECTED.set(r.driver_id, r);
/** A time later than any good row, in range: a bad row there must not win. */
const LATE = END - 1000;
const iso = (t: number) => new Date(t).toISOString();
const csvTime = (t: number) => iso(t).replace("T", " ").replace("Z", "");

const driver = entity({ name: "driver", joinKeys: ["driver_id"] });
const schema = v.object({
  driver_id: v.pipe(v.number(), v.integer()),
  conv_rate: v.number(),
  acc_rate: v.number(),
  avg_daily_trips: v.number(),
  event_timestamp: v.string(),
});

function repoOn(batchSource: FileSource, udf?: Udf) {
  const src = pushSource({ name: "driver_stats_push", batchSource, timestampField: "event_timestamp" });
  return featureRepo({
    project: "materialize_test",
    definitions: [driver, src, streamFeatureView({ name: "driver_hourly_stats", entities: [driver], source: src, schema, ttl: 0, udf, features: udf ? ["conv_rate", "acc_rate", "avg_daily_trips", "reliability"] : undefined })],
  });
}
const viewOn = (batchSource: FileSource) => repoOn(batchSource).view("driver_hourly_stats");
/** A processor over `store` for the view's repo, with its dead letters. */
const processorOn = (batchSource: FileSource, store: OnlineStore, udf?: Udf) => {
  const dlq = memoryDeadLetters();
  return { processor: createProcessor({ registry: repoOn(batchSource, udf), online: store, deadLetters: dlq }), dlq };
};

let dir = "";
const fixtures: Record<"jsonl" | "csv" | "parquet", { path: string; invalid: number; rows: number }> = {} as never;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "freshet-materialize-"));

  // JSON Lines: good rows, then bad lines mixed in.
  const jl = GOOD.map((r) => JSON.stringify({ driver_id: r.driver_id, conv_rate: r.conv_rate, acc_rate: r.acc_rate, avg_daily_trips: r.avg_daily_trips, event_timestamp: iso(r.t) }));
  const badJl = [
    '{"driver_id": 7, "conv_rate": 0.',
    "not json at all",
    '{"driver_id": 8,, "conv_rate": 1}',
    "[1, 2, 3]",
    '"a string"',
    JSON.stringify({ driver_id: 1, conv_rate: 0.5, acc_rate: 0.5, avg_daily_trips: 1 }), // no timestamp
    JSON.stringify({ driver_id: 2, conv_rate: 0.5, acc_rate: 0.5, avg_daily_trips: 1, event_timestamp: "yesterday" }),
    JSON.stringify({ driver_id: 3, conv_rate: "abc", acc_rate: 0.5, avg_daily_trips: 1, event_timestamp: iso(LATE) }), // schema
    JSON.stringify({ driver_id: 4, conv_rate: 0.5, acc_rate: 0.5, event_timestamp: iso(LATE) }), // schema: missing feature
    JSON.stringify({ conv_rate: 0.5, acc_rate: 0.5, avg_daily_trips: 1, event_timestamp: iso(LATE) }), // no join key
  ];
  const jlLines = [...jl];
  badJl.forEach((b, i) => jlLines.splice(100 + i * 250, 0, b));
  fixtures.jsonl = { path: join(dir, "driver_stats.jsonl"), invalid: badJl.length, rows: jlLines.length };
  await writeFile(fixtures.jsonl.path, jlLines.join("\n") + "\n");

  // CSV with a header, pandas-style timestamps and a quoted column with commas.
  const csvLines = GOOD.map((r, i) => `${r.driver_id},${r.conv_rate},${r.acc_rate},${r.avg_daily_trips},${csvTime(r.t)},"Paris, FR ""${i}"""`);
  const badCsv = [
    "5,0.1", // too few fields
    "6,0.1,0.2,3,2026-01-10 00:00:00,x,extra", // too many fields
    `7,0.1,0.2,3,not-a-time,x`,
    `8,abc,0.2,3,${csvTime(LATE)},x`, // schema
    `9,0.1,0.2,3,${csvTime(LATE)},x`.replace("9,", ","), // empty join key
  ];
  badCsv.forEach((b, i) => csvLines.splice(50 + i * 300, 0, b));
  fixtures.csv = { path: join(dir, "driver_stats.csv"), invalid: badCsv.length, rows: csvLines.length };
  await writeFile(fixtures.csv.path, "driver_id,conv_rate,acc_rate,avg_daily_trips,event_timestamp,note\n" + csvLines.join("\r\n") + "\r\n");

  // Parquet: int64 ids, a timestamp column, several row groups, and rows with nulls.
  const pq = [
    ...GOOD.map((r) => ({ ...r, conv_rate: r.conv_rate as number | null, t: r.t as number | null })),
    { driver_id: 10, conv_rate: 0.5, acc_rate: 0.5, avg_daily_trips: 1, t: null }, // no timestamp
    { driver_id: 11, conv_rate: 0.5, acc_rate: 0.5, avg_daily_trips: 1, t: null },
    { driver_id: 12, conv_rate: null, acc_rate: 0.5, avg_daily_trips: 1, t: LATE }, // schema
  ];
  const buf = parquetWriteBuffer({
    columnData: [
      { name: "driver_id", data: pq.map((r) => BigInt(r.driver_id)), type: "INT64", nullable: false },
      { name: "conv_rate", data: pq.map((r) => r.conv_rate), type: "DOUBLE", nullable: true },
      { name: "acc_rate", data: pq.map((r) => r.acc_rate), type: "DOUBLE", nullable: false },
      { name: "avg_daily_trips", data: pq.map((r) => r.avg_daily_trips), type: "INT32", nullable: false },
      { name: "event_timestamp", data: pq.map((r) => (r.t === null ? null : new Date(r.t))), type: "TIMESTAMP", nullable: true },
    ],
    rowGroupSize: 700,
  });
  fixtures.parquet = { path: join(dir, "driver_stats.parquet"), invalid: 3, rows: pq.length };
  await writeFile(fixtures.parquet.path, new Uint8Array(buf));
});

after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

for (const format of ["jsonl", "csv", "parquet"] as const) {
  describe(`materialize from ${format}`, () => {
    it("writes exactly the latest in-range row per entity, dead-lettering bad rows once", async () => {
      const batch = fileSource({ name: "driver_stats_history", path: fixtures[format].path, timestampField: "event_timestamp" });
      const view = viewOn(batch);
      const store = memoryStore();
      const { processor, dlq } = processorOn(batch, store);
      const seen: MaterializeProgress[] = [];
      const invalidRows: number[] = [];
      const total = await countFileRows(batch);
      assert.equal(total, fixtures[format].rows);
      const result = await materialize(processor, view, {
        start: iso(START),
        end: END,
        read: readFileSource(batch, { chunkSize: 400, onInvalid: (r) => invalidRows.push(r.line) }),
        total,
        onProgress: (p) => seen.push(p),
      });

      assert.equal(result.read, fixtures[format].rows);
      assert.equal(result.invalid, fixtures[format].invalid);
      assert.equal(dlq.letters.length, fixtures[format].invalid, "every invalid row is a dead letter, once (an unreadable line arrives as an empty row)");
      assert.ok(dlq.letters.every((l) => l.position.kind === "file" && l.reason !== "late"));
      assert.equal(result.inRange, IN_RANGE.length);
      // Each chunk is deduped, then latest-wins in the store: every in-range row is written or stale.
      assert.equal(result.written + result.stale + result.expired, IN_RANGE.length);
      assert.ok(result.written >= EXPECTED.size);
      assert.equal(result.done, true);
      assert.equal(result.view, "driver_hourly_stats");
      assert.equal(store.size, EXPECTED.size);
      if (format === "jsonl") assert.equal(invalidRows.length, 5); // unparseable lines and non-objects
      if (format === "csv") assert.equal(invalidRows.length, 2); // wrong field counts

      const ids = Array.from({ length: ENTITIES }, (_, i) => i + 1);
      const got = await store.read(view, ids.map((id) => `driver_id=${id}`), ["conv_rate", "acc_rate", "avg_daily_trips"]);
      ids.forEach((id, i) => {
        const want = EXPECTED.get(id);
        if (!want) {
          assert.equal(got[i].conv_rate.status, "NOT_FOUND", `driver ${id} has no row in range`);
          return;
        }
        assert.deepEqual(
          { conv_rate: got[i].conv_rate.value, acc_rate: got[i].acc_rate.value, trips: got[i].avg_daily_trips.value, t: got[i].conv_rate.eventTime },
          { conv_rate: want.conv_rate, acc_rate: want.acc_rate, trips: want.avg_daily_trips, t: want.t },
          `driver ${id}`,
        );
      });
      assert.ok(!EXPECTED.has(ENTITIES));

      // Progress: several calls, counts never go down, one final `done`.
      assert.ok(seen.length > 5, `progress was reported ${seen.length} times`);
      for (let i = 1; i < seen.length; i++) {
        for (const k of ["read", "inRange", "invalid", "written"] as const) assert.ok(seen[i][k] >= seen[i - 1][k], `${k} went down at call ${i}`);
      }
      assert.ok(seen.slice(0, -1).every((p) => !p.done));
      assert.deepEqual(seen.at(-1), result);
      assert.ok(seen.some((p) => p.read > 0 && p.read < result.read), "progress is reported while reading");
      assert.ok(seen.some((p) => p.written > 0 && p.written < result.written), "progress is reported while writing");
    });
  });
}

describe("materialize beside a live store", () => {
  it("counts a row older than what the store holds as stale and keeps the newer value", async () => {
    const batch = fileSource({ name: "driver_stats_history", path: fixtures.jsonl.path, timestampField: "event_timestamp" });
    const view = viewOn(batch);
    const store = memoryStore();
    const newer = EXPECTED.get(1)!.t + 1;
    await store.write(view, [{ entityKey: "driver_id=1", values: { conv_rate: 0.99, acc_rate: 0.99, avg_daily_trips: 999 }, eventTime: newer }]);
    const p = await materialize(processorOn(batch, store).processor, view, { start: START, end: END, read: readFileSource(batch, { chunkSize: 100_000 }) });
    assert.equal(p.written, EXPECTED.size - 1, "one chunk: one row per entity, all but driver 1 written");
    assert.equal(p.stale, IN_RANGE.length - EXPECTED.size + 1);
    const [r] = await store.read(view, ["driver_id=1"], ["avg_daily_trips"]);
    assert.deepEqual(r.avg_daily_trips, { value: 999, status: "PRESENT", eventTime: newer });
  });
});

describe("materialize runs the stream's pipeline", () => {
  it("gives the same online values as pushing the same rows, UDF included", async () => {
    const batch = fileSource({ name: "driver_stats_history", path: fixtures.jsonl.path, timestampField: "event_timestamp" });
    const udf: Udf = (rows) => rows.map((r) => ({ ...r, reliability: Number(r.conv_rate) * Number(r.acc_rate) }));
    const backfilled = memoryStore();
    const { processor } = processorOn(batch, backfilled, udf);
    const view = processor.registry.view("driver_hourly_stats");
    await materialize(processor, view, { read: readFileSource(batch, { chunkSize: 250 }) });
    const pushed = memoryStore();
    const live = processorOn(batch, pushed, udf).processor;
    const rows = GOOD.map((r) => ({ driver_id: r.driver_id, conv_rate: r.conv_rate, acc_rate: r.acc_rate, avg_daily_trips: r.avg_daily_trips, event_timestamp: iso(r.t) }));
    for (let i = 0; i < rows.length; i += 97) {
      await live.process("driver_stats_push", rows.slice(i, i + 97).map((value, index) => ({ value, position: { kind: "push", requestId: String(i), index } })));
    }
    const keys = Array.from({ length: ENTITIES }, (_, i) => `driver_id=${i + 1}`);
    const features = ["conv_rate", "acc_rate", "avg_daily_trips", "reliability"];
    const a = await backfilled.read(view, keys, features);
    const b = await pushed.read(view, keys, features);
    assert.deepEqual(a, b);
    assert.equal(a[0].reliability.status, "PRESENT", "the UDF's feature is there after a backfill");
  });
});

describe("progressLogger", () => {
  it("logs counts with a percentage, at most every everyMs, and always when done", async () => {
    const batch = fileSource({ name: "driver_stats_history", path: fixtures.csv.path, timestampField: "event_timestamp" });
    const view = viewOn(batch);
    const lines: string[] = [];
    await materialize(processorOn(batch, memoryStore()).processor, view, { read: readFileSource(batch, { chunkSize: 1000 }), total: await countFileRows(batch), onProgress: progressLogger((l) => lines.push(l), 0) });
    assert.ok(lines.length >= 3);
    assert.match(lines[0], /^\[freshet\] materialize driver_hourly_stats: 1000 rows read, \d+ in range, \d+ invalid, \d+ written, \d+ stale \(33%, \d+ rows\/s, ETA (\d+s|\?)\)$/);
    assert.match(lines.at(-1)!, /: 3005 rows read, 3000 in range, 5 invalid, \d+ written, \d+ stale \(done in \d+\.\ds, \d+ rows\/s\)$/);

    const quiet: string[] = [];
    await materialize(processorOn(batch, memoryStore()).processor, view, { read: readFileSource(batch, { chunkSize: 100 }), onProgress: progressLogger((l) => quiet.push(l), 60_000) });
    assert.equal(quiet.length, 1, "only the final line within a minute");
    assert.match(quiet[0], /done in/);
  });

  it("on a terminal, draws a bar with percentage, rate and ETA", () => {
    let t = 0;
    const lines: [string, boolean][] = [];
    const progress = progressLogger((l, done) => lines.push([l, done]), 1000, { bar: true, now: () => t });
    t = 2000;
    progress({ view: "v", read: 4000, inRange: 4000, invalid: 0, written: 4000, stale: 0, expired: 0, total: 10_000 } as MaterializeProgress);
    t = 2500;
    progress({ view: "v", read: 5000, inRange: 5000, invalid: 0, written: 5000, stale: 0, expired: 0, total: 10_000 } as MaterializeProgress);
    t = 5000;
    progress({ view: "v", read: 10_000, inRange: 10_000, invalid: 0, written: 10_000, stale: 0, expired: 0, total: 10_000, done: true } as MaterializeProgress);
    assert.deepEqual(lines, [
      ["[freshet] [########............] materialize v: 4000 rows read, 4000 in range, 0 invalid, 4000 written (40%, 2000 rows/s, ETA 3s)", false],
      ["[freshet] [####################] materialize v: 10000 rows read, 10000 in range, 0 invalid, 10000 written (done in 5.0s, 2000 rows/s)", true],
    ]);
  });
});

describe("readFileSource errors", () => {
  it("names the source and the file when the file is missing or not in its format", async () => {
    const missing = fileSource({ name: "nowhere", path: join(dir, "missing.jsonl") });
    await assert.rejects(async () => {
      for await (const _ of readFileSource(missing));
    }, (e: Error & { code?: string }) => e.code === "INVALID_CONFIG" && /"nowhere".*missing\.jsonl does not exist/.test(e.message));
    await assert.rejects(countFileRows(missing), /does not exist/);
    const notParquet = fileSource({ name: "not_parquet", path: fixtures.jsonl.path, fileFormat: "parquet" });
    await assert.rejects(async () => {
      for await (const _ of readFileSource(notParquet));
    }, (e: Error & { code?: string }) => e.code === "INVALID_INPUT" && /"not_parquet".*as parquet/.test(e.message));
  });
});
