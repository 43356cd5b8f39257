/** The README's 15-line custom store, proved by freshet/testing's suite as a third-party plugin would be (and the README shows the same code). */
import { it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { testOnlineStore } from "../../testing/index.ts";
import { journalStore } from "../../examples/custom-store/journal-store.ts";

testOnlineStore("journal (the README's custom store)", async () => {
  const path = join(mkdtempSync(join(tmpdir(), "freshet-journal-")), "journal.jsonl");
  // One process owns the journal, so the suite gets no second client (reopen) for concurrent writers.
  return { store: await journalStore(path) };
});

it("the README shows the custom store as it is tested, in at most 15 lines", () => {
  const root = new URL("../../", import.meta.url).pathname;
  const code = readFileSync(join(root, "examples/custom-store/journal-store.ts"), "utf8");
  const readme = readFileSync(join(root, "README.md"), "utf8");
  const shown = code.replace('"../../mod.ts"', '"freshet"');
  assert.ok(readme.includes(shown), "README.md holds examples/custom-store/journal-store.ts (importing from freshet)");
  assert.ok(code.trim().split("\n").length <= 15);
});
