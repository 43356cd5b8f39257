/**
 * @module
 * The human-readable store: online values, an offline log and dead letters in plain
 * files under one directory.
 *
 * ```
 * <dir>/freshet.lock          the process that holds the directory (pid, host, since)
 * <dir>/state.snapshot        the online state (rows, idempotency keys, checkpoints,
 *                             watermarks, leases) as of a log entry, one change per line
 * <dir>/state.log             the changes after the snapshot, one line per group commit
 * <dir>/offline/<view>/date=YYYY-MM-DD/<writer>-N.parquet
 *                             the offline log, in the Hive layout (see offline.ts)
 * ```
 *
 * @example
 * ```ts
 * import { fileDeadLetters, fileOffline, fileStore } from "freshet/stores/file"
 * const online = fileStore({ dir: "./data" })
 * const offline = fileOffline({ dir: "./data" })
 * const deadLetters = fileDeadLetters("./data/dead-letters.jsonl")
 * ```
 */
export { type FileStore, fileStore, type FileStoreOptions } from "./online.ts";
export { type FileOffline, fileOffline, type FileOfflineOptions, partitionOf } from "./offline.ts";
export { duckdbAsOf, type DuckModule, loadDuckDB } from "./duckdb.ts";
export { DEFAULT_DEAD_LETTER_KEEP, DEFAULT_DEAD_LETTER_MAX_BYTES, type DroppedDeadLetters, fileDeadLetters, type FileDeadLettersOptions, readDeadLetterFile } from "./dead-letters.ts";
