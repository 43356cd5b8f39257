/**
 * @module
 * The offline log: one JSON Lines file per view, for training data.
 */
import { open } from "node:fs/promises";
import { join, resolve } from "node:path";
import {
  entityKeyOf,
  type FeatureRow,
  type FeatureView,
  FreshetError,
  type OfflineStore,
  parseEntityKey,
  parseEventTime,
  type Row,
  storeUnavailable,
  toIso,
} from "../../../core/index.ts";
import { type Appender, appender } from "./jsonl.ts";

/** Options of {@link fileOffline}. */
export interface FileOfflineOptions {
  /** The directory; the log of a view goes to `<dir>/offline/<view>.jsonl`. */
  dir: string;
  /** Rows per chunk yielded by `read`. Default 1000. */
  chunkSize?: number;
}

/** Reads a file as blocks of whole lines (without their line breaks), without loading it all. */
async function* readLineBlocks(path: string): AsyncGenerator<string[]> {
  let fh;
  try {
    fh = await open(path, "r");
  } catch (e) {
    if ((e as { code?: string })?.code === "ENOENT") return;
    throw e;
  }
  try {
    const buf = new Uint8Array(1 << 16);
    const decoder = new TextDecoder();
    let rest = "";
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      const lines = (rest + decoder.decode(buf.subarray(0, bytesRead), { stream: true })).split("\n");
      rest = lines.pop()!;
      if (lines.length) yield lines;
    }
    rest += decoder.decode();
    if (rest) yield [rest];
  } finally {
    await fh.close();
  }
}

/** Turns a join key's string back into a number when the view's schema says it is one. */
function joinKeyValues(view: FeatureView, entityKey: string): Row {
  const out: Row = parseEntityKey(entityKey);
  for (const k of view.joinKeys) {
    const type = (view.schema.entries?.[k] as { type?: string } | undefined)?.type;
    const s = out[k];
    if (type === "number" && typeof s === "string" && s !== "" && String(Number(s)) === s) out[k] = Number(s);
  }
  return out;
}

/**
 * An offline store of JSON Lines, one file per view
 * (`<dir>/offline/<view>.jsonl`). Each row is one object: the join keys,
 * the feature values, `event_timestamp` and `created` (ISO 8601; `created`
 * is the row's created time, or the time it was appended). An append
 * resolves once the lines are on disk. `read` streams a file back in
 * chunks, skipping a torn last line.
 *
 * @example
 * ```ts
 * const log = fileOffline({ dir: ".freshet" })
 * for await (const rows of log.read(view, { start: Date.parse("2024-01-01") })) console.log(rows.length)
 * ```
 */
export function fileOffline(opts: FileOfflineOptions): OfflineStore {
  if (!opts || typeof opts.dir !== "string" || !opts.dir) {
    throw new FreshetError("INVALID_CONFIG", 'dir is required, e.g. fileOffline({ dir: ".freshet" })', { plugin: "file" });
  }
  const root = join(resolve(opts.dir), "offline");
  const chunkSize = opts.chunkSize ?? 1000;
  const files = new Map<string, Appender>();
  const pathOf = (view: FeatureView) => join(root, `${encodeURIComponent(view.name)}.jsonl`);
  return {
    name: "file-offline",
    async append(view, rows) {
      if (!rows.length) return;
      const created = toIso(Date.now());
      let text = "";
      for (const r of rows) {
        text += JSON.stringify({
          ...joinKeyValues(view, r.entityKey),
          ...r.values,
          event_timestamp: toIso(r.eventTime),
          created: r.createdTime !== undefined ? toIso(r.createdTime) : created,
        }) + "\n";
      }
      const path = pathOf(view);
      let file = files.get(path);
      if (!file) files.set(path, file = appender(path));
      try {
        await file.append(text);
      } catch (e) {
        throw storeUnavailable("file-offline", e, view.name);
      }
    },
    async *read(view, range) {
      const start = range.start ?? -Infinity;
      const end = range.end ?? Infinity;
      const known = new Set([...view.joinKeys, "event_timestamp", "created"]);
      let chunk: FeatureRow[] = [];
      for await (const lines of readLineBlocks(pathOf(view))) {
        for (const line of lines) {
          if (!line.trim()) continue;
          let obj: Row;
          try {
            obj = JSON.parse(line);
          } catch {
            continue; // a torn line from a crash
          }
          const eventTime = parseEventTime(obj.event_timestamp);
          if (eventTime === undefined || eventTime < start || eventTime >= end) continue;
          const ek = entityKeyOf(view.joinKeys, obj);
          if ("missing" in ek) continue;
          const values: Row = {};
          for (const [k, v] of Object.entries(obj)) if (!known.has(k)) values[k] = v;
          chunk.push({ entityKey: ek.key, values, eventTime, createdTime: parseEventTime(obj.created) });
          if (chunk.length >= chunkSize) {
            yield chunk;
            chunk = [];
          }
        }
      }
      if (chunk.length) yield chunk;
    },
    async close() {
      for (const f of files.values()) await f.idle();
    },
  };
}
