/** The file dead-letter sink's bounded disk: rotation by size, a number of files kept, and what retention removes reported. */
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type DeadLetter, FreshetError } from "../../mod.ts";
import { fileDeadLetters } from "../../plugins/stores/file/index.ts";
import type { DroppedDeadLetters } from "../../plugins/stores/file/dead-letters.ts";

const dirs: string[] = [];
const tempDir = async () => {
  const d = await mkdtemp(join(tmpdir(), "freshet-dlq-"));
  dirs.push(d);
  return d;
};
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

const letter = (i: number, pad = 100): DeadLetter => ({
  source: "trips",
  view: "stats",
  reason: "schema",
  message: "conv_rate: expected number",
  path: "conv_rate",
  position: { kind: "push", requestId: "r", index: i },
  payload: `{"conv_rate":"${"x".repeat(pad - String(i).length)}"}`, // the same size whatever i
  encoding: "utf8",
  at: new Date(0).toISOString(),
});
const lineBytes = (l: DeadLetter) => new TextEncoder().encode(JSON.stringify(l) + "\n").length;

/** Every letter in `path`, `path.1`, ... (the files that exist), by index. */
async function kept(dir: string, base: string): Promise<{ files: string[]; indexes: number[]; sizes: number[] }> {
  const files = (await readdir(dir)).filter((f) => f === base || f.startsWith(base + ".")).sort();
  const indexes: number[] = [];
  const sizes: number[] = [];
  for (const f of files) {
    const text = await readFile(join(dir, f), "utf8");
    sizes.push((await stat(join(dir, f))).size);
    for (const l of text.split("\n")) if (l) indexes.push((JSON.parse(l) as DeadLetter & { position: { index: number } }).position.index);
  }
  return { files, indexes: indexes.sort((a, b) => a - b), sizes };
}

describe("fileDeadLetters retention", () => {
  it("rotates by size, keeps the configured number of files, and reports what it deletes", async () => {
    const dir = await tempDir();
    const path = join(dir, "dead-letters.jsonl");
    const size = lineBytes(letter(0));
    const dropped: DroppedDeadLetters[] = [];
    const warnings: string[] = [];
    // Room for 4 letters per file, 3 files.
    const sink = fileDeadLetters(path, { maxBytes: size * 4, keep: 3, onDrop: (d) => dropped.push(d), logger: { warn: (m) => warnings.push(m) } });
    for (let i = 0; i < 30; i++) await sink.write([letter(i)]);
    await sink.close!();
    const { files, indexes, sizes } = await kept(dir, "dead-letters.jsonl");
    assert.deepEqual(files, ["dead-letters.jsonl", "dead-letters.jsonl.1", "dead-letters.jsonl.2"]);
    for (const s of sizes) assert.ok(s <= size * 4, `a file of ${s} bytes, over the limit of ${size * 4}`);
    // The newest letters are kept, the oldest deleted, and nothing in between is lost.
    const droppedLetters = dropped.reduce((a, d) => a + d.letters, 0);
    assert.equal(droppedLetters + indexes.length, 30, "every letter is either kept or counted as dropped");
    assert.deepEqual(indexes, Array.from({ length: indexes.length }, (_, i) => 30 - indexes.length + i));
    assert.equal(indexes.length, 10, "two full files and the current one");
    assert.ok(dropped.every((d) => d.path === `${path}.2` && d.letters === 4 && d.bytes === size * 4), JSON.stringify(dropped));
    // Each deletion is logged, with its count and how to keep more.
    assert.equal(warnings.length, dropped.length);
    assert.match(warnings[0], /dead-letter retention deleted .*dead-letters\.jsonl\.2: 4 dead letter\(s\), \d+ bytes \(keep 3 file\(s\) of \d+ bytes; raise --dead-letter-max-bytes or --dead-letter-keep/);
  });

  it("loses no letter under concurrent writes across rotations", async () => {
    const dir = await tempDir();
    const path = join(dir, "dlq.jsonl");
    let droppedLetters = 0;
    const sink = fileDeadLetters(path, { maxBytes: lineBytes(letter(0)) * 7, keep: 4, onDrop: (d) => (droppedLetters += d.letters), logger: { warn() {} } });
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 200; i += 2) writes.push(sink.write([letter(i), letter(i + 1)]));
    await Promise.all(writes);
    await sink.close!();
    const { files, indexes } = await kept(dir, "dlq.jsonl");
    assert.equal(files.length, 4);
    assert.equal(new Set(indexes).size, indexes.length, "no letter twice");
    assert.equal(indexes.length + droppedLetters, 200);
  });

  it("keep 1: the full file is deleted and a new one started", async () => {
    const dir = await tempDir();
    const path = join(dir, "dlq.jsonl");
    const dropped: DroppedDeadLetters[] = [];
    const sink = fileDeadLetters(path, { maxBytes: lineBytes(letter(0)) * 2, keep: 1, onDrop: (d) => dropped.push(d), logger: { warn() {} } });
    for (let i = 0; i < 5; i++) await sink.write([letter(i)]);
    await sink.close!();
    const { files, indexes } = await kept(dir, "dlq.jsonl");
    assert.deepEqual(files, ["dlq.jsonl"]);
    assert.deepEqual(indexes, [4]);
    assert.deepEqual(dropped.map((d) => d.letters), [2, 2]);
  });

  it("counts the size of a file left by a previous run", async () => {
    const dir = await tempDir();
    const path = join(dir, "dlq.jsonl");
    await writeFile(path, [letter(0), letter(1), letter(2)].map((l) => JSON.stringify(l) + "\n").join(""));
    const sink = fileDeadLetters(path, { maxBytes: lineBytes(letter(0)) * 3, keep: 2, logger: { warn() {} } });
    await sink.write([letter(3)]);
    await sink.close!();
    assert.deepEqual((await kept(dir, "dlq.jsonl")).files, ["dlq.jsonl", "dlq.jsonl.1"]);
    assert.equal((await readFile(path, "utf8")).trim().split("\n").length, 1, "the new letter started a new file");
  });

  it("a letter larger than the limit is still written, alone in its file", async () => {
    const dir = await tempDir();
    const path = join(dir, "dlq.jsonl");
    const sink = fileDeadLetters(path, { maxBytes: 100, keep: 2, logger: { warn() {} } });
    await sink.write([letter(0, 500)]);
    await sink.write([letter(1, 500)]);
    await sink.close!();
    const { files, indexes } = await kept(dir, "dlq.jsonl");
    assert.deepEqual(files, ["dlq.jsonl", "dlq.jsonl.1"]);
    assert.deepEqual(indexes, [0, 1]);
  });

  it("refuses sizes and counts that are not positive whole numbers", () => {
    for (const opts of [{ maxBytes: 0 }, { maxBytes: Number.NaN }, { maxBytes: 1.5 }, { keep: 0 }, { keep: Number.NaN }]) {
      assert.throws(() => fileDeadLetters("x.jsonl", opts), (e: unknown) => e instanceof FreshetError && e.code === "INVALID_CONFIG" && /must be a|at least 1/.test(e.message), JSON.stringify(opts));
    }
  });
});
