import { after } from "node:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openSqliteDriver, type LocalDriverName } from "../../plugins/stores/sqlite/driver.ts";
import { sqliteStore } from "../../plugins/stores/sqlite/index.ts";
import { testAggregatingStore } from "../conformance/aggregating-store.ts";

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
const runtime = "Bun" in globalThis ? "bun" : "Deno" in globalThis ? "deno" : "node";
const auto = (await sqliteStore({ path: ":memory:" }).ready()).name as LocalDriverName;
const drivers: (LocalDriverName | undefined)[] = [undefined];
if (runtime === "node") {
  for (const name of ["libsql", "node:sqlite"] as const) {
    if (name === auto) continue;
    const db = await openSqliteDriver(":memory:", { use: name }).catch(() => undefined);
    if (db) {
      await db.close();
      drivers.push(name);
    }
  }
}

// `reopen` is a second connection to the same file: racing folds meet SQLite's lock and the fold guard.
for (const localDriver of drivers) {
  testAggregatingStore(`sqlite (${localDriver ?? `${auto}, the ${runtime} default`})`, async (now) => {
    const d = await mkdtemp(join(tmpdir(), "freshet-sqlite-agg-"));
    dirs.push(d);
    const path = join(d, "freshet.db");
    return { store: sqliteStore({ path, now, localDriver }), reopen: async () => sqliteStore({ path, now, localDriver }) };
  });
}
