import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { type FeatureRow, FreshetError } from "../../mod.ts";
import { openSqliteDriver } from "../../plugins/stores/sqlite/driver.ts";
import { sqliteStore } from "../../plugins/stores/sqlite/index.ts";
import { LAYOUT_VERSION } from "../../plugins/stores/sqlite/layout.ts";
import { conformanceRepo, testOnlineStore } from "../../testing/online-store.ts";
import { auto, driverLabel, drivers, runtime } from "../fixtures/sqlite-drivers.ts";

const dirs: string[] = [];
const dbFile = async () => {
  const d = await mkdtemp(join(tmpdir(), "freshet-sqlite-"));
  dirs.push(d);
  return join(d, "data", "freshet.db");
};
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

// `reopen` is a second connection to the same file, so the suite's
// concurrent writers race on SQLite's write lock, as processes would.
for (const localDriver of drivers) {
  testOnlineStore(driverLabel(localDriver), async () => {
    const path = await dbFile();
    let offset = 0;
    const now = () => Date.now() + offset;
    return {
      store: sqliteStore({ path, now, localDriver }),
      advance: async (ms) => void (offset += ms),
      reopen: async () => sqliteStore({ path, now, localDriver }),
    };
  });
}

const view = conformanceRepo.view("conf_stats");
const short = conformanceRepo.view("conf_short");
const row = (id: number, eventTime: number, values: Record<string, unknown>, createdTime?: number): FeatureRow => ({
  entityKey: `driver_id=${id}`,
  values: { conv_rate: 0.5, trips: 1, label: null, ...values },
  eventTime,
  createdTime,
});

const isRefusal = (path: string, remedy: RegExp) => (e: unknown) => {
  assert.ok(e instanceof FreshetError, String(e));
  assert.equal(e.code, "INVALID_CONFIG");
  assert.equal(e.retriable, false);
  assert.ok(e.message.startsWith("[freshet] [sqlite] "), e.message);
  assert.ok(e.message.includes(path), `${e.message} names ${path}`);
  assert.match(e.message, remedy);
  return true;
};

describe(`sqliteStore on ${auto}`, () => {
  it("keeps rows and metadata across a restart", async () => {
    const path = await dbFile();
    const t = Date.now();
    const a = sqliteStore({ path });
    await a.write(view, [row(1, t, { trips: 7 }, t + 1), row(2, t - 5000, { trips: 3 })], { watermarks: { "push:trips": t }, done: { key: "push:p:msg_1", fingerprint: "fp1", ttlMs: 60_000 } });
    await a.write(short, [row(1, t - 500, { trips: 9 })]);
    assert.equal(await a.meta.setCheckpoint("kafka:trips:0", "42"), true);
    assert.equal(await a.meta.advanceWatermark("kinesis:s-1", t - 10), t - 10);
    const lease = await a.meta.acquireLease("shard-1", "worker-a", 60_000);
    assert.ok(lease);
    const pending = await a.meta.begin("push:p:msg_2", "fp2", 60_000);
    assert.equal(pending.state, "started");
    await a.meta.settle("push:p:msg_3", "fp3", 60_000);
    await a.close!();

    let offset = 0;
    const b = sqliteStore({ path, now: () => Date.now() + offset });
    const [r1, r2] = await b.read(view, ["driver_id=1", "driver_id=2"], ["trips"]);
    assert.deepEqual(r1.trips, { value: 7, status: "PRESENT", eventTime: t });
    assert.equal(r2.trips.value, 3);
    // Latest-wins keeps its created time across the restart.
    assert.deepEqual(await b.write(view, [row(1, t, { trips: 8 }, t)]), { written: 0, stale: 1, expired: 0 });
    assert.equal(await b.meta.getCheckpoint("kafka:trips:0"), "42");
    assert.equal(await b.meta.setCheckpoint("kafka:trips:0", "41"), false);
    assert.equal(await b.meta.getWatermark("push:trips"), t);
    assert.equal(await b.meta.getWatermark("kinesis:s-1"), t - 10);
    assert.deepEqual(await b.meta.begin("push:p:msg_1", "fp1", 60_000), { state: "done", fingerprint: "fp1" });
    assert.deepEqual(await b.meta.begin("push:p:msg_2", "fp2", 60_000), { state: "pending", fingerprint: "fp2" });
    await b.meta.abandon("push:p:msg_2", (pending as { token: string }).token);
    assert.equal((await b.meta.begin("push:p:msg_2", "fp2", 60_000)).state, "started");
    assert.deepEqual(await b.meta.begin("push:p:msg_3", "fp3", 60_000), { state: "done", fingerprint: "fp3" });
    assert.equal(await b.meta.acquireLease("shard-1", "worker-b", 60_000), undefined);
    const renewed = await b.meta.acquireLease("shard-1", "worker-a", 60_000);
    assert.equal(renewed?.counter, lease.counter, "the lease and its fencing counter survive");
    // Expiry follows event time on the restarted clock too.
    assert.equal((await b.read(short, ["driver_id=1"], ["trips"]))[0].trips.value, 9);
    offset = 2000;
    assert.equal((await b.read(short, ["driver_id=1"], ["trips"]))[0].trips.status, "NOT_FOUND");
    await b.ping!();
    await b.close!();
  });

  it("round-trips values as JSON; a feature missing from the stored row reads NOT_FOUND", async () => {
    const store = sqliteStore({ path: await dbFile() });
    const t = Date.now();
    const values = {
      f: 0.30000000000000004,
      tiny: 1e-7,
      big: 1.7976931348623157e308,
      neg: -42,
      s: 'é "quoted" \\ \u2028 \u{1F600}',
      yes: true,
      no: false,
      nil: null,
      list: [1, "two", [3], { four: 4 }],
      obj: { a: { b: [null] } },
    };
    await store.write(view, [{ entityKey: "driver_id=1", values, eventTime: t }]);
    const [r] = await store.read(view, ["driver_id=1"], [...Object.keys(values), "absent"]);
    for (const [k, v] of Object.entries(values)) assert.deepEqual(r[k].value, v, k);
    assert.equal(r.nil.status, "NULL_VALUE");
    assert.equal(r.f.status, "PRESENT");
    assert.deepEqual(r.absent, { value: null, status: "NOT_FOUND", eventTime: t });
    // Entity keys are matched exactly, duplicates answered in order.
    const got = await store.read(view, ["driver_id=1", "driver_id=9", "driver_id=1"], ["neg"]);
    assert.deepEqual(got.map((g) => g.neg.value), [-42, null, -42]);
    await store.close!();
  });

  it("purges expired rows and idempotency keys a bounded number per write", async () => {
    const path = await dbFile();
    let offset = 0;
    const store = sqliteStore({ path, now: () => Date.now() + offset, purgeBudget: 3 });
    const t = Date.now();
    await store.write(short, Array.from({ length: 8 }, (_, i) => row(i, t, { trips: i })));
    await store.meta.begin("idem-1", "fp", 500);
    const db = await openSqliteDriver(path);
    const count = async (table: string) => Number((await db.all(`SELECT count(*) AS n FROM ${table}`))[0].n);
    assert.equal(await count("freshet_features"), 8);
    offset = 2500;
    await store.write(view, [row(100, t, {})]);
    assert.equal(await count("freshet_features"), 8 - 3 + 1);
    assert.equal(await count("freshet_idempotency"), 0);
    await store.write(view, [row(101, t, {})]);
    await store.write(view, [row(102, t, {})]);
    assert.equal(await count("freshet_features"), 3, "only the live rows are left");
    await db.close();
    await store.close!();
  });

  it("splits a batch too large for one parameter into statements of one transaction", async () => {
    const path = await dbFile();
    const base = await openSqliteDriver(path);
    // One JSON statement per chunk (the libsql and D1 way), on every driver.
    const store = sqliteStore({ driver: { ...base, maxParamBytes: 4000, cheapStatements: false } });
    const t = Date.now();
    const rows = Array.from({ length: 600 }, (_, i) => row(i % 400, t + Math.floor(i / 400), { trips: i }));
    assert.deepEqual(await store.write(view, rows, { watermarks: { w: t } }), { written: 600, stale: 0, expired: 0 });
    const got = await store.read(view, Array.from({ length: 400 }, (_, i) => `driver_id=${i}`), ["trips"]);
    for (let i = 0; i < 400; i++) assert.equal(got[i].trips.value, i < 200 ? i + 400 : i);
    assert.equal(await store.meta.getWatermark("w"), t);
    await store.close!();
  });

  it("rolls a failed batch back entirely: rows, watermarks and the done key", async () => {
    const path = await dbFile();
    await sqliteStore({ path }).ready().then((db) => db.close());
    const base = await openSqliteDriver(path);
    // A driver whose batch fails at its last statement, after the rows went in.
    const failing = { ...base, batch: (s: Parameters<typeof base.batch>[0]) => base.batch([...s, { sql: "INSERT INTO no_such_table VALUES (1)" }]) };
    const store = sqliteStore({ driver: failing });
    const t = Date.now();
    await assert.rejects(store.write(view, [row(1, t, { trips: 1 })], { watermarks: { w: t }, done: { key: "k", fingerprint: "f", ttlMs: 60_000 } }), (e) => e instanceof FreshetError && e.code === "STORE_UNAVAILABLE");
    const check = sqliteStore({ path });
    assert.equal((await check.read(view, ["driver_id=1"], ["trips"]))[0].trips.status, "NOT_FOUND");
    assert.equal(await check.meta.getWatermark("w"), undefined);
    assert.equal((await check.meta.begin("k", "f", 60_000)).state, "started");
    await check.close!();
    await store.close!();
  });

  describe("refuses to open a file that is not its own, naming it and how to fix it", () => {
    it("a newer layout version", async () => {
      const path = await dbFile();
      const a = sqliteStore({ path });
      await a.ready();
      await a.close!();
      const raw = await openSqliteDriver(path);
      await raw.run("UPDATE freshet_meta SET value = ?1 WHERE key = 'layout_version'", [String(LAYOUT_VERSION + 1)]);
      await raw.close();
      const b = sqliteStore({ path });
      await assert.rejects(b.ready(), isRefusal(path, /layout version 2, newer than this Freshet reads \(1\): upgrade Freshet/));
      await assert.rejects(b.write(view, [row(1, Date.now(), {})]), isRefusal(path, /newer/));
      await assert.rejects(b.ping!(), isRefusal(path, /newer/));
      await b.close!();
    });

    it("a database of another application", async () => {
      const path = await dbFile();
      const raw = await openSqliteDriver(path);
      await raw.exec("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)");
      await raw.close();
      const s = sqliteStore({ path });
      await assert.rejects(s.ready(), isRefusal(path, /another application's tables \(users\).*not a Freshet store; point the store at a file of its own/));
      await s.close!();
      const check = await openSqliteDriver(path);
      assert.deepEqual((await check.all("SELECT name FROM sqlite_master WHERE type = 'table'")).map((r) => r.name), ["users"], "nothing was created in it");
      await check.close();
    });

    it("a file that is not SQLite", async () => {
      const path = await dbFile();
      await openSqliteDriver(path).then((d) => d.close()); // creates the directory
      await rm(path, { force: true });
      await writeFile(path, "this is a text file, not a database\n".repeat(200));
      const s = sqliteStore({ path });
      await assert.rejects(s.ready(), isRefusal(path, /not a readable SQLite database.*point the store at a new file, or move this one away/));
      await s.close!();
    });
  });

  it("fails with a clear retriable error when another process holds the lock past the busy timeout", async () => {
    const path = await dbFile();
    const store = sqliteStore({ path, busyTimeoutMs: 300 });
    const t = Date.now();
    await store.write(view, [row(1, t, { trips: 1 })]);
    const holder = await openSqliteDriver(path);
    await holder.exec("BEGIN IMMEDIATE");
    const started = Date.now();
    await assert.rejects(store.write(view, [row(1, t + 1, { trips: 2 })]), (e) => {
      assert.ok(e instanceof FreshetError, String(e));
      assert.equal(e.code, "STORE_UNAVAILABLE");
      assert.equal(e.retriable, true);
      assert.ok(e.message.includes(path), e.message);
      assert.match(e.message, /is locked by another process: waited \d+ ms \(busy timeout 300 ms\)/);
      return true;
    });
    assert.ok(Date.now() - started >= 250, "it waited for the busy timeout");
    await assert.rejects(store.meta.setCheckpoint("cp", "1"), (e) => e instanceof FreshetError && e.retriable);
    // Reads are not blocked by a writer (WAL).
    assert.equal((await store.read(view, ["driver_id=1"], ["trips"]))[0].trips.value, 1);
    await holder.exec("ROLLBACK");
    assert.deepEqual(await store.write(view, [row(1, t + 1, { trips: 2 })]), { written: 1, stale: 0, expired: 0 });
    await holder.close();
    await store.close!();
  });

  it("uses WAL, the busy timeout and synchronous = FULL", async () => {
    const store = sqliteStore({ path: await dbFile(), busyTimeoutMs: 1234 });
    const db = await store.ready();
    assert.equal(String((await db.all("PRAGMA journal_mode"))[0].journal_mode).toLowerCase(), "wal");
    assert.equal(Number((await db.all("PRAGMA synchronous"))[0].synchronous), 2);
    assert.equal(Number(Object.values((await db.all("PRAGMA busy_timeout"))[0])[0]), 1234);
    await store.close!();
    await assert.rejects(store.read(view, ["driver_id=1"], ["trips"]), /closed/);
  });

  it("four writer processes on one file with shuffled, duplicated rows end latest-wins (scenario 5)", { timeout: 60_000 }, async () => {
    const path = await dbFile();
    const t = Date.now() - 120_000;
    const events: FeatureRow[] = [];
    for (let id = 0; id < 50; id++) {
      for (let k = 0; k < 20; k++) events.push(row(id, t + k * 1000, { trips: k }));
      // Equal event times: the created time decides, a missing one loses.
      events.push(row(id, t + 19_000, { trips: 100 }, 5), row(id, t + 19_000, { trips: 99 }, 4), row(id, t + 19_000, { trips: 98 }));
    }
    const all = [...events, ...events];
    for (let i = all.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [all[i], all[j]] = [all[j], all[i]];
    }
    const init = sqliteStore({ path });
    await init.ready();
    const script = fileURLToPath(new URL("./sqlite-writer.ts", import.meta.url));
    const argv = runtime === "node" ? ["--import", "tsx", script] : runtime === "bun" ? [script] : ["run", "-A", script];
    const per = Math.ceil(all.length / 4);
    const outs = await Promise.all([0, 1, 2, 3].map(async (n) => {
      const rows = join(path, `../rows-${n}.json`);
      await writeFile(rows, JSON.stringify(all.slice(n * per, (n + 1) * per)));
      const proc = spawn(process.execPath, argv, { env: { ...process.env, DB: path, ROWS: rows, BATCH: "25" }, stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      proc.stdout!.on("data", (d) => (out += d));
      proc.stderr!.on("data", (d) => (out += d));
      const code = await new Promise<number | null>((res) => proc.once("exit", res));
      assert.equal(code, 0, out);
      return JSON.parse(/DONE (.*)/.exec(out)![1]) as { written: number; stale: number; expired: number };
    }));
    const sum = outs.reduce((a, b) => ({ written: a.written + b.written, stale: a.stale + b.stale, expired: a.expired + b.expired }));
    assert.equal(sum.written + sum.stale, all.length);
    assert.equal(sum.expired, 0);
    assert.ok(sum.written >= 50 && sum.written <= events.length, `written ${sum.written}`);
    const got = await init.read(view, Array.from({ length: 50 }, (_, id) => `driver_id=${id}`), ["trips"]);
    for (const r of got) assert.deepEqual(r.trips, { value: 100, status: "PRESENT", eventTime: t + 19_000 });
    const replay = await init.write(view, events);
    assert.deepEqual(replay, { written: 0, stale: events.length, expired: 0 });
    await init.close!();
  });
});

