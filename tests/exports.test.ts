import { it } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";

const read = (f: string) => JSON.parse(readFileSync(new URL(`../${f}`, import.meta.url), "utf8"));

it("deno.json and package.json export the same entry points: TypeScript for Bun, Deno and JSR, the build of the same file for the rest", () => {
  const { "./package.json": self, ...pkg } = read("package.json").exports;
  const deno = read("deno.json").exports;
  assert.equal(self, "./package.json");
  assert.deepEqual(Object.keys(pkg), Object.keys(deno));
  for (const [entry, ts] of Object.entries(deno) as [string, string][]) {
    const built = `./dist/${ts.slice(2, -3)}`;
    assert.deepEqual(pkg[entry], { bun: ts, types: `${built}.d.ts`, default: `${built}.js` }, `package.json exports["${entry}"]`);
    assert.ok(existsSync(new URL(`../${ts}`, import.meta.url)), `${ts} exists`);
  }
  // The consumer test (tests/e2e/consumer.test.ts) checks the built files in the packed tarball.
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

it("a plugin imports only the core, its own folder and npm packages: never another plugin or an adapter", () => {
  const root = new URL("../", import.meta.url);
  const plugins = new URL("plugins/", root);
  const walk = (dir: URL): string[] =>
    readdirSync(dir, { withFileTypes: true }).flatMap((d) =>
      d.isDirectory() ? walk(new URL(`${d.name}/`, dir)) : d.name.endsWith(".ts") ? [new URL(d.name, dir).pathname] : []
    );
  const files = walk(plugins);
  assert.ok(files.length >= 10);
  const core = new URL("core/", root).pathname;
  const specifiers = (src: string) => [
    ...[...src.matchAll(/^\s*(?:import|export)\b[^;]*?\bfrom\s*["']([^"']+)["']/gm)].map((m) => m[1]),
    ...[...src.matchAll(/^\s*import\s*["']([^"']+)["']/gm)].map((m) => m[1]),
    ...[...src.matchAll(/\bimport\(\s*["']([^"']+)["']\s*\)/g)].map((m) => m[1]),
  ];
  for (const file of files) {
    const rel = file.slice(plugins.pathname.length); // e.g. stores/redis/meta.ts, sources/kafka.ts
    const [kind, name] = rel.split("/");
    // A plugin is plugins/<kind>/<name>.ts and/or the folder plugins/<kind>/<name>/.
    const own = `${plugins.pathname}${kind}/${name.replace(/\.ts$/, "")}`;
    for (const spec of specifiers(readFileSync(file, "utf8"))) {
      const where = `plugins/${rel} imports ${spec}`;
      if (!spec.startsWith(".") && !spec.startsWith("/")) {
        assert.doesNotMatch(spec, /^(@freshet\/)?freshet(\/|$)/, `${where}: a plugin reaches the others only through the core`);
        continue; // an npm package or a node: builtin
      }
      const target = new URL(spec, new URL(`file://${file}`)).pathname;
      const allowed = target.startsWith(core) || target === `${own}.ts` || target.startsWith(`${own}/`);
      assert.ok(allowed, `${where}: only the core (../core/...), its own folder and npm packages are allowed`);
    }
  }
});
