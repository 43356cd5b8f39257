/**
 * @module
 * The SQLite store: one database file shared by `serve`, `consume` and
 * `materialize` (bun:sqlite on Bun, node:sqlite on Deno and Node 22.13+,
 * the npm package libsql on Node 20), or a D1 database on Workers.
 *
 * @example
 * ```ts
 * import { d1Driver, sqliteDeadLetters, sqliteStore } from "freshet/stores/sqlite"
 * const local = sqliteStore({ path: "./data/freshet.db" })
 * const edge = sqliteStore({ driver: d1Driver(env.DB) })
 * const deadLetters = sqliteDeadLetters(edge) // a table beside the features
 * ```
 */
export { type SqliteStore, sqliteStore, type SqliteStoreOptions } from "./store.ts";
export { sqliteDeadLetters, type SqliteDeadLettersOptions } from "./dead-letters.ts";
export { type D1DatabaseLike, d1Driver, type D1DriverOptions, type D1PreparedStatementLike, type D1ResultLike } from "./d1.ts";
export type { LocalDriverName, SqlDriver, SqlResult, SqlRow, SqlStatement, SqlValue } from "./driver.ts";
