/**
 * @module
 * Dead letters as JSON Lines in one file.
 */
import { resolve } from "node:path";
import { type DeadLetter, type DeadLetterSink, FreshetError, storeUnavailable } from "../../../core/index.ts";
import { appender } from "./jsonl.ts";

/**
 * A dead-letter sink that appends each letter as one JSON line to `path`,
 * creating its directory. A write resolves only once the lines are on disk.
 *
 * @example
 * ```ts
 * const deadLetters = fileDeadLetters(".freshet/dead-letters.jsonl")
 * ```
 */
export function fileDeadLetters(path: string): DeadLetterSink {
  if (typeof path !== "string" || !path) {
    throw new FreshetError("INVALID_CONFIG", 'a path is required, e.g. fileDeadLetters(".freshet/dead-letters.jsonl")', { plugin: "file" });
  }
  const file = appender(resolve(path));
  return {
    name: "file",
    async write(letters: DeadLetter[]): Promise<void> {
      if (!letters.length) return;
      try {
        await file.append(letters.map((l) => JSON.stringify(l) + "\n").join(""));
      } catch (e) {
        throw storeUnavailable("file-dead-letters", e);
      }
    },
    close: () => file.idle(),
  };
}
