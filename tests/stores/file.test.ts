import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { appendFile, copyFile, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, truncate, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { pathToFileURL } from "node:url";
import { type DeadLetter, type FeatureRow, FreshetError, type OnlineStore } from "../../mod.ts";
import { fileDeadLetters, fileOffline, fileStore } from "../../plugins/stores/file/index.ts";
import { LOG_FILE, loadState, SNAPSHOT_FILE } from "../../plugins/stores/file/replay.ts";
import { conformanceRepo, testOnlineStore } from "../../testing/online-store.ts";

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
// two share one engine and one log (a directory has one writer), so the
// suite's concurrent writers race on latest-wins and on group commit, not on
// the file. Restarts are tested below with the first store closed.
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
const trips = async (store: OnlineStore, ids: number[]) =>
  (await store.read(view, ids.map((i) => `driver_id=${i}`), ["trips"])).map((r) => r.trips.value);

/** A child process of the runtime running this test, evaluating `code` (JS) with FRESHET_STORE set to the store's URL. */
function child(code: string, env: Record<string, string>, shell?: string): { done: Promise<{ code: number | null; out: string }>; kill(): void; line(re: RegExp): Promise<string> } {
  const g = globalThis as { Bun?: unknown; Deno?: unknown };
  const args = g.Deno ? ["eval", code] : g.Bun ? ["-e", code] : ["--import", "tsx", "--input-type=module", "-e", code];
  const cmd = shell ? "/bin/sh" : process.execPath;
  const argv = shell ? ["-c", `${shell}; exec "$0" "$@"`, process.execPath, ...args] : args;
  const root = new URL("../../", import.meta.url).pathname;
  const proc = spawn(cmd, argv, { cwd: root, env: { ...process.env, ...env, FRESHET_STORE: pathToFileURL(join(root, "plugins/stores/file/index.ts")).href }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  const waiters: (() => void)[] = [];
  const onData = (d: Uint8Array) => {
    out += new TextDecoder().decode(d);
    for (const w of waiters.splice(0)) w();
  };
  proc.stdout!.on("data", onData);
  proc.stderr!.on("data", onData);
  const done = new Promise<{ code: number | null; out: string }>((res) => proc.once("exit", (c) => res({ code: c, out })));
  return {
    done,
    kill: () => proc.kill("SIGKILL"),
    line: (re) =>
      new Promise((res, rej) => {
        const timer = setTimeout(() => rej(new Error(`child did not print ${re} in 30 s:\n${out}`)), 30_000);
        const check = () => {
          const m = re.exec(out);
          if (m) {
            clearTimeout(timer);
            res(m[0]);
          } else if (proc.exitCode !== null) {
            clearTimeout(timer);
            rej(new Error(`child exited ${proc.exitCode} before printing ${re}:\n${out}`));
          } else waiters.push(check);
        };
        check();
        done.then(check);
      }),
  };
}

// The views as the child needs them: the engine reads only name and ttlMs.
const CHILD_PRELUDE = `
import process from "node:process";
const { fileStore } = await import(process.env.FRESHET_STORE);
const view = { name: "conf_stats", ttlMs: 3600000 };
const row = (id, eventTime, trips) => ({ entityKey: "driver_id=" + id, values: { conv_rate: 0.5, trips, label: null }, eventTime });
const say = (s) => process.stdout.write(s + "\\n");
`;

const isRefusal = (path: string, remedy: RegExp) => (e: unknown) => {
  assert.ok(e instanceof FreshetError, String(e));
  assert.equal(e.code, "INVALID_CONFIG");
  assert.equal(e.retriable, false);
  assert.ok(e.message.includes(path), `${e.message} names ${path}`);
  assert.match(e.message, remedy);
  return true;
};
const RESTORE = /Restore .* from a backup, or move .* (out of|out of the way)/;

describe("fileStore on disk", () => {
  it("recovers everything after a restart: rows, expiry by event time, checkpoints, watermarks, idempotency keys, leases", async () => {
    const dir = await tempDir();
    const t = Date.now();
    const a = fileStore({ dir });
    await a.write(view, [row(1, t, 7, t + 1), row(2, t - 5000, 3)], { watermarks: { "push:trips": t }, done: { key: "push:p:msg_1", fingerprint: "fp1", ttlMs: 60_000 } });
    await a.write(short, [row(1, t - 500, 9)]);
    assert.equal(await a.meta.setCheckpoint("kafka:trips:0", "42"), true);
    assert.equal(await a.meta.advanceWatermark("kinesis:s-1", t - 10), t - 10);
    const lease = await a.meta.acquireLease("shard-1", "worker-a", 60_000);
    assert.ok(lease);
    const pending = await a.meta.begin("push:p:msg_2", "fp2", 60_000);
    assert.equal(pending.state, "started");
    await a.meta.begin("push:p:msg_3", "fp3", 60_000);
    await a.meta.settle("push:p:msg_3", "fp3", 60_000);
    await a.close!();

    let offset = 0;
    const b = fileStore({ dir, now: () => Date.now() + offset });
    const [r1, r2] = await b.read(view, ["driver_id=1", "driver_id=2"], ["trips"]);
    assert.deepEqual(r1.trips, { value: 7, status: "PRESENT", eventTime: t });
    assert.equal(r2.trips.value, 3);
    // Latest-wins keeps working against what was loaded, created time included.
    assert.deepEqual(await b.write(view, [row(1, t, 8, t)]), { written: 0, stale: 1, expired: 0 });
    assert.equal(await b.meta.getCheckpoint("kafka:trips:0"), "42");
    assert.equal(await b.meta.setCheckpoint("kafka:trips:0", "41"), false);
    assert.equal(await b.meta.getWatermark("push:trips"), t);
    assert.equal(await b.meta.getWatermark("kinesis:s-1"), t - 10);
    assert.deepEqual(await b.meta.begin("push:p:msg_1", "fp1", 60_000), { state: "done", fingerprint: "fp1" });
    assert.deepEqual(await b.meta.begin("push:p:msg_2", "fp2", 60_000), { state: "pending", fingerprint: "fp2" });
    await b.meta.abandon("push:p:msg_2", (pending as { token: string }).token);
    assert.deepEqual(await b.meta.begin("push:p:msg_3", "fp3", 60_000), { state: "done", fingerprint: "fp3" });
    assert.equal(await b.meta.acquireLease("shard-1", "worker-b", 60_000), undefined);
    assert.deepEqual(await b.meta.listLeases("shard-"), [lease]);
    // The key expires at event time + ttl (2 s): the event was 0.5 s old.
    assert.equal((await b.read(short, ["driver_id=1"], ["trips"]))[0].trips.value, 9);
    offset = 1600;
    assert.equal((await b.read(short, ["driver_id=1"], ["trips"]))[0].trips.status, "NOT_FOUND");
    await b.close!();

    // The abandoned key is free after the next restart too.
    const c = fileStore({ dir });
    assert.equal((await c.meta.begin("push:p:msg_2", "fp2", 60_000)).state, "started");
    await c.close!();
  });

  it("resolves a write only once its line is in the log, with one append per group of concurrent writes", async () => {
    const dir = await tempDir();
    const store = fileStore({ dir });
    const t = Date.now();
    await Promise.all(Array.from({ length: 100 }, async (_, i) => {
      const rows = Array.from({ length: 10 }, (_, k) => row(i * 10 + k, t, i));
      assert.deepEqual(await store.write(view, rows), { written: 10, stale: 0, expired: 0 });
      const onDisk = loadState(dir).state.rows.get("conf_stats")!;
      for (const r of rows) assert.equal(onDisk.get(r.entityKey)?.values.trips, i, `row ${r.entityKey} of write ${i} is on disk`);
    }));
    const lines = (await readFile(join(dir, LOG_FILE), "utf8")).split("\n");
    assert.ok(lines.length - 2 < 100, `${lines.length - 2} appends for 100 concurrent writes`);
    assert.equal(loadState(dir).state.rows.get("conf_stats")!.size, 1000);
    await store.close!();
  });

  it("drops a torn last log line, opens, and starts the next append on a fresh line", async () => {
    const dir = await tempDir();
    const t = Date.now();
    const a = fileStore({ dir });
    await a.write(view, [row(1, t, 1)]);
    await a.close!();
    // SIGKILL mid-append: half a line, never acknowledged.
    const torn = JSON.stringify({ seq: 2, c: [{ t: "row", view: "conf_stats", key: "driver_id=2", entry: { values: { trips: 2 }, eventTime: t } }] }).slice(0, 80);
    await appendFile(join(dir, LOG_FILE), torn);
    const b = fileStore({ dir });
    assert.deepEqual(await trips(b, [1, 2]), [1, null]);
    await b.write(view, [row(3, t, 3)]);
    await b.close!();
    const text = await readFile(join(dir, LOG_FILE), "utf8");
    assert.ok(!text.includes("driver_id=2"), "the torn line is cut off");
    for (const l of text.trim().split("\n")) JSON.parse(l);
    const c = fileStore({ dir });
    assert.deepEqual(await trips(c, [1, 2, 3]), [1, null, 3]);
    await c.close!();
  });

  describe("refuses to open an unreadable or foreign state, naming the file and how to recover", () => {
    /** A directory with a snapshot (from a compaction) and a log with two lines after it. */
    const populated = async () => {
      const dir = await tempDir();
      const s = fileStore({ dir });
      const t = Date.now();
      await s.write(view, [row(1, t, 1)]);
      await s.compact();
      await s.write(view, [row(2, t, 2)]);
      await s.write(view, [row(3, t, 3)]);
      await s.close!();
      return dir;
    };
    const refuses = async (dir: string, file: string, remedy: RegExp) => {
      const path = join(dir, file);
      const before = await readFile(path);
      assert.throws(() => fileStore({ dir }), isRefusal(path, remedy));
      // Again: the refusal released the lock, and the file was not touched.
      assert.throws(() => fileStore({ dir }), isRefusal(path, remedy));
      assert.deepEqual(await readFile(path), before);
    };

    it("a garbage snapshot", async () => {
      const dir = await populated();
      await writeFile(join(dir, SNAPSHOT_FILE), new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0xff, 0xfe, 0x0a, 0x00]));
      await refuses(dir, SNAPSHOT_FILE, RESTORE);
    });

    it("a truncated snapshot", async () => {
      const dir = await populated();
      const { size } = await stat(join(dir, SNAPSHOT_FILE));
      await truncate(join(dir, SNAPSHOT_FILE), size - 5);
      await refuses(dir, SNAPSHOT_FILE, RESTORE);
      // Cut at a line break: whole lines, but no end marker.
      const lines = (await readFile(join(dir, SNAPSHOT_FILE), "utf8")).split("\n");
      await writeFile(join(dir, SNAPSHOT_FILE), lines.slice(0, 2).join("\n") + "\n");
      await refuses(dir, SNAPSHOT_FILE, RESTORE);
    });

    it("garbage in the middle of the log", async () => {
      const dir = await populated();
      const lines = (await readFile(join(dir, LOG_FILE), "utf8")).split("\n");
      lines.splice(2, 0, "#!garbage");
      await writeFile(join(dir, LOG_FILE), lines.join("\n"));
      await refuses(dir, LOG_FILE, RESTORE);
    });

    it("a log with a gap in its entries", async () => {
      const dir = await populated();
      const lines = (await readFile(join(dir, LOG_FILE), "utf8")).split("\n");
      lines.splice(1, 1);
      await writeFile(join(dir, LOG_FILE), lines.join("\n"));
      await refuses(dir, LOG_FILE, RESTORE);
    });

    it("[] or the wrong shape", async () => {
      for (const file of [SNAPSHOT_FILE, LOG_FILE]) {
        const dir = await populated();
        await writeFile(join(dir, file), "[]\n");
        await refuses(dir, file, RESTORE);
      }
      const dir = await populated();
      await appendFile(join(dir, LOG_FILE), JSON.stringify({ seq: 4, c: [{ t: "row", view: "conf_stats", key: "driver_id=9", entry: { values: [], eventTime: "soon" } }] }) + "\n");
      await refuses(dir, LOG_FILE, RESTORE);
      const dir2 = await populated();
      await appendFile(join(dir2, LOG_FILE), "[]\n");
      await refuses(dir2, LOG_FILE, RESTORE);
    });

    it("a file written by a newer format version", async () => {
      for (const file of [SNAPSHOT_FILE, LOG_FILE]) {
        const dir = await populated();
        const lines = (await readFile(join(dir, file), "utf8")).split("\n");
        lines[0] = lines[0].replace('"version":1', '"version":2');
        await writeFile(join(dir, file), lines.join("\n"));
        await refuses(dir, file, /written by a newer freshet .*version 2.*Upgrade freshet/);
      }
    });

    it("a log whose snapshot is missing", async () => {
      const dir = await populated();
      await rm(join(dir, SNAPSHOT_FILE));
      await refuses(dir, LOG_FILE, /is missing.*Restore the matching state\.snapshot from a backup, or move/);
    });

    it("a previous file store's view file holding [] or a newer format", async () => {
      const dir = await tempDir();
      await mkdir(join(dir, "online"));
      await writeFile(join(dir, "online", "conf_stats.json"), "[]");
      await refuses(dir, "online/conf_stats.json", /Restore it from a backup, or move it out of the way/);
      await writeFile(join(dir, "online", "conf_stats.json"), JSON.stringify({ format: "freshet-online/2", entities: {} }));
      await refuses(dir, "online/conf_stats.json", /newer freshet.*Upgrade freshet/);
      assert.deepEqual((await readdir(dir)).sort(), ["online"], "nothing was created beside it");
    });
  });

  it("ping rejects, and writes fail without being seen, once the log is replaced or changed under the store", async () => {
    const dir = await tempDir();
    const t = Date.now();
    const store = fileStore({ dir });
    await store.write(view, [row(1, t, 1)]);
    await store.ping!();
    // Something else appends to the log: the next append would follow bytes this store did not write.
    await appendFile(join(dir, LOG_FILE), "{}\n");
    await assert.rejects(store.ping!(), (e: Error) => e.message.includes(join(dir, LOG_FILE)) && /changed by another writer/.test(e.message));
    await assert.rejects(store.write(view, [row(1, t + 1, 2)]), (e: FreshetError) => e.code === "STORE_UNAVAILABLE" && !e.retriable);
    assert.deepEqual(await trips(store, [1]), [1], "the failed write is not visible");
    await assert.rejects(store.ping!(), "it stays broken");
    await store.close!();

    // The log replaced by a directory: appends would go to a file nobody reads again.
    const dir2 = await tempDir();
    const s2 = fileStore({ dir: dir2 });
    await s2.write(view, [row(1, t, 1)]);
    await rename(join(dir2, LOG_FILE), join(dir2, "moved.log"));
    await mkdir(join(dir2, LOG_FILE));
    await assert.rejects(s2.write(view, [row(1, t + 1, 2)]), (e: FreshetError) => e.code === "STORE_UNAVAILABLE" && e.message.includes("replaced"));
    assert.deepEqual(await trips(s2, [1]), [1]);
    await assert.rejects(s2.ping!());
    await s2.close!();
  });

  it("an append that fails midway (file size limit) is not visible and leaves no partial line; the next one goes through", async () => {
    const dir = await tempDir();
    // ulimit -f: the write that crosses the limit is cut short, the next gets EFBIG (SIGXFSZ ignored).
    const BLOCKS = 256;
    const c = child(CHILD_PRELUDE + `
      import { statSync } from "node:fs";
      const dir = process.env.DIR;
      const limit = ${BLOCKS} * 512;
      const store = fileStore({ dir });
      const t = Date.now();
      let id = 0;
      while (statSync(dir + "/state.log").size < limit - 6000) {
        await store.write(view, Array.from({ length: 20 }, () => row(++id, t, 1)));
      }
      const big = { entityKey: "driver_id=0", values: { trips: 99, pad: "x".repeat(limit * 3) }, eventTime: t };
      let failed = null;
      try { await store.write(view, [big]); } catch (e) { failed = { code: e.code, retriable: e.retriable, message: e.message }; }
      const seen = (await store.read(view, ["driver_id=0"], ["trips"]))[0].trips.status;
      let pingAfter = "ok";
      try { await store.ping(); } catch (e) { pingAfter = e.message; }
      const next = await store.write(view, [row(++id, t, 2)]);
      await store.close();
      say("RESULT " + JSON.stringify({ failed, seen, pingAfter, next, last: id }));
    `, { DIR: dir }, `trap '' XFSZ; ulimit -f ${BLOCKS}`);
    const { code, out } = await c.done;
    assert.equal(code, 0, out);
    const result = JSON.parse(/RESULT (.*)/.exec(out)![1]);
    assert.equal(result.failed?.code, "STORE_UNAVAILABLE", out);
    assert.equal(result.failed.retriable, true);
    assert.match(result.failed.message, /state\.log/);
    assert.equal(result.seen, "NOT_FOUND", "the failed write is not visible");
    assert.equal(result.pingAfter, "ok", "the partial line was cut off, so the store is healthy again");
    assert.equal(result.next.written, 1);
    // On disk: whole lines only, the big row absent, everything else present.
    const text = await readFile(join(dir, LOG_FILE), "utf8");
    assert.ok(text.endsWith("\n"));
    for (const l of text.trim().split("\n")) JSON.parse(l);
    const s = fileStore({ dir });
    assert.deepEqual(await trips(s, [0, 1, result.last - 1, result.last]), [null, 1, 1, 2]);
    await s.close!();
  });

  it("refuses a second process on the directory, naming the holder, and takes over a SIGKILLed holder's lock", async () => {
    const dir = await tempDir();
    const t = Date.now();
    // This process holds it; a child is refused.
    const mine = fileStore({ dir });
    await mine.write(view, [row(1, t, 1)]);
    const tryOpen = CHILD_PRELUDE + `
      try { const s = fileStore({ dir: process.env.DIR }); say("OPENED"); await s.close(); }
      catch (e) { say("REFUSED " + JSON.stringify({ code: e.code, retriable: e.retriable, message: e.message })); }
    `;
    const refused = await child(tryOpen, { DIR: dir }).done;
    const m = /REFUSED (.*)/.exec(refused.out);
    assert.ok(m, refused.out);
    const err = JSON.parse(m[1]);
    assert.equal(err.code, "INVALID_CONFIG");
    assert.equal(err.retriable, false);
    assert.ok(err.message.includes(dir));
    assert.match(err.message, new RegExp(`pid ${process.pid} on host "${hostname()}", since \\d{4}-\\d\\d-\\d\\dT`));
    assert.match(err.message, /redis:\/\//);
    await mine.close!();

    // A child holds it and is SIGKILLed; this process is refused, then takes over.
    const holder = child(CHILD_PRELUDE + `
      const s = fileStore({ dir: process.env.DIR });
      await s.write(view, [row(2, ${t}, 2)]);
      await s.meta.setCheckpoint("kafka:trips:0", "7");
      say("HOLDING " + process.pid);
      setInterval(() => {}, 1000);
    `, { DIR: dir });
    const pid = Number((await holder.line(/HOLDING \d+/)).split(" ")[1]);
    assert.throws(() => fileStore({ dir }), (e: FreshetError) => e.code === "INVALID_CONFIG" && e.message.includes(`pid ${pid} on host "${hostname()}"`));
    holder.kill();
    await holder.done;
    const after = fileStore({ dir });
    assert.deepEqual(await trips(after, [1, 2]), [1, 2]);
    assert.equal(await after.meta.getCheckpoint("kafka:trips:0"), "7");
    // Held by this process now: a child is refused again, and the close releases it.
    assert.match((await child(tryOpen, { DIR: dir }).done).out, new RegExp(`REFUSED .*pid ${process.pid}`));
    await after.close!();
    assert.match((await child(tryOpen, { DIR: dir }).done).out, /OPENED/);
  });

  it("compaction keeps the state exact across reopen, also after a crash on either side of the snapshot rename", async () => {
    const compacted = await tempDir();
    const plain = await tempDir();
    const t = Date.now();
    // The same operations, on one clock, on a store that compacts every few KB and on one that never does.
    const run = async (dir: string, compactBytes: number) => {
      const s = fileStore({ dir, compactBytes, now: () => t });
      for (let k = 0; k < 40; k++) {
        await s.write(view, Array.from({ length: 20 }, (_, i) => row((k * 7 + i) % 150, t + k, k)), { watermarks: { [`wm:${k % 3}`]: t + k } });
        await s.write(short, [row(k, t, k)], { done: { key: `push:p:${k}`, fingerprint: `fp${k}`, ttlMs: 3_600_000 } });
        await s.meta.setCheckpoint(`kafka:t:${k % 4}`, String(k));
        await s.meta.acquireLease(`shard-${k % 5}`, `w${k % 2}`, 3_600_000);
      }
      await s.close!();
    };
    await run(compacted, 4096);
    await run(plain, 1 << 30);
    const { size } = await stat(join(compacted, SNAPSHOT_FILE));
    assert.ok(size > 4096);
    assert.ok((await stat(join(compacted, LOG_FILE))).size <= size + 8192, "the log was compacted as it grew");
    const strip = (d: string) => loadState(d).state;
    assert.deepEqual(strip(compacted), strip(plain));

    // Crash after the snapshot rename, before the fresh log: new snapshot, old log.
    const oldLog = join(compacted, "old.log");
    await copyFile(join(compacted, LOG_FILE), oldLog);
    const s = fileStore({ dir: compacted });
    await s.compact();
    await s.close!();
    await rename(oldLog, join(compacted, LOG_FILE));
    assert.deepEqual(strip(compacted), strip(plain));
    const reopened = fileStore({ dir: compacted });
    assert.equal(await reopened.meta.getCheckpoint("kafka:t:3"), "39");
    await reopened.write(view, [row(0, t + 100, 100)]);
    await reopened.close!();
    assert.equal(loadState(compacted).state.rows.get("conf_stats")!.get("driver_id=0")!.values.trips, 100);

    // Crash before the rename: a half-written temp snapshot is ignored and removed.
    await writeFile(join(plain, `${SNAPSHOT_FILE}.tmp-deadbeef`), '{"format":"freshet-snapshot","version":1,"seq":99}\n{"t":"row"');
    const p = fileStore({ dir: plain });
    assert.deepEqual(await trips(p, [0, 1]), [loadState(plain).state.rows.get("conf_stats")!.get("driver_id=0")!.values.trips, loadState(plain).state.rows.get("conf_stats")!.get("driver_id=1")!.values.trips]);
    await p.close!();
    assert.ok(!(await readdir(plain)).some((n) => n.includes(".tmp-")));
  });

  it("drops expired rows and idempotency keys at compaction", async () => {
    const dir = await tempDir();
    let offset = 0;
    const s = fileStore({ dir, now: () => Date.now() + offset });
    const t = Date.now();
    await s.write(short, [row(1, t, 1)], { done: { key: "push:p:a", fingerprint: "a", ttlMs: 1000 } });
    await s.write(view, [row(1, t, 1)]);
    offset = 5000;
    await s.compact();
    await s.close!();
    const { state } = loadState(dir);
    assert.equal(state.rows.get("conf_short")?.size ?? 0, 0);
    assert.equal(state.rows.get("conf_stats")!.size, 1);
    assert.equal(state.idem.size, 0);
  });

  it("migrates a directory of the previous file store once", async () => {
    const dir = await tempDir();
    const t = Date.now();
    await mkdir(join(dir, "online"));
    await writeFile(join(dir, "online", "conf_stats.json"), `{"format":"freshet-online/1","entities":{\n"driver_id=1":${JSON.stringify({ values: { trips: 5 }, eventTime: t, createdTime: t })},\n"driver_id=2":${JSON.stringify({ values: { trips: 6 }, eventTime: t - 1, expiresAt: t + 3_600_000 })}\n}}\n`);
    await writeFile(join(dir, "meta.json"), JSON.stringify({ format: "freshet-meta/1", claims: { "webhook:x": t + 60_000 }, checkpoints: { "kafka:t:0": "12" }, leases: { "shard-1": { key: "shard-1", owner: "w", counter: 3, expiresAt: t + 60_000 } } }) + "\n");
    const a = fileStore({ dir });
    assert.deepEqual(await trips(a, [1, 2]), [5, 6]);
    assert.equal(await a.meta.getCheckpoint("kafka:t:0"), "12");
    assert.equal((await a.meta.listLeases("shard-"))[0].counter, 3);
    await a.write(view, [row(1, t + 1, 7)]);
    await a.close!();
    assert.deepEqual((await readdir(dir)).sort(), ["meta.json.v1-migrated", "online.v1-migrated", LOG_FILE].sort());
    const b = fileStore({ dir });
    assert.deepEqual(await trips(b, [1, 2]), [7, 6]);
    await b.close!();
  });

  it("a write costs about the same at 200k entities as at 1k (an append, not a rewrite)", async () => {
    const t = Date.now();
    const perWrite = async (entities: number) => {
      const dir = await tempDir();
      const s = fileStore({ dir });
      for (let i = 0; i < entities; i += 10_000) {
        await s.write(view, Array.from({ length: Math.min(10_000, entities - i) }, (_, k) => row(i + k, t, 0)));
      }
      await s.compact();
      let best = Infinity;
      for (let round = 0; round < 2; round++) {
        const start = performance.now();
        for (let i = 0; i < 200; i++) await s.write(view, [row((i * 4999) % entities, t + 1 + round * 200 + i, i)]);
        best = Math.min(best, (performance.now() - start) / 200);
      }
      await s.close!();
      return best;
    };
    const small = await perWrite(1_000);
    const large = await perWrite(200_000);
    console.log(`file store: ${small.toFixed(3)} ms per single-row write at 1k entities, ${large.toFixed(3)} ms at 200k (${(large / small).toFixed(2)}x)`);
    assert.ok(large < small * 5, `${large} ms at 200k vs ${small} ms at 1k`);
  });
});

// fileOffline (the offline log) is tested in tests/stores/offline.test.ts.

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
