// @runtimes node
/** The freshet CLI as a user runs it: materialize with progress, describe, and config errors that say how to fix them. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileStore } from "../../plugins/stores/file/index.ts";
import repo from "../../examples/driver_stats/feature_repo.ts";

const root = new URL("../../", import.meta.url).pathname;
const cli = (...args: string[]) => spawnSync(process.execPath, ["bin/freshet.mjs", ...args], { cwd: root, encoding: "utf8", timeout: 60_000 });

describe("freshet CLI", () => {
  it("materializes the latest row per entity in a range, with progress", async () => {
    const dir = mkdtempSync(join(tmpdir(), "freshet-cli-"));
    try {
      const r = cli("materialize", "examples/driver_stats/feature_repo.ts", "--data-dir", dir, "--start", "2026-11-20T00:00:00Z", "--end", "2026-11-20T12:00:00Z");
      assert.equal(r.status, 0, r.stderr + r.stdout);
      assert.match(r.stdout + r.stderr, /materialize driver_hourly_stats: 120 rows read/);
      assert.match(r.stdout, /materialized driver_hourly_stats: 120 rows read, 60 in range, 0 invalid, 5 entities written/);
      const store = fileStore({ dir });
      const view = repo.view("driver_hourly_stats");
      const [row] = await store.read(view, ["driver_id=1001"], ["avg_daily_trips"]);
      assert.equal(row.avg_daily_trips.eventTime, Date.parse("2026-11-20T11:00:00Z"), "the last row before the end");
      await store.close?.();
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
    const badPort = cli("serve", "examples/driver_stats/feature_repo.ts", "--port", "http");
    assert.equal(badPort.status, 2);
    assert.match(badPort.stderr, /--port http is not a port number/);
  });
});
