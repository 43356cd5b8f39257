import { it } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";

const read = (f: string) => JSON.parse(readFileSync(new URL(`../${f}`, import.meta.url), "utf8"));

it("deno.json and package.json export the same entry points, and each exists", () => {
  const pkg = read("package.json").exports;
  const deno = read("deno.json").exports;
  assert.deepEqual(deno, pkg);
  for (const file of Object.values(pkg) as string[]) assert.ok(existsSync(new URL(`../${file}`, import.meta.url)), `${file} exists`);
});

it("the core imports no plugin, adapter, SDK or runtime global", () => {
  const dir = new URL("../core/", import.meta.url);
  const files = readdirSync(dir).filter((f) => f.endsWith(".ts")).map((f) => f.slice(0, -3));
  assert.ok(files.length >= 10);
  for (const f of files) {
    const src = readFileSync(new URL(`${f}.ts`, dir), "utf8");
    for (const m of src.matchAll(/^(?:import|export)[^\n;]*from\s+"([^"]+)"/gm)) assert.ok(m[1].startsWith("./"), `core/${f}.ts imports ${m[1]}`);
    assert.doesNotMatch(src, /\b(Deno|Bun)\.\w|\bprocess\.(env|on|exit|argv)\b|\bBuffer\.|\brequire\(/, `core/${f}.ts uses a runtime global`);
  }
});
