/**
 * @module
 * A directory of the previous file store (one JSON file per view, rewritten
 * whole on each flush), read once into the first entry of the new log:
 *
 * ```
 * <dir>/online/<view>.json   {"format":"freshet-online/1","entities":{key: entry}}
 * <dir>/meta.json            {"format":"freshet-meta/1","claims":{},"checkpoints":{},"leases":{}}
 * ```
 *
 * The old files are then renamed to `*.v1-migrated`, not deleted.
 * Idempotency claims are not carried over: they held no request
 * fingerprint, so a retry could not be told from a reused id.
 */
import { existsSync, readdirSync, readFileSync, renameSync } from "node:fs";
import { join } from "node:path";
import { FreshetError, type LocalChange } from "../../../core/index.ts";

const isObj = (x: unknown): x is Record<string, unknown> => typeof x === "object" && x !== null && !Array.isArray(x);

const onlineDir = (dir: string) => join(dir, "online");
const metaPath = (dir: string) => join(dir, "meta.json");
const viewFiles = (dir: string) => (existsSync(onlineDir(dir)) ? readdirSync(onlineDir(dir)).filter((n) => n.endsWith(".json")) : []);

/** The files of the previous file store in `dir`, if any. */
export function legacyPaths(dir: string): string[] {
  const out: string[] = [];
  if (viewFiles(dir).length) out.push(onlineDir(dir));
  if (existsSync(metaPath(dir))) out.push(metaPath(dir));
  return out;
}

function refuse(path: string, problem: string): FreshetError {
  return new FreshetError(
    "INVALID_CONFIG",
    `${path} (from the previous file store) ${problem}, so it cannot be migrated and the store will not open. Restore it from a backup, or move it out of the way to start without it.`,
    { plugin: "file", retriable: false },
  );
}

function readDoc(path: string, format: string): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw refuse(path, `is not valid JSON (${(e as Error).message})`);
  }
  if (!isObj(doc)) throw refuse(path, `does not hold a ${format} object`);
  const m = typeof doc.format === "string" ? /^(.*)\/(\d+)$/.exec(doc.format) : null;
  if (m && m[1] === format.split("/")[0] && Number(m[2]) > Number(format.split("/")[1])) {
    throw new FreshetError("INVALID_CONFIG", `${path} was written by a newer freshet (format ${doc.format}), so the store will not open. Upgrade freshet to open it.`, { plugin: "file", retriable: false });
  }
  if (doc.format !== format) throw refuse(path, `is not a ${format} file (format ${JSON.stringify(doc.format)})`);
  return doc;
}

/**
 * Reads the previous file store's state as changes, or undefined when there
 * is none. Throws, naming the file, on anything unreadable or on an entry
 * `checkChange` refuses.
 */
export function readLegacy(dir: string, checkChange: (c: unknown) => string | undefined): LocalChange[] | undefined {
  const names = viewFiles(dir);
  const hasMeta = existsSync(metaPath(dir));
  if (!names.length && !hasMeta) return undefined;
  const changes: LocalChange[] = [];
  const add = (path: string, c: LocalChange) => {
    const bad = checkChange(c);
    if (bad) throw refuse(path, `holds an invalid entry: ${bad}`);
    changes.push(c);
  };
  for (const name of names) {
    const path = join(onlineDir(dir), name);
    const doc = readDoc(path, "freshet-online/1");
    if (!isObj(doc.entities)) throw refuse(path, "has no entities object");
    let view: string;
    try {
      view = decodeURIComponent(name.slice(0, -".json".length));
    } catch {
      throw refuse(path, "has a file name that is not an encoded view name");
    }
    for (const [key, entry] of Object.entries(doc.entities)) add(path, { t: "row", view, key, entry: entry as never });
  }
  if (hasMeta) {
    const path = metaPath(dir);
    const doc = readDoc(path, "freshet-meta/1");
    if ((doc.checkpoints !== undefined && !isObj(doc.checkpoints)) || (doc.leases !== undefined && !isObj(doc.leases))) throw refuse(path, "has checkpoints or leases that are not objects");
    for (const [key, value] of Object.entries(doc.checkpoints ?? {})) add(path, { t: "cp", key, value: value as string });
    for (const [key, lease] of Object.entries(doc.leases ?? {})) add(path, { t: "lease", key, lease: lease as never });
  }
  return changes;
}

/** Renames the previous store's files out of the way (after their state is in the new log). */
export function moveLegacyAway(dir: string): void {
  for (const path of legacyPaths(dir)) {
    let to = `${path}.v1-migrated`;
    if (existsSync(to)) to = `${path}.v1-migrated-${Date.now()}`;
    renameSync(path, to);
  }
}
