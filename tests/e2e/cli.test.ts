// @runtimes node machine-node
/** The freshet CLI as a user runs it: materialize with progress, describe, and config errors that say how to fix them. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { sqliteStore } from "../../plugins/stores/sqlite/index.ts";
import repo from "../../examples/driver_stats/feature_repo.ts";

const root = new URL("../../", import.meta.url).pathname;
const cli = (...args: string[]) => spawnSync(process.execPath, ["bin/freshet.mjs", ...args], { cwd: root, encoding: "utf8", timeout: 60_000 });
const cliEnv = (env: Record<string, string>, ...args: string[]) => spawnSync(process.execPath, ["bin/freshet.mjs", ...args], { cwd: root, encoding: "utf8", timeout: 60_000, env: { ...process.env, ...env } });

describe("freshet CLI", () => {
  it("quick start: `npm start` in a fresh clone serves on SQLite with no service, and the curl lines it prints work", { timeout: 120_000 }, async () => {
    // A fresh clone: the tracked files only (no data/), and node_modules as `npm install` leaves it.
    const clone = mkdtempSync(join(tmpdir(), "freshet-clone-"));
    try {
      for (const f of execFileSync("git", ["ls-files", "-z"], { cwd: root, encoding: "utf8" }).split("\0").filter(Boolean)) {
        if (!existsSync(join(root, f))) continue;
        mkdirSync(dirname(join(clone, f)), { recursive: true });
        copyFileSync(join(root, f), join(clone, f));
      }
      symlinkSync(join(root, "node_modules"), join(clone, "node_modules"), "dir");
      assert.ok(!existsSync(join(clone, "data")), "no data directory to start with");
      // The user's environment, without any Freshet setting; --port 0 only so that the test never meets a busy 8080.
      const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("FRESHET_") && k !== "PORT" && !k.startsWith("UPSTASH_")));
      const child = spawn("npm", ["start", "--", "--port", "0"], { cwd: clone, env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      child.stdout.on("data", (d) => (out += String(d)));
      child.stderr.on("data", (d) => (out += String(d)));
      const closed = new Promise<void>((r) => child.once("close", () => r()));
      try {
        const curls = await new Promise<string[]>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`npm start printed no curl lines in 60 s:\n${out}`)), 60_000);
          const check = () => {
            const lines = out.split("\n").filter((l) => l.startsWith("  curl ")).map((l) => l.trim());
            if (lines.length >= 2) {
              clearTimeout(timer);
              resolve(lines);
            }
          };
          child.stdout.on("data", check);
          child.once("exit", (code) => reject(new Error(`npm start exited ${code}:\n${out}`)));
        });
        assert.match(out, /serving project "driver_stats" on http:\/\/localhost:\d+ \(node, store sqlite[,)]/);
        // The lines as printed, run by a shell with the real curl.
        const pushed = JSON.parse(execFileSync("sh", ["-c", curls[0]], { encoding: "utf8", timeout: 30_000 }));
        assert.equal(pushed.status, "ok", JSON.stringify(pushed));
        assert.equal(pushed.written, 1);
        const read = JSON.parse(execFileSync("sh", ["-c", curls[1]], { encoding: "utf8", timeout: 30_000 }));
        assert.equal(read.results[0].values[0], 1001, JSON.stringify(read));
        const features = read.results.slice(1);
        assert.ok(features.length >= 2);
        for (const f of features) assert.deepEqual(f.statuses, ["PRESENT"], JSON.stringify(read));
        assert.equal(features[0].values[0], 0.5, "the pushed conv_rate");
      } finally {
        process.kill(-child.pid!, "SIGTERM");
        await closed;
      }
      // The row is in the SQLite file in ./data, and there is no file store beside it.
      assert.equal(readFileSync(join(clone, "data/freshet.db")).subarray(0, 15).toString("latin1"), "SQLite format 3");
      assert.ok(!existsSync(join(clone, "data/state.log")));
      const store = sqliteStore({ path: join(clone, "data/freshet.db") });
      const [row] = await store.read(repo.view("driver_hourly_stats"), ["driver_id=1001"], ["conv_rate"]);
      assert.equal(row.conv_rate.value, 0.5);
      await store.close();
    } finally {
      rmSync(clone, { recursive: true, force: true });
    }
  });

  it("materializes the latest row per entity in a range, with progress, through the UDF", async () => {
    const dir = mkdtempSync(join(tmpdir(), "freshet-cli-"));
    try {
      // The example's view with ttl 0, so that its November history is not expired.
      const repoFile = join(dir, "feature_repo.ts");
      writeFileSync(join(dir, "package.json"), '{"type":"module"}');
      const mod = join(root, "mod.ts");
      const example = join(root, "examples/driver_stats/feature_repo.ts");
      writeFileSync(repoFile, `import { featureRepo, streamFeatureView } from ${JSON.stringify(mod)};
import { driver, driverStatsPush, driverHourlyStats } from ${JSON.stringify(example)};
const { kind: _k, joinKeys: _j, ttlMs: _t, watermarkDelayMs: _w, maxFutureSkewMs: _m, dropLate: _d, ...opts } = driverHourlyStats;
export default featureRepo({ project: "driver_stats", definitions: [driver, driverStatsPush, streamFeatureView({ ...opts, ttl: 0 } as never)] });
`);
      const r = cli("materialize", repoFile, "--data-dir", dir, "--start", "2026-11-20T00:00:00Z", "--end", "2026-11-20T12:00:00Z");
      assert.equal(r.status, 0, r.stderr + r.stdout);
      assert.match(r.stdout + r.stderr, /materialize driver_hourly_stats: 120 rows read/);
      assert.match(r.stdout + r.stderr, /\(done in/);
      assert.match(r.stdout, /materialized driver_hourly_stats: 120 rows read, 60 in range, 5 written, 55 stale, 0 expired \(outside the ttl\), 0 invalid/);
      // On the default store: one SQLite file in the data directory.
      const store = sqliteStore({ path: join(dir, "freshet.db") });
      const view = (await import(repoFile)).default.view("driver_hourly_stats");
      const [row] = await store.read(view, ["driver_id=1001"], ["avg_daily_trips", "reliability"]);
      assert.equal(row.avg_daily_trips.eventTime, Date.parse("2026-11-20T11:00:00Z"), "the last row before the end");
      assert.equal(row.reliability.status, "PRESENT", "the UDF ran in the backfill");
      await store.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("materialize says so when the history is older than the view's ttl", () => {
    const dir = mkdtempSync(join(tmpdir(), "freshet-cli-"));
    try {
      const r = cli("materialize", "examples/driver_stats/feature_repo.ts", "--data-dir", dir, "--start", "2026-11-20T00:00:00Z", "--end", "2026-11-20T12:00:00Z");
      assert.equal(r.status, 0, r.stderr + r.stdout);
      // The example's ttl is 1 day and its history is from 2026-11-20: nothing is live any more.
      if (Date.now() > Date.parse("2026-11-21T12:00:00Z")) assert.match(r.stdout, /0 written, 0 stale, 60 expired \(outside the ttl\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("scenario 17: serve refuses to start on a corrupt or newer file store, naming the file and how to recover", () => {
    const dir = mkdtempSync(join(tmpdir(), "freshet-cli-"));
    try {
      // A store written by a first run, then damaged in the middle of its log.
      const first = cli("materialize", "examples/driver_stats/feature_repo.ts", "--store", `file:${dir}`, "--data-dir", dir);
      assert.equal(first.status, 0, first.stderr);
      writeFileSync(join(dir, "state.log"), '{"format":"freshet-log","version":1,"base":0}\n{"seq":1,"c":[]}\nnot json at all\n{"seq":2,"c":[]}\n');
      const r = cli("serve", "examples/driver_stats/feature_repo.ts", "--store", `file:${dir}`, "--data-dir", dir, "--port", "0");
      assert.equal(r.status, 2, r.stdout + r.stderr);
      assert.match(r.stderr, /state\.log has an unreadable line 3 .*Restore state\.log from a backup, or move it out/);
      assert.doesNotMatch(r.stdout, /serving project/, "it never started serving");
      // Written by a newer Freshet.
      writeFileSync(join(dir, "state.log"), '{"format":"freshet-log","version":99,"base":0}\n');
      const newer = cli("serve", "examples/driver_stats/feature_repo.ts", "--store", `file:${dir}`, "--data-dir", dir, "--port", "0");
      assert.equal(newer.status, 2, newer.stdout + newer.stderr);
      assert.match(newer.stderr, /state\.log[\s\S]*[Uu]pgrade/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("scenario 17: serve, consume and materialize refuse a damaged, truncated, newer or foreign SQLite file with exit 2, one line naming it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "freshet-cli-"));
    const db = join(dir, "freshet.db");
    const repoPath = "examples/driver_stats/feature_repo.ts";
    // consume opens the store before it connects to Kafka (nothing listens on port 1).
    const consume = ["consume", "examples/kafka_driver_stats/feature_repo.ts"];
    const refused = (what: string, pattern: RegExp, commands = [["serve", repoPath], ["materialize", repoPath]]) => {
      for (const [command, repoFile] of commands) {
        const r = cliEnv({ KAFKA_BROKERS: "127.0.0.1:1" }, command, repoFile, "--data-dir", dir, "--port", "0");
        assert.equal(r.status, 2, `${what}, ${command}: ${r.stdout}${r.stderr}`);
        const lines = r.stderr.trim().split("\n");
        assert.equal(lines.length, 1, `${what}, ${command}: one line, got ${r.stderr}`);
        assert.ok(lines[0].includes(db), `${what}, ${command}: names ${db}: ${lines[0]}`);
        assert.match(lines[0], pattern, `${what}, ${command}`);
        assert.doesNotMatch(r.stdout, /serving project|materialized/, `${what}, ${command}: it never started`);
      }
    };
    const wipe = () => {
      for (const f of [db, `${db}-wal`, `${db}-shm`]) rmSync(f, { force: true });
    };
    try {
      // A good file first, written by the default store.
      const first = cli("materialize", repoPath, "--data-dir", dir);
      assert.equal(first.status, 0, first.stderr);
      const good = readFileSync(db);
      assert.equal(good.subarray(0, 16).toString("latin1"), "SQLite format 3\0");
      // Garbage where the file was.
      writeFileSync(db, Buffer.alloc(good.length, "garbage "));
      refused("garbage", /is not a readable SQLite database .*move this one away and restore it from a backup/, [["serve", repoPath], consume, ["materialize", repoPath]]);
      // Truncated to its header page: the schema it points to is gone.
      wipe();
      writeFileSync(db, good.subarray(0, 100));
      refused("truncated", /is not a readable SQLite database/);
      // Written by a newer layout.
      wipe();
      const store = sqliteStore({ path: db });
      const conn = await store.ready();
      await conn.run("UPDATE freshet_meta SET value = '99' WHERE key = 'layout_version'");
      await store.close();
      refused("newer", /layout version 99, newer than this Freshet reads \(1\): upgrade Freshet, or point the store at another file/);
      // Another application's database.
      wipe();
      const other = sqliteStore({ path: join(dir, "scratch.db") });
      const raw = await other.ready();
      await raw.exec(`ATTACH DATABASE '${db}' AS other`);
      await raw.exec("CREATE TABLE other.invoices (id INTEGER PRIMARY KEY, total REAL)");
      await raw.exec("DETACH DATABASE other");
      await other.close();
      refused("foreign", /holds another application's tables \(invoices\) and no freshet_meta: it is not a Freshet store/);
      // The same file given as a URL, absolute.
      const r = cli("serve", repoPath, "--store", `sqlite:${db}`, "--port", "0");
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, /invoices/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a sqlite: URL is a file relative to the working directory, or absolute", () => {
    const dir = mkdtempSync(join(tmpdir(), "freshet-cli-"));
    try {
      const inDir = (...args: string[]) => spawnSync(process.execPath, [join(root, "bin/freshet.mjs"), ...args], { cwd: dir, encoding: "utf8", timeout: 60_000 });
      const repoFile = join(root, "examples/driver_stats/feature_repo.ts");
      const rel = inDir("materialize", repoFile, "--store", "sqlite:./nested/rel.db", "--data-dir", join(dir, "data"));
      assert.equal(rel.status, 0, rel.stderr);
      assert.equal(readFileSync(join(dir, "nested/rel.db")).subarray(0, 15).toString("latin1"), "SQLite format 3");
      const abs = inDir("materialize", repoFile, "--store", `sqlite://${join(dir, "abs.db")}`, "--data-dir", join(dir, "data"));
      assert.equal(abs.status, 0, abs.stderr);
      assert.equal(readFileSync(join(dir, "abs.db")).subarray(0, 15).toString("latin1"), "SQLite format 3");
      // No store given: <data-dir>/freshet.db, and no file store beside it.
      const dflt = inDir("materialize", repoFile, "--data-dir", "d");
      assert.equal(dflt.status, 0, dflt.stderr);
      assert.equal(readFileSync(join(dir, "d/freshet.db")).subarray(0, 15).toString("latin1"), "SQLite format 3");
      assert.throws(() => readFileSync(join(dir, "d/state.log")), /ENOENT/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("describes the registry as JSON", () => {
    const r = cli("describe", "examples/driver_stats/feature_repo.ts");
    assert.equal(r.status, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).featureViews[0].name, "driver_hourly_stats");
  });

  it("fails with exit 2 and a fix for bad configuration", () => {
    const noRepo = cli("serve");
    assert.equal(noRepo.status, 2);
    assert.match(noRepo.stderr, /needs a feature repo path, e\.g\. freshet serve examples/);
    const badStore = cli("serve", "examples/driver_stats/feature_repo.ts", "--store", "mongodb://x");
    assert.equal(badStore.status, 2);
    assert.match(badStore.stderr, /unknown store URL "mongodb:\/\/x": use sqlite:\.\/data\/freshet\.db, file:/);
    // One slash is a typo, not a directory named "redis:" to write into.
    const typo = cli("serve", "examples/driver_stats/feature_repo.ts", "--store", "redis:/127.0.0.1:6379", "--data-dir", mkdtempSync(join(tmpdir(), "freshet-cli-")));
    assert.equal(typo.status, 2, typo.stdout + typo.stderr);
    assert.match(typo.stderr, /unknown store URL "redis:\/127\.0\.0\.1:6379"/);
    const sqliteHost = cli("serve", "examples/driver_stats/feature_repo.ts", "--store", "sqlite://db.example/freshet.db");
    assert.equal(sqliteHost.status, 2, sqliteHost.stdout + sqliteHost.stderr);
    assert.match(sqliteHost.stderr, /"sqlite:\/\/db\.example\/freshet\.db" names a host; a SQLite store is a local file: use sqlite:\.\/data\/freshet\.db/);
    const badPort = cli("serve", "examples/driver_stats/feature_repo.ts", "--port", "http");
    assert.equal(badPort.status, 2);
    assert.match(badPort.stderr, /--port http is not a port number/);
  });
});
