import { after } from "node:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { sqliteStore } from "../../plugins/stores/sqlite/index.ts";
import { testAggregatingStore } from "../../testing/aggregating-store.ts";
import { driverLabel, drivers } from "../fixtures/sqlite-drivers.ts";

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
// `reopen` is a second connection to the same file: racing folds meet SQLite's lock and the fold guard.
for (const localDriver of drivers) {
  testAggregatingStore(driverLabel(localDriver), async (now) => {
    const d = await mkdtemp(join(tmpdir(), "freshet-sqlite-agg-"));
    dirs.push(d);
    const path = join(d, "freshet.db");
    return { store: sqliteStore({ path, now, localDriver }), reopen: async () => sqliteStore({ path, now, localDriver }) };
  });
}
