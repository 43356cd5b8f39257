// materialize on an aggregation view: the tiles of [start, end) are rebuilt
// from the batch source, replacing what was there (not adding to it), so a
// backfill then the stream reads the same as streaming the whole history;
// ranges that would cut a tile, and lifetime windows over a range, are refused.
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as v from "valibot";
import { createProcessor, entity, featureRepo, fileSource, kafkaSource, materialize, type RawRecord, streamFeatureView } from "../mod.ts";
import { readFileSource } from "../plugins/sources/file.ts";
import { memoryDeadLetters, memoryStore } from "../plugins/stores/memory.ts";
import { sqliteStore } from "../plugins/stores/sqlite/index.ts";
import { prng } from "../testing/agg-reference.ts";

const dir = await mkdtemp(join(tmpdir(), "freshet-mat-agg-"));
after(() => rm(dir, { recursive: true, force: true }));

const HOUR = 3_600_000;
const T = Math.floor(Date.now() / HOUR) * HOUR - 6 * HOUR;
const history = join(dir, "history.jsonl");
const user = entity({ name: "user", joinKeys: ["user_id"] });
const schema = v.object({ user_id: v.number(), amount: v.number(), category: v.string(), ts: v.number() });
const aggs = [
  { column: "amount", function: "sum", timeWindow: "1d", slideInterval: "1h" },
  { column: "amount", function: "count", timeWindow: "2h", slideInterval: "10m" },
  { column: "amount", function: "max", timeWindow: "1d", slideInterval: "1h" },
  { column: "category", function: "lastDistinctN", timeWindow: "1d", slideInterval: "1h", n: 3 },
];
const src = kafkaSource({ name: "mat_src", kafkaBootstrapServers: "127.0.0.1:1", topic: "mat", timestampField: "ts", watermarkDelay: 30, batchSource: fileSource({ name: "mat_history", path: history }) });
const repo = featureRepo({ project: "mat_agg", definitions: [streamFeatureView({ name: "mat_view", entities: [user], source: src, schema, ttl: 0, aggregations: aggs as never })] });
const view = repo.view("mat_view");
const names = view.aggregations!.map((a) => a.name);

const rnd = prng(77);
const rows = Array.from({ length: 900 }, (_, i) => ({ user_id: i % 5, amount: Math.floor(rnd() * 100), category: `c${Math.floor(rnd() * 6)}`, ts: T + Math.floor((i * 5 * HOUR) / 900) }));
const SPLIT = T + 3 * HOUR; // history before, stream from here on
const past = rows.filter((r) => r.ts < SPLIT);
const live = rows.filter((r) => r.ts >= SPLIT);
await writeFile(history, past.map((r) => JSON.stringify(r)).join("\n") + "\n");
const records = (list: typeof rows, from = 0): RawRecord[] => list.map((r, i) => ({ value: JSON.stringify(r), position: { kind: "kafka", topic: "mat", partition: 0, offset: String(from + i) } }));

describe("materialize on an aggregation view", () => {
  for (const kind of ["memory", "sqlite"] as const) {
    it(`${kind}: a backfill of [start, end) replaces its tiles, and backfill + stream reads like streaming the whole history`, async () => {
      let clock = rows[rows.length - 1].ts + 1000;
      const open = (name: string) => (kind === "memory" ? memoryStore({ now: () => clock }) : sqliteStore({ path: join(dir, `${name}.db`), now: () => clock }));
      const whole = open("whole");
      const rebuilt = open("rebuilt");
      const streamAll = createProcessor({ registry: repo, online: whole, deadLetters: memoryDeadLetters(), now: () => clock });
      await streamAll.process("mat_src", records(rows));
      const p2 = createProcessor({ registry: repo, online: rebuilt, deadLetters: memoryDeadLetters(), now: () => clock });
      // What the range held before: wrong values, as if folded twice. The backfill must replace them.
      await p2.process("mat_src", records(past, 10_000).map((r) => ({ ...r, position: { kind: "memory", index: 0 } })));
      await p2.process("mat_src", records(past, 10_000).map((r) => ({ ...r, position: { kind: "memory", index: 0 } })));
      const m1 = await materialize(p2, view, { start: T - HOUR, end: SPLIT, read: readFileSource(view.source.batchSource!) });
      assert.equal(m1.written, past.length);
      const m2 = await materialize(p2, view, { start: T - HOUR, end: SPLIT, read: readFileSource(view.source.batchSource!) });
      assert.equal(m2.written, past.length, "a second backfill of the same range replaces again");
      await p2.process("mat_src", records(live));
      const keys = [0, 1, 2, 3, 4].map((k) => `user_id=${k}`);
      for (const at of [clock, clock + 30 * 60_000, clock + 4 * HOUR]) {
        clock = at;
        assert.deepEqual(await rebuilt.read(view, keys, names), await whole.read(view, keys, names), `equal reads at ${new Date(at).toISOString()}`);
      }
      const [r] = await rebuilt.read(view, ["user_id=0"], ["sum_amount_86400s"]);
      assert.ok((r.sum_amount_86400s.value as number) > 0);
      await whole.close?.();
      await rebuilt.close?.();
    });
  }

  it("refuses a range that cuts a tile, and a lifetime window over a range, saying what to use", async () => {
    const p = createProcessor({ registry: repo, online: memoryStore(), deadLetters: memoryDeadLetters() });
    await assert.rejects(materialize(p, view, { start: T + 5 * 60_000, read: readFileSource(view.source.batchSource!) }), /start .* is not on a tile boundary of "sum_amount_86400s" \(slide 3600s\).*use .*T\d\d:00:00.000Z or/);
    const life = featureRepo({ project: "mat_life", definitions: [streamFeatureView({ name: "life", entities: [user], source: src, schema, ttl: 0, aggregations: [{ column: "amount", function: "count", timeWindow: "lifetime" }] })] });
    const pl = createProcessor({ registry: life, online: memoryStore(), deadLetters: memoryDeadLetters() });
    await assert.rejects(materialize(pl, life.view("life"), { start: T, read: readFileSource(view.source.batchSource!) }), /lifetime window, which holds the whole history: materialize it without start and end/);
    const whole = await materialize(pl, life.view("life"), { read: readFileSource(view.source.batchSource!) });
    assert.equal(whole.written, past.length);
  });
});
