// Checked by tsconfig.workers.json against @cloudflare/workers-types (its
// globals, as a Worker project sees them, with no DOM lib), never run: a real
// D1 binding fits the structural type the SQLite store's D1 driver takes, and
// what createWorker returns is a Worker's exported handler.
import type { D1DatabaseLike } from "../../plugins/stores/sqlite/index.ts";
import { createWorker, type WorkerEnv } from "../../adapters/workers.ts";
import repo from "../../examples/edge_push/feature_repo.ts";

declare const db: D1Database;
export const binding: D1DatabaseLike = db;
export const handler: ExportedHandler<WorkerEnv> = createWorker(repo);
