/**
 * sqliteDeadLetters: dead letters in the table freshet_dead_letters of a
 * SQLite store's file (the sink the Worker uses on D1; here on the local
 * driver of each runtime): all letters of a write in one transaction, a
 * bound on rows with what it removed logged, long payloads cut with their
 * length kept, and the store's refusals.
 */
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DeadLetter } from "../../mod.ts";
import { openSqliteDriver } from "../../plugins/stores/sqlite/driver.ts";
import { sqliteDeadLetters, sqliteStore } from "../../plugins/stores/sqlite/index.ts";

const dirs: string[] = [];
const dbFile = async () => {
  const d = await mkdtemp(join(tmpdir(), "freshet-sqlite-dl-"));
  dirs.push(d);
  return join(d, "freshet.db");
};
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

const letter = (i: number, payload = `{"n":${i}}`): DeadLetter => ({
  source: "events",
  view: "v",
  reason: "schema",
  message: `row ${i} is bad`,
  path: "n",
  position: { kind: "kafka", topic: "t", partition: 0, offset: String(i) },
  payload,
  at: new Date(1_700_000_000_000 + i).toISOString(),
});

describe("sqliteDeadLetters", () => {
  it("writes letters to freshet_dead_letters in order, readable by a new connection", async () => {
    const path = await dbFile();
    const store = sqliteStore({ path });
    const sink = sqliteDeadLetters(store);
    await sink.write([letter(1), letter(2)]);
    await sink.write([]);
    await sink.write([letter(3)]);
    await store.close();
    const db = await openSqliteDriver(path);
    const rows = await db.all("SELECT source, view, reason, message, path, position, payload, at, payload_chars FROM freshet_dead_letters ORDER BY id");
    await db.close();
    assert.deepEqual(rows.map((r) => r.message), ["row 1 is bad", "row 2 is bad", "row 3 is bad"]);
    assert.deepEqual({ ...rows[0] }, { source: "events", view: "v", reason: "schema", message: "row 1 is bad", path: "n", position: JSON.stringify(letter(1).position), payload: '{"n":1}', at: letter(1).at, payload_chars: null });
  });

  it("keeps the newest maxRows letters and logs what it deleted; cuts a long payload and keeps its length", async () => {
    const store = sqliteStore({ path: await dbFile() });
    const warned: string[] = [];
    const logger = { info() {}, error() {}, warn: (m: string) => void warned.push(m) };
    const sink = sqliteDeadLetters(store, { maxRows: 5, maxPayloadChars: 10, logger });
    await sink.write([1, 2, 3, 4].map((i) => letter(i)));
    assert.equal(warned.length, 0);
    await sink.write([5, 6, 7].map((i) => letter(i, "x".repeat(25))));
    const db = await store.ready();
    const rows = await db.all("SELECT message, payload, payload_chars FROM freshet_dead_letters ORDER BY id");
    assert.deepEqual(rows.map((r) => r.message), [3, 4, 5, 6, 7].map((i) => `row ${i} is bad`));
    assert.equal(rows[4].payload, "x".repeat(10));
    assert.equal(Number(rows[4].payload_chars), 25);
    assert.equal(warned.length, 1);
    assert.match(warned[0], /2 oldest deleted to keep the newest 5 \(maxRows\)/);
    await store.close();
  });

  it("writes many letters, larger together than one parameter, in one transaction", async () => {
    const store = sqliteStore({ path: await dbFile() });
    const db = await store.ready();
    // A driver that says it takes small parameters: the letters go in several statements of one batch.
    const small = { ...db, name: db.name, target: db.target, maxParamBytes: 4096, batch: db.batch.bind(db), all: db.all.bind(db), exec: db.exec.bind(db), run: db.run.bind(db), close: db.close.bind(db) };
    const sink = sqliteDeadLetters(small);
    let batches = 0;
    const batch = small.batch;
    small.batch = (s) => (batches++, batch(s));
    await sink.write(Array.from({ length: 200 }, (_, i) => letter(i, "y".repeat(100))));
    assert.equal(batches, 1);
    assert.equal(Number((await db.all("SELECT count(*) AS n FROM freshet_dead_letters"))[0].n), 200);
    await store.close();
  });

  it("refuses a database of another application, as the store does", async () => {
    const path = await dbFile();
    const raw = await openSqliteDriver(path);
    await raw.exec("CREATE TABLE invoices (id INTEGER PRIMARY KEY)");
    const sink = sqliteDeadLetters(raw);
    await assert.rejects(sink.write([letter(1)]), /holds another application's tables \(invoices\)/);
    assert.equal((await raw.all("SELECT name FROM sqlite_master WHERE name = 'freshet_dead_letters'")).length, 0, "nothing created in it");
    await raw.close();
  });
});
