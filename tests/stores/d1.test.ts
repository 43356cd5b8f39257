// @runtimes node
/**
 * The SQLite store over a Cloudflare D1 binding, from miniflare's D1 (workerd's
 * SQLite), used from Node: the conformance suite, one fresh database per
 * test, then what differs on D1 (D1's own tables, its bound-value limit).
 */
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { Miniflare } from "miniflare";
import { type FeatureRow, FreshetError } from "../../mod.ts";
import { type D1DatabaseLike, d1Driver, sqliteStore } from "../../plugins/stores/sqlite/index.ts";
import { conformanceRepo, testOnlineStore } from "../../testing/online-store.ts";
import { testAggregatingStore } from "../../testing/aggregating-store.ts";

const BINDINGS = Array.from({ length: 32 }, (_, i) => `DB${i}`);
const mf = new Miniflare({ modules: true, script: "export default { fetch() { return new Response('') } }", d1Databases: BINDINGS });
after(() => mf.dispose());

let next = 0;
/** A D1 database no other test has used. */
const freshDb = async (): Promise<{ db: D1DatabaseLike; name: string }> => {
  const name = BINDINGS[next++];
  assert.ok(name, "more D1 bindings needed");
  return { db: (await mf.getD1Database(name)) as unknown as D1DatabaseLike, name };
};

testOnlineStore("sqlite on D1 (miniflare)", async () => {
  const { db, name } = await freshDb();
  let offset = 0;
  const now = () => Date.now() + offset;
  return {
    store: sqliteStore({ driver: d1Driver(db, { name: `D1 binding ${name}` }), now }),
    advance: async (ms) => void (offset += ms),
    reopen: async () => sqliteStore({ driver: d1Driver(db, { name: `D1 binding ${name}` }), now }),
  };
});

testAggregatingStore("sqlite on D1 (miniflare)", async (now) => {
  const { db, name } = await freshDb();
  return {
    store: sqliteStore({ driver: d1Driver(db, { name: `D1 binding ${name}` }), now }),
    reopen: async () => sqliteStore({ driver: d1Driver(db, { name: `D1 binding ${name}` }), now }),
  };
});

const view = conformanceRepo.view("conf_stats");
const row = (id: number, eventTime: number, values: Record<string, unknown>): FeatureRow => ({
  entityKey: `driver_id=${id}`,
  values: { conv_rate: 0.5, trips: 1, label: null, ...values },
  eventTime,
});

describe("sqliteStore on D1", () => {
  it("writes a batch larger than one D1 value in one atomic D1 batch, and a new store on the binding reads it", async () => {
    const { db } = await freshDb();
    const store = sqliteStore({ driver: d1Driver(db) });
    const t = Date.now();
    const pad = "x".repeat(1000);
    // About 3 MB of rows: more than D1 takes in one bound value.
    const rows = Array.from({ length: 3000 }, (_, i) => row(i, t, { trips: i, label: pad }));
    assert.deepEqual(await store.write(view, rows, { watermarks: { w: t } }), { written: 3000, stale: 0, expired: 0 });
    const again = sqliteStore({ driver: d1Driver(db) });
    const got = await again.read(view, rows.map((r) => r.entityKey), ["trips"]);
    assert.deepEqual(got.map((g) => g.trips.value), rows.map((_, i) => i));
    assert.equal(await again.meta.getWatermark("w"), t);
    await again.ping!();
  });

  it("opens beside D1's own tables, and refuses a database of another application", async () => {
    const { db, name } = await freshDb();
    await db.prepare("CREATE TABLE orders (id INTEGER PRIMARY KEY)").run();
    const store = sqliteStore({ driver: d1Driver(db, { name: `D1 binding ${name}` }) });
    await assert.rejects(store.ready(), (e) => {
      assert.ok(e instanceof FreshetError);
      assert.equal(e.code, "INVALID_CONFIG");
      assert.equal(e.retriable, false);
      assert.match(e.message, new RegExp(`D1 binding ${name} holds another application's tables \\(orders\\)`));
      return true;
    });
  });
});
