import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DeadLetter, FeatureRow } from "../../mod.ts";
import { fileDeadLetters, fileOffline, fileStore } from "../../plugins/stores/file.ts";
import { conformanceRepo, testOnlineStore } from "../conformance/online-store.ts";

const dirs: string[] = [];
const tempDir = async () => {
  const d = await mkdtemp(join(tmpdir(), "freshet-file-"));
  dirs.push(d);
  return d;
};
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

// `reopen` opens a second fileStore on the same directory. In one process the
// two share one in-memory state and one flush queue (a file has one writer), so
// the suite's concurrent writers race on latest-wins and on group commit, not
// on the file itself. Restarts are tested below with a closed first store.
testOnlineStore("file", async () => {
  const dir = await tempDir();
  let offset = 0;
  const now = () => Date.now() + offset;
  return {
    store: fileStore({ dir, now }),
    advance: async (ms) => void (offset += ms),
    reopen: async () => fileStore({ dir, now }),
  };
});

const view = conformanceRepo.view("conf_stats");
const short = conformanceRepo.view("conf_short");
const row = (id: number, eventTime: number, trips: number, createdTime?: number): FeatureRow => ({
  entityKey: `driver_id=${id}`,
  values: { conv_rate: 0.5, trips, label: null },
  eventTime,
  createdTime,
});
const onlineFile = (dir: string, name = "conf_stats") => join(dir, "online", `${name}.json`);

describe("fileStore on disk", () => {
  it("survives a restart: values, event times, ttl expiry and meta state", async () => {
    const dir = await tempDir();
    const t = Date.now();
    const a = fileStore({ dir });
    await a.write(view, [row(1, t, 7, t + 1), row(2, t - 5000, 3)]);
    await a.write(short, [row(1, t, 9)]);
    assert.equal(await a.meta.setCheckpoint("kafka:trips:0", "42"), true);
    assert.ok(await a.meta.acquireLease("shard-1", "worker-a", 60_000));
    assert.equal(await a.meta.claim("webhook:msg_1", 60_000), true);
    await a.close!();

    let offset = 0;
    const b = fileStore({ dir, now: () => Date.now() + offset });
    const [r1, r2] = await b.read(view, ["driver_id=1", "driver_id=2"], ["trips"]);
    assert.deepEqual(r1.trips, { value: 7, status: "PRESENT", eventTime: t });
    assert.equal(r2.trips.value, 3);
    // Latest-wins keeps working against what was loaded, created time included.
    assert.deepEqual(await b.write(view, [row(1, t, 8, t)]), { written: 0, stale: 1 });
    assert.equal(await b.meta.getCheckpoint("kafka:trips:0"), "42");
    assert.equal(await b.meta.setCheckpoint("kafka:trips:0", "41"), false);
    assert.equal(await b.meta.acquireLease("shard-1", "worker-b", 60_000), undefined);
    assert.equal(await b.meta.claim("webhook:msg_1", 60_000), false);
    // The key's expiry (write time + ttl) was persisted too.
    assert.equal((await b.read(short, ["driver_id=1"], ["trips"]))[0].trips.value, 9);
    offset = 2500;
    assert.equal((await b.read(short, ["driver_id=1"], ["trips"]))[0].trips.status, "NOT_FOUND");
    await b.close!();
  });

  it("resolves a write only once its rows are in the file, even for many concurrent writers", async () => {
    const dir = await tempDir();
    const store = fileStore({ dir });
    const t = Date.now();
    await Promise.all(Array.from({ length: 200 }, async (_, i) => {
      const rows = Array.from({ length: 10 }, (_, k) => row(i * 10 + k, t, i));
      assert.deepEqual(await store.write(view, rows), { written: 10, stale: 0 });
      const onDisk = JSON.parse(await readFile(onlineFile(dir), "utf8"));
      for (const r of rows) assert.equal(onDisk.entities[r.entityKey]?.values.trips, i, `row ${r.entityKey} of write ${i} is on disk`);
    }));
    const onDisk = JSON.parse(await readFile(onlineFile(dir), "utf8"));
    assert.equal(Object.keys(onDisk.entities).length, 2000);
    await store.close!();
  });

  it("never leaves a half-written file, and ignores a temp file left by a crash", async () => {
    const dir = await tempDir();
    const store = fileStore({ dir });
    const t = Date.now();
    let reads = 0;
    let writing = true;
    const reader = (async () => {
      while (writing) {
        const text = await readFile(onlineFile(dir), "utf8").catch((e) => (e.code === "ENOENT" ? undefined : Promise.reject(e)));
        if (text !== undefined) {
          JSON.parse(text); // throws on a partial file
          reads++;
        }
        await new Promise((r) => setTimeout(r, 0));
      }
    })();
    await Promise.all(Array.from({ length: 50 }, async (_, w) => {
      for (let k = 0; k < 20; k++) await store.write(view, Array.from({ length: 50 }, (_, i) => row(w * 1000 + i, t + k, k)));
    }));
    writing = false;
    await reader;
    assert.ok(reads > 0);
    await store.close!();
    assert.deepEqual((await readdir(join(dir, "online"))).filter((n) => n.endsWith(".tmp")), []);

    // A crash between writing the temp file and renaming it leaves the temp file behind.
    const leftover = `${onlineFile(dir)}.crash1.tmp`;
    await writeFile(leftover, '{"format":"freshet-online/1","entities":{\n"driver_id=0":{"values":{"trips":');
    const again = fileStore({ dir });
    const [r] = await again.read(view, ["driver_id=0"], ["trips"]);
    assert.equal(r.trips.value, 19);
    assert.deepEqual((await readdir(join(dir, "online"))).filter((n) => n.endsWith(".tmp")), [], "the leftover is removed");
    await again.close!();
  });

  it("fails a write with a retriable error when the file cannot be written, and a retry then makes it durable", async () => {
    const dir = await tempDir();
    const store = fileStore({ dir });
    const t = Date.now();
    await store.write(view, [row(1, t, 1)]);
    // Make the rename fail: a directory where the file should go.
    await rm(onlineFile(dir));
    await mkdir(join(onlineFile(dir), "blocker"), { recursive: true });
    await assert.rejects(store.write(view, [row(1, t + 1, 2)]), (e: { code?: string; retriable?: boolean }) => e.code === "STORE_UNAVAILABLE" && e.retriable === true);
    await rm(onlineFile(dir), { recursive: true });
    // The retried row is stale in memory, but the write still waits until it is on disk.
    assert.deepEqual(await store.write(view, [row(1, t + 1, 2)]), { written: 0, stale: 1 });
    const onDisk = JSON.parse(await readFile(onlineFile(dir), "utf8"));
    assert.equal(onDisk.entities["driver_id=1"].values.trips, 2);
    await store.close!();
  });
});

describe("fileOffline", () => {
  it("appends JSON Lines per view and reads a time range back in chunks", async () => {
    const dir = await tempDir();
    const log = fileOffline({ dir, chunkSize: 3 });
    const t0 = Date.UTC(2026, 0, 1);
    const rows = Array.from({ length: 10 }, (_, i) => row(100 + i, t0 + i * 60_000, i, i % 2 ? t0 + i * 60_000 + 5 : undefined));
    await Promise.all([log.append(view, rows.slice(0, 4)), log.append(view, rows.slice(4))]);
    await log.append(short, [row(1, t0, 1)]);

    const lines = (await readFile(join(dir, "offline", "conf_stats.jsonl"), "utf8")).trim().split("\n").map((l) => JSON.parse(l));
    assert.equal(lines.length, 10);
    const first = lines.find((l) => l.driver_id === 101);
    assert.deepEqual(first, { driver_id: 101, conv_rate: 0.5, trips: 1, label: null, event_timestamp: "2026-01-01T00:01:00.000Z", created: "2026-01-01T00:01:00.005Z" });
    assert.match(lines.find((l) => l.driver_id === 100).created, /^\d{4}-\d\d-\d\dT/);

    const chunks: FeatureRow[][] = [];
    for await (const c of log.read(view, { start: t0 + 2 * 60_000, end: t0 + 9 * 60_000 })) chunks.push(c);
    const got = chunks.flat().sort((a, b) => a.eventTime - b.eventTime);
    assert.deepEqual(got.map((r) => r.entityKey), [102, 103, 104, 105, 106, 107, 108].map((i) => `driver_id=${i}`));
    assert.ok(chunks.every((c) => c.length <= 3) && chunks.length === 3);
    assert.deepEqual(got[1], { entityKey: "driver_id=103", values: { conv_rate: 0.5, trips: 3, label: null }, eventTime: t0 + 3 * 60_000, createdTime: t0 + 3 * 60_000 + 5 });
    let all = 0;
    for await (const c of log.read(view, {})) all += c.length;
    assert.equal(all, 10);
    await log.close!();
  });

  it("skips a line torn by a crash and starts the next append on a fresh line", async () => {
    const dir = await tempDir();
    await mkdir(join(dir, "offline"), { recursive: true });
    await writeFile(join(dir, "offline", "conf_stats.jsonl"), '{"driver_id":1,"trips":1,"event_timestamp":"2026-01-01T00:00:00Z"}\n{"driver_id":2,"tri');
    const log = fileOffline({ dir });
    await log.append(view, [row(3, Date.UTC(2026, 0, 1), 3)]);
    const got: FeatureRow[] = [];
    for await (const c of log.read(view, {})) got.push(...c);
    assert.deepEqual(got.map((r) => r.entityKey), ["driver_id=1", "driver_id=3"]);
  });
});

describe("fileDeadLetters", () => {
  it("appends each letter as one JSON line, creating the directory", async () => {
    const dir = await tempDir();
    const path = join(dir, "nested", "dlq", "dead-letters.jsonl");
    const sink = fileDeadLetters(path);
    const letter = (i: number): DeadLetter => ({
      source: "trips",
      view: "conf_stats",
      reason: "schema",
      message: `conv_rate: expected number, got "x${i}"`,
      path: "conv_rate",
      position: { kind: "kafka", topic: "trips", partition: 0, offset: String(i) },
      payload: `{"conv_rate":"x${i}"}`,
      encoding: "utf8",
      at: new Date(0).toISOString(),
    });
    await Promise.all([sink.write([letter(1), letter(2)]), sink.write([letter(3)])]);
    await sink.write([]);
    const lines = (await readFile(path, "utf8")).split("\n");
    assert.equal(lines.pop(), "");
    assert.deepEqual(lines.map((l) => JSON.parse(l)).sort((a, b) => +a.position.offset - +b.position.offset), [letter(1), letter(2), letter(3)]);
    await sink.close!();
  });
});
