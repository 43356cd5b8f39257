// @runtimes node
/** The freshet CLI as a user runs it: materialize with progress, describe, and config errors that say how to fix them. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileStore } from "../../plugins/stores/file/index.ts";
import repo from "../../examples/driver_stats/feature_repo.ts";

const root = new URL("../../", import.meta.url).pathname;
const cli = (...args: string[]) => spawnSync(process.execPath, ["bin/freshet.mjs", ...args], { cwd: root, encoding: "utf8", timeout: 60_000 });

describe("freshet CLI", () => {
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
      const store = fileStore({ dir });
      const view = (await import(repoFile)).default.view("driver_hourly_stats");
      const [row] = await store.read(view, ["driver_id=1001"], ["avg_daily_trips", "reliability"]);
      assert.equal(row.avg_daily_trips.eventTime, Date.parse("2026-11-20T11:00:00Z"), "the last row before the end");
      assert.equal(row.reliability.status, "PRESENT", "the UDF ran in the backfill");
      await store.close?.();
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

  it("scenario 17: serve refuses to start on a corrupt or newer store, naming the file and how to recover", () => {
    const dir = mkdtempSync(join(tmpdir(), "freshet-cli-"));
    try {
      // A store written by a first run, then damaged in the middle of its log.
      const first = cli("materialize", "examples/driver_stats/feature_repo.ts", "--data-dir", dir);
      assert.equal(first.status, 0, first.stderr);
      writeFileSync(join(dir, "state.log"), '{"format":"freshet-log","version":1,"base":0}\n{"seq":1,"c":[]}\nnot json at all\n{"seq":2,"c":[]}\n');
      const r = cli("serve", "examples/driver_stats/feature_repo.ts", "--data-dir", dir, "--port", "0");
      assert.equal(r.status, 2, r.stdout + r.stderr);
      assert.match(r.stderr, /state\.log has an unreadable line 3 .*Restore state\.log from a backup, or move it out/);
      assert.doesNotMatch(r.stdout, /serving project/, "it never started serving");
      // Written by a newer Freshet.
      writeFileSync(join(dir, "state.log"), '{"format":"freshet-log","version":99,"base":0}\n');
      const newer = cli("serve", "examples/driver_stats/feature_repo.ts", "--data-dir", dir, "--port", "0");
      assert.equal(newer.status, 2, newer.stdout + newer.stderr);
      assert.match(newer.stderr, /state\.log[\s\S]*[Uu]pgrade/);
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
    assert.match(badStore.stderr, /unknown store URL "mongodb:\/\/x": use file:/);
    // One slash is a typo, not a directory named "redis:" to write into.
    const typo = cli("serve", "examples/driver_stats/feature_repo.ts", "--store", "redis:/127.0.0.1:6379", "--data-dir", mkdtempSync(join(tmpdir(), "freshet-cli-")));
    assert.equal(typo.status, 2, typo.stdout + typo.stderr);
    assert.match(typo.stderr, /unknown store URL "redis:\/127\.0\.0\.1:6379"/);
    const badPort = cli("serve", "examples/driver_stats/feature_repo.ts", "--port", "http");
    assert.equal(badPort.status, 2);
    assert.match(badPort.stderr, /--port http is not a port number/);
  });
});
