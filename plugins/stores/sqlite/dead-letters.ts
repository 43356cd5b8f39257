/**
 * @module
 * Dead letters in a table of the SQLite database (D1 on Workers, where there
 * are no files), beside the online features:
 *
 * ```
 * freshet_dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, at, source, view, reason,
 *                       message, path, position JSON, payload, encoding, payload_chars)
 * ```
 *
 * A write is one transaction for all its letters (one D1 batch), so a
 * batch's letters are all there or none; the processor writes them once per
 * batch, before it acknowledges it. The table keeps the newest `maxRows`
 * letters; what the bound removes is counted in the log. No `node:` import:
 * the Workers bundle uses it.
 *
 * @example
 * ```ts
 * import { d1Driver, sqliteDeadLetters, sqliteStore } from "freshet/stores/sqlite"
 * const online = sqliteStore({ driver: d1Driver(env.DB) })
 * const deadLetters = sqliteDeadLetters(online)
 * // SELECT at, reason, message, payload FROM freshet_dead_letters ORDER BY id DESC LIMIT 20
 * ```
 */
import type { DeadLetter, DeadLetterSink, Logger } from "../../../core/contracts.ts";
import { FreshetError } from "../../../core/errors.ts";
import type { SqlDriver, SqlStatement } from "./driver.ts";
import { PLUGIN, sqliteError } from "./errors.ts";
import { DEAD_LETTERS_TABLE, openLayout } from "./layout.ts";
import type { SqliteStore } from "./store.ts";

/** Options of {@link sqliteDeadLetters}. */
export interface SqliteDeadLettersOptions {
  /** The newest letters kept; older ones are deleted by the write that passes the bound. Default 100 000. */
  maxRows?: number;
  /** A payload longer than this many characters is cut (its length is kept in `payload_chars`). Default 65 536. */
  maxPayloadChars?: number;
  /** Where a bound's deletions are reported. Default `console`. */
  logger?: Logger;
}

const INSERT = "INSERT INTO freshet_dead_letters (at, source, view, reason, message, path, position, payload, encoding, payload_chars) " +
  "SELECT r.value ->> 0, r.value ->> 1, r.value ->> 2, r.value ->> 3, r.value ->> 4, r.value ->> 5, r.value ->> 6, r.value ->> 7, r.value ->> 8, r.value ->> 9 " +
  "FROM json_each(?1) AS r ORDER BY r.key";
const TRIM = "DELETE FROM freshet_dead_letters WHERE id <= (SELECT max(id) FROM freshet_dead_letters) - ?1";

/**
 * A dead-letter sink writing to the table `freshet_dead_letters` of a
 * SQLite store's database (the same connection: give the store), or of a
 * connection of its own (give a driver, e.g. `d1Driver(env.DB)`; its layout
 * is checked as the store checks it). Closing the sink leaves the connection
 * to its owner.
 *
 * @example
 * ```ts
 * const deadLetters = sqliteDeadLetters(sqliteStore({ driver: d1Driver(env.DB) }), { maxRows: 10_000 })
 * ```
 */
export function sqliteDeadLetters(target: SqliteStore | SqlDriver, opts: SqliteDeadLettersOptions = {}): DeadLetterSink {
  const maxRows = opts.maxRows ?? 100_000;
  const maxPayload = opts.maxPayloadChars ?? 65_536;
  if (!Number.isInteger(maxRows) || maxRows < 1) throw new FreshetError("INVALID_CONFIG", `maxRows must be a positive integer, got ${maxRows}`, { plugin: PLUGIN, retriable: false });
  if (!Number.isInteger(maxPayload) || maxPayload < 0) throw new FreshetError("INVALID_CONFIG", `maxPayloadChars must be a non-negative integer, got ${maxPayload}`, { plugin: PLUGIN, retriable: false });
  const logger = opts.logger ?? console;
  let opening: Promise<SqlDriver> | undefined;
  const open = async (): Promise<SqlDriver> => {
    const db = "ready" in target ? await target.ready() : (await openLayout(target), target);
    await db.exec(DEAD_LETTERS_TABLE);
    return db;
  };
  const ready = () =>
    opening ??= open().catch((e) => {
      if (!(e instanceof FreshetError) || e.retriable) opening = undefined;
      throw e;
    });

  return {
    name: "sqlite",
    async write(letters: DeadLetter[]): Promise<void> {
      if (!letters.length) return;
      const db = await ready();
      const max = Math.max(1024, Math.floor((db.maxParamBytes ?? 8 << 20) / 2));
      const statements: SqlStatement[] = [];
      let chunk: string[] = [];
      let size = 2;
      const flush = () => {
        if (chunk.length) statements.push({ sql: INSERT, params: [`[${chunk.join(",")}]`] });
        chunk = [];
        size = 2;
      };
      for (const l of letters) {
        const payload = l.payload ?? "";
        const cut = payload.length > maxPayload;
        const item = JSON.stringify([l.at, l.source, l.view ?? null, l.reason, l.message, l.path ?? null, JSON.stringify(l.position), cut ? payload.slice(0, maxPayload) : payload, l.encoding ?? null, cut ? payload.length : null]);
        if (chunk.length && size + item.length + 1 > max) flush();
        chunk.push(item);
        size += item.length + 1;
      }
      flush();
      statements.push({ sql: TRIM, params: [maxRows] });
      const started = Date.now();
      let results;
      try {
        results = await db.batch(statements);
      } catch (e) {
        throw sqliteError(e, { target: db.target, busyTimeoutMs: db.busyTimeoutMs, waitedMs: Date.now() - started });
      }
      const removed = results[results.length - 1].changes;
      if (removed > 0) logger.warn(`[freshet] [sqlite] dead letters on ${db.target}: ${removed} oldest deleted to keep the newest ${maxRows} (maxRows)`);
    },
  };
}
