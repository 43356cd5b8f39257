// @runtimes node
// examples/purchases works as its README says: `freshet serve` on a SQLite
// store, a push with a webhook-id (retried: a duplicate), a push without one,
// and the aggregates read back by name in Feast's shape.
import { it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startCli } from "../fixtures/cli-harness.ts";

it("examples/purchases: push, retry, read the windows by name", { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "freshet-purchases-"));
  const cli = await startCli(["serve", "examples/purchases/feature_repo.ts", "--store", `sqlite:${join(dir, "purchases.db")}`, "--data-dir", dir, "--port", "0", "--host", "127.0.0.1"]);
  try {
    const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
      fetch(`http://127.0.0.1:${cli.port}${path}`, { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json", ...headers } });
    const now = new Date().toISOString().replace(/\.\d+Z$/, "Z");
    const push = { push_source_name: "purchases_push", df: { user_id: [7, 7], amount: [12.5, 30], category: ["books", "games"], ts: [now, now] } };
    assert.equal((await post("/push", push, { "webhook-id": "order-1001" })).status, 200);
    assert.equal((await (await post("/push", push, { "webhook-id": "order-1001" })).json()).status, "duplicate");
    const features = ["count_amount_600s", "sum_amount_3600s", "mean_amount_3600s", "max_amount_86400s", "last_5_categories"].map((f) => `purchase_stats:${f}`);
    const read = async () => (await (await post("/get-online-features", { entities: { user_id: [7, 8] }, features })).json());
    const got = await read();
    assert.deepEqual(got.metadata.feature_names, ["user_id", "count_amount_600s", "sum_amount_3600s", "mean_amount_3600s", "max_amount_86400s", "last_5_categories"]);
    assert.deepEqual(got.results.map((r: { values: unknown[] }) => r.values), [[7, 8], [2, 0], [42.5, null], [21.25, null], [30, null], [["books", "games"], null]]);
    assert.deepEqual(got.results[1].statuses, ["PRESENT", "PRESENT"]);
    assert.deepEqual(got.results[2].statuses, ["PRESENT", "NOT_FOUND"]);
    // Without a webhook-id, a retry is folded again (as the README warns).
    const once = { push_source_name: "purchases_push", df: { user_id: [8], amount: [5], category: ["food"], ts: [now] } };
    await post("/push", once);
    await post("/push", once);
    const after = await read();
    assert.deepEqual(after.results[1].values, [2, 2]);
  } finally {
    assert.equal(await cli.stop(), 0, cli.output());
    rmSync(dir, { recursive: true, force: true });
  }
});
