/**
 * @module
 * Sizes with units, as the CLI and the Worker's bindings take them.
 */

const UNITS: Record<string, number> = { "": 1, b: 1, kb: 1e3, mb: 1e6, gb: 1e9, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3 };

/** How to write a size, for error messages. */
export const SIZE_HINT = "use bytes (5242880) or a unit, 5MB (10^6), 5MiB (2^20), 512kB, 512KiB";

/**
 * A size in bytes from `5MB` (10^6), `5MiB` (2^20), `512kB`, `1.5GiB` or
 * bare bytes (`5242880`), or undefined for text that is none of these or
 * not a positive whole number of bytes.
 *
 * @example
 * ```ts
 * parseSize("5MiB") // 5242880
 * parseSize("5MB")  // 5000000
 * ```
 */
export function parseSize(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b|b)?\s*$/i.exec(text);
  if (!m) return undefined;
  const bytes = Number(m[1]) * UNITS[(m[2] ?? "").toLowerCase()];
  return Number.isSafeInteger(bytes) && bytes > 0 ? bytes : undefined;
}
