/**
 * A writer process for the SQLite store tests (reliability scenario 5):
 * writes the rows of a JSON file into the database in batches, then prints
 * `DONE {written, stale, expired}`. The store reads only a view's name and ttl.
 *
 * env: DB (the file), ROWS (a JSON file of FeatureRows), BATCH (rows per write)
 */
import process from "node:process";
import { readFileSync } from "node:fs";
import type { FeatureRow } from "../../mod.ts";
import type { FeatureView } from "../../core/definitions.ts";
import { sqliteStore } from "../../plugins/stores/sqlite/index.ts";

const view = { name: "conf_stats", ttlMs: 3_600_000 } as FeatureView;
const rows = JSON.parse(readFileSync(process.env.ROWS!, "utf8")) as FeatureRow[];
const batch = Number(process.env.BATCH ?? 25);
const store = sqliteStore({ path: process.env.DB! });
const total = { written: 0, stale: 0, expired: 0 };
for (let i = 0; i < rows.length; i += batch) {
  const w = await store.write(view, rows.slice(i, i + batch));
  total.written += w.written;
  total.stale += w.stale;
  total.expired += w.expired;
}
await store.close();
process.stdout.write(`DONE ${JSON.stringify(total)}\n`);
