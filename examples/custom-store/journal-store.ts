import { appendFile, readFile } from "node:fs/promises";
import { applyLocalChange, emptyLocalState, localEngine, type OnlineStore } from "../../mod.ts";

/** An online store that journals every change to one file and replays the journal when it opens. */
export async function journalStore(path: string): Promise<OnlineStore> {
  const state = emptyLocalState();
  const text = await readFile(path, "utf8").catch(() => "");
  for (const line of text.split("\n")) if (line) applyLocalChange(state, JSON.parse(line));
  const engine = localEngine({
    state, now: Date.now, plugin: "journal",
    persist: (changes) => appendFile(path, changes.map((c) => JSON.stringify(c) + "\n").join("")),
  });
  return { name: "journal", meta: engine.meta, write: (view, rows, commit) => engine.write(view, rows, commit), read: async (view, keys, features) => engine.read(view, keys, features) };
}
