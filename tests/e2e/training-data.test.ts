// @runtimes node
/**
 * A training set from a stream, as the README shows it: `freshet serve`,
 * pushes, `freshet historical` to Parquet, CSV and JSON Lines (read back
 * with DuckDB), and `freshet materialize --from-offline` rebuilding the
 * online store from the log.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { DuckDBInstance } from "@duckdb/node-api";
import { fileStore } from "../../plugins/stores/file/index.ts";
import repo from "../../examples/driver_stats/feature_repo.ts";
import { root, startCli } from "../fixtures/cli-harness.ts";

const cli = (...args: string[]) => spawnSync(process.execPath, ["bin/freshet.mjs", ...args], { cwd: root, encoding: "utf8", timeout: 120_000 });
const HOUR = 3_600_000;

async function duck(sql: string): Promise<Record<string, unknown>[]> {
  const inst = await DuckDBInstance.create(":memory:");
  const con = await inst.connect();
  try {
    return (await con.runAndReadAll(sql)).getRowObjectsJS();
  } finally {
    con.closeSync();
    inst.closeSync();
  }
}

describe("training data from a stream", () => {
  it("serve + push, then historical to Parquet/CSV/JSON Lines with progress, then materialize --from-offline", async () => {
    const dir = mkdtempSync(join(tmpdir(), "freshet-train-"));
    const t = Math.floor(Date.now() / HOUR) * HOUR - 10 * HOUR;
    try {
      const server = await startCli(["serve", "examples/driver_stats/feature_repo.ts", "--data-dir", dir, "--port", "0", "--host", "127.0.0.1"]);
      try {
        // Three hours of stats for two drivers; driver 1001's third row arrives late (after a newer one) and is logged too.
        const rows = [
          { driver_id: 1001, conv_rate: 0.1, acc_rate: 0.5, avg_daily_trips: 10, event_timestamp: new Date(t).toISOString() },
          { driver_id: 1002, conv_rate: 0.2, acc_rate: 0.5, avg_daily_trips: 20, event_timestamp: new Date(t).toISOString() },
          { driver_id: 1001, conv_rate: 0.3, acc_rate: 0.5, avg_daily_trips: 30, event_timestamp: new Date(t + 2 * HOUR).toISOString() },
          { driver_id: 1001, conv_rate: 0.2, acc_rate: 0.5, avg_daily_trips: 25, event_timestamp: new Date(t + HOUR).toISOString() },
        ];
        for (const r of rows) {
          const res = await fetch(`http://127.0.0.1:${server.port}/push`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ push_source_name: "driver_stats_push_source", rows: [r], to: "online_and_offline" }) });
          assert.equal(res.status, 200, await res.text());
        }
      } finally {
        assert.equal(await server.stop(), 0, server.output());
      }

      const entities = join(dir, "entities.csv");
      writeFileSync(entities, [
        "driver_id,event_timestamp,label",
        `1001,${new Date(t - 1).toISOString()},0`, // before any row
        `1001,${new Date(t + 90 * 60_000).toISOString()},1`, // the late row (t+1h) is the answer
        `1001,${new Date(t + 3 * HOUR).toISOString()},1`,
        `1002,${new Date(t + 23 * HOUR).toISOString()},0`, // within the 1d ttl
        `1002,${new Date(t + 25 * HOUR).toISOString()},0`, // past it
        `9999,${new Date(t).toISOString()},0`,
      ].join("\n") + "\n");
      const want = [null, 25, 30, 20, null, null];
      for (const out of ["train.parquet", "train.csv", "train.jsonl"]) {
        const r = cli("historical", "examples/driver_stats/feature_repo.ts", "--data-dir", dir, "--entities", entities, "--features", "driver_hourly_stats:avg_daily_trips,driver_hourly_stats:reliability", "--out", join(dir, out));
        assert.equal(r.status, 0, r.stderr + r.stdout);
        assert.match(r.stderr, /historical: 6 entity rows from/);
        assert.match(r.stderr, /historical driver_hourly_stats \(duckdb\): done/);
        assert.match(r.stderr, /wrote 6 rows \(3 with a value\) x 2 features to .*train\./);
        const read = out.endsWith(".parquet") ? `read_parquet('${join(dir, out)}')` : out.endsWith(".csv") ? `read_csv('${join(dir, out)}')` : `read_json_auto('${join(dir, out)}')`;
        const got = await duck(`SELECT * FROM ${read}`);
        assert.deepEqual(got.map((g) => (g.avg_daily_trips === null ? null : Number(g.avg_daily_trips))), want, out);
        assert.equal(Number(got[2].reliability), 0.15, "the UDF's feature as it was logged");
        assert.deepEqual(got.map((g) => Number(g.label)), [0, 1, 1, 0, 0, 0], "entity columns kept");
      }
      const stream = cli("historical", "examples/driver_stats/feature_repo.ts", "--data-dir", dir, "--entities", entities, "--features", "driver_hourly_stats:avg_daily_trips", "--out", join(dir, "s.jsonl"), "--engine", "stream");
      assert.equal(stream.status, 0, stream.stderr);
      assert.match(stream.stderr, /\(stream\): done, 4 feature rows read/);
      assert.deepEqual(readFileSync(join(dir, "s.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l).avg_daily_trips), want);

      const bad = cli("historical", "examples/driver_stats/feature_repo.ts", "--data-dir", dir, "--entities", entities, "--features", "driver_hourly_stats:nope", "--out", join(dir, "x.parquet"));
      assert.equal(bad.status, 1);
      assert.match(bad.stderr, /view "driver_hourly_stats" has no feature "nope"/);
      const noOut = cli("historical", "examples/driver_stats/feature_repo.ts", "--entities", entities, "--features", "driver_hourly_stats:conv_rate", "--out", "x.xlsx");
      assert.equal(noOut.status, 2);
      assert.match(noOut.stderr, /--out x.xlsx: use a .parquet, .csv or .jsonl file/);

      // Rebuild a fresh online store from the log alone.
      const fresh = join(dir, "fresh");
      const m = cli("materialize", "examples/driver_stats/feature_repo.ts", "--from-offline", "--store", `file:${fresh}`, "--data-dir", dir);
      assert.equal(m.status, 0, m.stderr + m.stdout);
      assert.match(m.stdout, /materialized driver_hourly_stats from the offline log: 4 rows read, 4 in range, 2 written, 2 stale, 0 expired/);
      const store = fileStore({ dir: fresh });
      const got = await store.read(repo.view("driver_hourly_stats"), ["driver_id=1001", "driver_id=1002"], ["avg_daily_trips", "reliability"]);
      assert.deepEqual(got.map((g) => g.avg_daily_trips.value), [30, 20], "the latest logged row per driver, not the late one");
      assert.equal(got[0].reliability.value, 0.15);
      await store.close?.();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
