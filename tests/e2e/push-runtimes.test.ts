// @runtimes node
/**
 * The push receiver over real HTTP on Node, Bun and Deno: each runtime runs
 * the freshet CLI as a child process on the default store (SQLite in the
 * data dir: bun:sqlite, node:sqlite on Deno, libsql on Node 20). Push, read
 * back, SIGTERM (exit 0), restart on the same data dir, read back again.
 */
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { offlineLogRows } from "../fixtures/offline-log.ts";

const root = new URL("../../", import.meta.url).pathname;
const bin = (b: string) => join(root, "node_modules/.bin", b);
const RUNTIMES: Record<string, string[]> = {
  node: [process.execPath, "--import", "tsx", "adapters/cli.ts"],
  bun: [bin("bun"), "adapters/cli.ts"],
  deno: [bin("deno"), "run", "-A", "adapters/cli.ts"],
};

function startServer(runtime: string, dataDir: string): Promise<{ child: ChildProcess; url: string; output: () => string }> {
  const [cmd, ...args] = RUNTIMES[runtime];
  const child = spawn(cmd, [...args, "serve", "examples/driver_stats/feature_repo.ts", "--port", "0", "--host", "127.0.0.1", "--data-dir", dataDir], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${runtime} did not start in 60 s:\n${out}`)), 60_000);
    const onData = (d: Buffer) => {
      out += d.toString();
      const m = /on http:\/\/localhost:(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ child, url: `http://127.0.0.1:${m[1]}`, output: () => out });
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.once("exit", (code) => reject(new Error(`${runtime} exited ${code} before listening:\n${out}`)));
  });
}

function stop(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    child.once("exit", (code) => resolve(code));
    child.kill("SIGTERM");
  });
}

const post = async (url: string, body: unknown) => {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  return { status: res.status, body: await res.json() };
};

describe("push end-to-end over HTTP, per runtime", () => {
  const dirs: string[] = [];
  after(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });
  for (const runtime of Object.keys(RUNTIMES)) {
    it(`${runtime}: push, read back, SIGTERM, restart, read back`, { timeout: 180_000 }, async () => {
      const dir = await mkdtemp(join(tmpdir(), `freshet-e2e-${runtime}-`));
      dirs.push(dir);
      const ts = new Date(Date.now() - 60_000).toISOString();
      const s1 = await startServer(runtime, dir);
      try {
        assert.match(s1.output(), /store sqlite[,)]/, "SQLite is the default store");
        const pushed = await post(`${s1.url}/push`, {
          push_source_name: "driver_stats_push_source",
          df: { driver_id: [1001, 1002], conv_rate: [0.8, 0.4], acc_rate: [0.5, 1], avg_daily_trips: [10, 20], event_timestamp: [ts, ts] },
          to: "online_and_offline",
        });
        assert.equal(pushed.status, 200, JSON.stringify(pushed.body));
        assert.equal(pushed.body.written, 2);
        const bad = await post(`${s1.url}/push`, { push_source_name: "driver_stats_push_source", df: { driver_id: [1], conv_rate: [7], acc_rate: [1], avg_daily_trips: [1], event_timestamp: [ts] } });
        assert.equal(bad.status, 422);
        assert.equal(bad.body.error.field, "df.conv_rate[0]");
      } finally {
        assert.equal(await stop(s1.child), 0, `clean exit on SIGTERM:\n${s1.output()}`);
      }
      const s2 = await startServer(runtime, dir);
      try {
        const got = await post(`${s2.url}/get-online-features`, { entities: { driver_id: [1001, 1002, 3] }, features: ["driver_hourly_stats:conv_rate", "driver_hourly_stats:reliability"] });
        assert.equal(got.status, 200);
        assert.deepEqual(got.body.metadata.feature_names, ["driver_id", "conv_rate", "reliability"]);
        assert.deepEqual(got.body.results[1].values, [0.8, 0.4, null]);
        assert.deepEqual(got.body.results[1].statuses, ["PRESENT", "PRESENT", "NOT_FOUND"]);
        assert.deepEqual(got.body.results[2].values, [0.4, 0.4, null], "the UDF's derived feature");
        const offline = await offlineLogRows(dir, "driver_hourly_stats");
        assert.equal(offline.length, 2);
        assert.ok((await stat(join(dir, "freshet.db"))).size > 0, "the rows are in <data-dir>/freshet.db");
      } finally {
        assert.equal(await stop(s2.child), 0);
      }
    });
  }
});
