// Group commit on the SQLite store: the writes that reach the store in one
// turn of the event loop (concurrent pushes) share one transaction, and each
// keeps its own counts, its own idempotency key and its own failure.
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type FeatureRow, FreshetError } from "../../mod.ts";
import { openSqliteDriver, type SqlDriver } from "../../plugins/stores/sqlite/driver.ts";
import { sqliteStore } from "../../plugins/stores/sqlite/index.ts";
import { conformanceRepo } from "../../testing/online-store.ts";

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
const dbFile = async () => {
  const d = await mkdtemp(join(tmpdir(), "freshet-sqlite-group-"));
  dirs.push(d);
  return join(d, "freshet.db");
};
const view = conformanceRepo.view("conf_stats");
const row = (id: number, eventTime: number, trips: number): FeatureRow => ({ entityKey: `driver_id=${id}`, values: { conv_rate: 0.5, trips, label: null }, eventTime });

/** The store's own local driver, counting its transactions (the store calls `batch` once per transaction). */
async function counted(path: string, busyTimeoutMs?: number): Promise<{ driver: SqlDriver; transactions: () => number }> {
  const raw = await openSqliteDriver(path, { busyTimeoutMs });
  let n = 0;
  return { driver: { ...raw, batch: (statements) => (n++, raw.batch(statements)) }, transactions: () => n };
}

describe("sqlite store group commit", () => {
  it("concurrent writes share one transaction and each gets its own counts, latest-wins in call order", async () => {
    const path = await dbFile();
    const { driver, transactions } = await counted(path);
    const store = sqliteStore({ driver });
    await store.ready();
    const t = Date.now();
    const before = transactions();
    const results = await Promise.all([
      store.write(view, [row(1, t + 1, 1)]), // written
      store.write(view, [row(1, t, 2)]), // older than the first: stale, though it is another request
      store.write(view, [row(1, t + 2, 3), row(2, t, 3)]), // newer: both written
      ...Array.from({ length: 17 }, (_, i) => store.write(view, [row(100 + i, t, i)])),
      store.write(view, [row(3, t, 9)], { done: { key: "push:conf:hook-1", fingerprint: "fp", ttlMs: 60_000 } }),
    ]);
    assert.equal(transactions() - before, 1, "21 concurrent writes, one transaction");
    assert.deepEqual(results.slice(0, 3), [{ written: 1, stale: 0, expired: 0 }, { written: 0, stale: 1, expired: 0 }, { written: 2, stale: 0, expired: 0 }]);
    for (const r of results.slice(3)) assert.deepEqual(r, { written: 1, stale: 0, expired: 0 });
    const read = await store.read(view, ["driver_id=1", "driver_id=2", "driver_id=116", "driver_id=3"], ["trips"]);
    assert.deepEqual(read.map((r) => r.trips.value), [3, 3, 16, 9]);
    const state = await store.meta.begin("push:conf:hook-1", "fp", 30_000);
    assert.equal(state.state, "done", "the idempotency key rode on its own write, inside the group");
    // A write after the group is a transaction of its own.
    const mid = transactions();
    assert.deepEqual(await store.write(view, [row(1, t + 3, 4)]), { written: 1, stale: 0, expired: 0 });
    assert.equal(transactions() - mid, 1);
    await store.close!();
  });

  it("a failed transaction fails every write in it, none of their rows is written, and the next group commits", async () => {
    const path = await dbFile();
    const { driver, transactions } = await counted(path, 200);
    const store = sqliteStore({ driver });
    const t = Date.now();
    await store.write(view, [row(1, t, 1)]);
    const holder = await openSqliteDriver(path);
    await holder.exec("BEGIN IMMEDIATE"); // another process holds the write lock past the busy timeout
    const before = transactions();
    const outcomes = await Promise.allSettled([1, 2, 3].map((i) => store.write(view, [row(i, t + 1, 10 + i)], i === 3 ? { done: { key: "push:conf:hook-2", fingerprint: "fp", ttlMs: 60_000 } } : undefined)));
    assert.equal(transactions() - before, 1);
    for (const o of outcomes) {
      assert.equal(o.status, "rejected");
      const e = (o as PromiseRejectedResult).reason;
      assert.ok(e instanceof FreshetError && e.retriable && e.code === "STORE_UNAVAILABLE", String(e));
    }
    await holder.exec("ROLLBACK");
    await holder.close();
    const read = await store.read(view, ["driver_id=1", "driver_id=2", "driver_id=3"], ["trips"]);
    assert.deepEqual(read.map((r) => r.trips.status), ["PRESENT", "NOT_FOUND", "NOT_FOUND"]);
    assert.equal(read[0].trips.value, 1);
    assert.equal((await store.meta.begin("push:conf:hook-2", "fp", 30_000)).state, "started", "the failed write's idempotency key was not marked done");
    assert.deepEqual(await Promise.all([store.write(view, [row(2, t + 1, 12)]), store.write(view, [row(3, t + 1, 13)])]), [{ written: 1, stale: 0, expired: 0 }, { written: 1, stale: 0, expired: 0 }]);
    await store.close!();
  });
});
