/**
 * Point-in-time historical retrieval: both engines (DuckDB over the Parquet
 * log, the streaming TypeScript join) against a brute-force reference, on
 * random logs with duplicates, equal timestamps, created times and rows past
 * the ttl; identical replays change no answer.
 */
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as v from "valibot";
import { asOfJoin, createProcessor, entity, featureRepo, type FeatureRow, type FeatureView, getHistoricalFeatures, pushSource, type Row, streamFeatureView } from "../mod.ts";
import { fileOffline } from "../plugins/stores/file/index.ts";
import { memoryDeadLetters, memoryOffline, memoryStore } from "../plugins/stores/memory.ts";
import { materializeFromOffline } from "../mod.ts";

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
const tempDir = async () => {
  const d = await mkdtemp(join(tmpdir(), "freshet-hist-"));
  dirs.push(d);
  return d;
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const HOUR = 3_600_000;
const driver = entity({ name: "driver", joinKeys: ["driver_id"] });
const src = pushSource({ name: "hist_push", timestampField: "event_timestamp" });
const schema = v.object({ driver_id: v.number(), conv_rate: v.nullable(v.number()), trips: v.number(), label: v.nullable(v.string()), event_timestamp: v.string() });
const repo = featureRepo({
  project: "hist",
  definitions: [
    streamFeatureView({ name: "hist_stats", entities: [driver], source: src, schema, ttl: "1h" }),
    streamFeatureView({ name: "hist_forever", entities: [driver], source: src, schema, ttl: 0, features: ["trips"] }),
  ],
});
const stats = repo.view("hist_stats");
const forever = repo.view("hist_forever");

/** A small deterministic PRNG, so that a failure can be reproduced from its seed. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed * 1664525 + 1013904223) >>> 0;
    return seed / 2 ** 32;
  };
}

/** The brute-force reference: scan every logged row, in the order appended. */
function reference(view: FeatureView, features: string[], log: FeatureRow[], entityRows: Row[]): Row[] {
  return entityRows.map((e) => {
    const t = Date.parse(e.event_timestamp as string);
    let best: FeatureRow | undefined;
    for (const r of log) {
      if (r.entityKey !== `driver_id=${e.driver_id}` || r.eventTime > t) continue;
      const rc = r.createdTime ?? -Infinity;
      const bc = best?.createdTime ?? -Infinity;
      if (!best || r.eventTime > best.eventTime || (r.eventTime === best.eventTime && rc > bc)) best = r;
    }
    const ok = best && !(view.ttlMs > 0 && t - best.eventTime > view.ttlMs);
    const out: Row = { ...e };
    for (const f of features) out[f] = ok ? best!.values[f] ?? null : null;
    return out;
  });
}

/** Random batches of feature rows over a day boundary: a coarse time grid (equal timestamps), created times or none, same-version rows with other values. */
function randomBatches(rand: () => number, t0: number, keys: number): FeatureRow[][] {
  const batches: FeatureRow[][] = [];
  const all: FeatureRow[] = [];
  for (let b = 0; b < 40; b++) {
    const batch: FeatureRow[] = [];
    const n = 1 + Math.floor(rand() * 60);
    for (let i = 0; i < n; i++) {
      const pick = rand();
      let r: FeatureRow;
      if (pick < 0.1 && all.length) {
        // Same entity, event and created time as an earlier row, other values: the first appended wins.
        const o = all[Math.floor(rand() * all.length)];
        r = { ...o, values: { conv_rate: Math.round(rand() * 100) / 100, trips: Math.floor(rand() * 1000), label: "other" } };
      } else {
        const eventTime = t0 + Math.floor(rand() * 60) * 5 * 60_000; // 5-minute grid over 5 hours
        const created = rand();
        r = {
          entityKey: `driver_id=${1 + Math.floor(rand() * keys)}`,
          values: { conv_rate: rand() < 0.1 ? null : Math.round(rand() * 100) / 100, trips: Math.floor(rand() * 1000), label: rand() < 0.3 ? null : `l${Math.floor(rand() * 9)}` },
          eventTime,
          ...(created < 0.4 ? {} : { createdTime: eventTime + Math.floor(created * 4) * 1000 }),
        };
      }
      batch.push(r);
      all.push(r);
    }
    batches.push(batch);
  }
  return batches;
}

function randomEntities(rand: () => number, t0: number, keys: number, log: FeatureRow[], n: number): Row[] {
  const out: Row[] = [];
  for (let i = 0; i < n; i++) {
    const pick = rand();
    let id = 1 + Math.floor(rand() * (keys + 3)); // a few keys with no rows at all
    let t = t0 - HOUR + Math.floor(rand() * 8 * HOUR);
    if (pick < 0.4) {
      // On the boundaries: at a row's event time, at event time + ttl (still inside), one ms past it.
      const r = log[Math.floor(rand() * log.length)];
      id = Number(r.entityKey.slice("driver_id=".length));
      t = r.eventTime + [0, 0, HOUR, HOUR + 1, -1][Math.floor(rand() * 5)];
    }
    out.push({ driver_id: id, event_timestamp: new Date(t).toISOString(), label_y: i % 2 });
  }
  return out;
}

const refs = ["hist_stats:conv_rate", "hist_stats:trips", "hist_stats:label"];

describe("getHistoricalFeatures: exact against a brute-force reference", () => {
  for (const seed of [1, 7, 2026]) {
    it(`seed ${seed}: DuckDB and the streaming join both give the reference's answer, also after identical replays`, async () => {
      const rand = prng(seed);
      const t0 = Date.UTC(2026, 0, 1, 21); // 21:00 to 02:00: two date partitions
      const batches = randomBatches(rand, t0, 25);
      const dir = await tempDir();
      const writers = [fileOffline({ dir, writerId: "wa", compactAfter: 5 }), fileOffline({ dir, writerId: "wb", compactAfter: 7 })];
      const log: FeatureRow[] = [];
      const mem = memoryOffline();
      for (const [i, batch] of batches.entries()) {
        // Two writers into one directory, taking turns, a ms apart so that the append order is the log's.
        await writers[i % 2].append(stats, batch);
        await writers[i % 2].append(forever, batch);
        await mem.append(stats, batch);
        log.push(...batch);
        await sleep(2);
      }
      const entityRows = randomEntities(rand, t0, 25, log, 400);
      const want = reference(stats, ["conv_rate", "trips", "label"], log, entityRows);
      assert.ok(want.some((r) => r.trips === null) && want.some((r) => r.trips !== null), "some rows have values, some not");
      const wantForever = reference(forever, ["trips"], log, entityRows);

      const ask = async (engine: "auto" | "stream", offline = writers[0]) =>
        await getHistoricalFeatures({ registry: repo, offline, entityRows, features: refs, engine });
      const check = async () => {
        const duck = await ask("auto");
        assert.deepEqual(duck.engines, { hist_stats: "duckdb" });
        assert.deepEqual(duck.rows, want, "DuckDB engine");
        const stream = await ask("stream");
        assert.deepEqual(stream.engines, { hist_stats: "stream" });
        assert.deepEqual(stream.rows, want, "streaming join over the Parquet log");
        assert.deepEqual((await ask("auto", mem as never)).rows, want, "streaming join over the memory log");
        const both = await getHistoricalFeatures({ registry: repo, offline: writers[1], entityRows, features: ["hist_stats:trips", "hist_forever:trips"], fullFeatureNames: true });
        assert.deepEqual(both.columns, ["hist_stats__trips", "hist_forever__trips"]);
        assert.deepEqual(both.rows.map((r) => r.hist_forever__trips), wantForever.map((r) => r.trips), "ttl 0 keeps values forever");
        assert.deepEqual(both.rows.map((r) => r.hist_stats__trips), want.map((r) => r.trips));
        // Join keys as a CSV gives them (strings), and one that is no integer at all (DuckDB then joins on the serialized key).
        const asText = entityRows.map((e) => ({ ...e, driver_id: String(e.driver_id) }));
        const textWant = want.map((w) => ({ ...w, driver_id: String(w.driver_id) }));
        for (const engine of ["auto", "stream"] as const) {
          const t1 = await getHistoricalFeatures({ registry: repo, offline: writers[0], entityRows: asText, features: refs, engine });
          assert.deepEqual(t1.rows, textWant, `string join keys, ${engine}`);
          const t2 = await getHistoricalFeatures({ registry: repo, offline: writers[0], entityRows: [...asText, { driver_id: "x", event_timestamp: "2026-01-02T00:00:00Z" }], features: refs, engine });
          assert.deepEqual(t2.rows, [...textWant, { driver_id: "x", event_timestamp: "2026-01-02T00:00:00Z", conv_rate: null, trips: null, label: null }], `a non-integer key, ${engine}`);
        }
        const f2 = await getHistoricalFeatures({ registry: repo, offline: writers[1], entityRows, features: ["hist_forever:trips"], engine: "stream" });
        assert.deepEqual(f2.rows.map((r) => r.trips), wantForever.map((r) => r.trips));
      };
      await check();

      // At-least-once: some batches delivered again, identically, by either writer, after everything else.
      for (const [i, batch] of batches.entries()) {
        if (rand() < 0.3) {
          await writers[(i + 1) % 2].append(stats, batch);
          await writers[(i + 1) % 2].append(forever, batch);
          await mem.append(stats, batch);
        }
      }
      await check();
      for (const w of writers) await w.close();
    });
  }
});

describe("asOfJoin", () => {
  it("takes feature rows in any order and chunking", async () => {
    const rand = prng(5);
    const t0 = Date.UTC(2026, 0, 1);
    const log = randomBatches(rand, t0, 10).flat();
    const entityRows = randomEntities(rand, t0, 10, log, 200);
    const entities = entityRows.map((e) => ({ entityKey: `driver_id=${e.driver_id}`, time: Date.parse(e.event_timestamp as string) }));
    const want = reference(stats, ["trips"], log, entityRows).map((r) => r.trips);
    const seqd = log.map((r, i) => ({ ...r, logSeq: String(i).padStart(8, "0") }));
    const shuffled = [...seqd].sort(() => rand() - 0.5);
    const chunks = (rows: FeatureRow[], n: number) => Array.from({ length: Math.ceil(rows.length / n) }, (_, i) => rows.slice(i * n, i * n + n));
    for (const input of [chunks(seqd, 1000), chunks(shuffled, 7), chunks(shuffled, 1)]) {
      const got = await asOfJoin(stats, ["trips"], entities, input);
      assert.deepEqual(got.map((m) => (m ? m.values.trips : null)), want);
    }
  });
});

describe("getHistoricalFeatures: bad input gets a clear answer", () => {
  const offline = memoryOffline();
  const ask = (entityRows: Row[], features = ["hist_stats:trips"]) => getHistoricalFeatures({ registry: repo, offline, entityRows, features });
  it("names the entity row and field", async () => {
    await assert.rejects(ask([{ driver_id: 1 }]), /entity row 0: "event_timestamp" is missing/);
    await assert.rejects(ask([{ driver_id: 1, event_timestamp: "2026-01-01T00:00:00Z" }, { driver_id: 1, event_timestamp: "yesterday" }]), /entity row 1: "event_timestamp" "yesterday" is not a time/);
    await assert.rejects(ask([{ event_timestamp: "2026-01-01T00:00:00Z" }]), /entity row 0: join key "driver_id" of view "hist_stats" is missing/);
  });
  it("names the feature ref", async () => {
    await assert.rejects(ask([], ["nope:trips"]), /feature ref "nope:trips": no view named "nope"/);
    await assert.rejects(ask([], ["hist_stats:nope"]), /view "hist_stats" has no feature "nope"; it has conv_rate, trips, label/);
    await assert.rejects(ask([], ["trips"]), /is not "view:feature"/);
    await assert.rejects(ask([], ["hist_stats:trips", "hist_forever:trips"]), /full feature names/);
  });
  it("answers an empty entity list with no rows", async () => {
    assert.deepEqual((await ask([])).rows, []);
  });
});

describe("materializeFromOffline", () => {
  it("rebuilds the latest logged row per entity, replays and chunking changing nothing", async () => {
    const rand = prng(11);
    const t0 = Date.UTC(2026, 0, 1, 21);
    const batches = randomBatches(rand, t0, 25);
    const dir = await tempDir();
    const log = fileOffline({ dir, writerId: "m", compactAfter: 4, chunkSize: 100_000 });
    const all: FeatureRow[] = [];
    for (const b of batches) {
      await log.append(forever, b);
      all.push(...b);
    }
    for (const b of batches.slice(0, 10)) await log.append(forever, b); // redelivered
    await log.close();
    const keys = [...new Set(all.map((r) => Number(r.entityKey.slice("driver_id=".length))))].sort((a, b) => a - b);
    const want = reference(forever, ["trips"], all, keys.map((id) => ({ driver_id: id, event_timestamp: "2100-01-01T00:00:00Z" }))).map((r) => r.trips);
    for (const chunkSize of [100_000, 13]) {
      const online = memoryStore();
      const offline = fileOffline({ dir, chunkSize });
      const processor = createProcessor({ registry: repo, online, offline, deadLetters: memoryDeadLetters() });
      const p = await materializeFromOffline(processor, forever, {});
      assert.equal(p.read, all.length + batches.slice(0, 10).flat().length);
      assert.equal(p.written + p.stale + p.expired, p.inRange);
      const got = await online.read(forever, keys.map((k) => `driver_id=${k}`), ["trips"]);
      const values = got.map((g) => g.trips.value);
      if (chunkSize === 100_000) assert.deepEqual(values, want, "one chunk: exactly the point-in-time answer at the end of time");
      else {
        // Across chunks, among rows of equal (event time, created time) the first written wins: compare versions.
        const ev = got.map((g) => g.trips.eventTime);
        const wantEv = keys.map((k) => Math.max(...all.filter((r) => r.entityKey === `driver_id=${k}`).map((r) => r.eventTime)));
        assert.deepEqual(ev, wantEv);
      }
      const ranged = await materializeFromOffline(createProcessor({ registry: repo, online: memoryStore(), offline, deadLetters: memoryDeadLetters() }), forever, { start: t0 + 3_600_000, end: t0 + 7_200_000 });
      assert.equal(ranged.inRange, [...all, ...batches.slice(0, 10).flat()].filter((r) => r.eventTime >= t0 + 3_600_000 && r.eventTime < t0 + 7_200_000).length);
    }
  });
});
