// @runtimes node
/**
 * The package as a user gets it: `npm pack` (which builds dist/ first, through
 * prepack), installed from the tarball into fresh projects that have nothing
 * else, and used from plain JavaScript on Node 20, 22 and 24, from TypeScript
 * with `tsc --init`'s settings (nodenext, and again with the bundler
 * resolution), from Deno and Bun, in a Workers bundle built by esbuild and run
 * in workerd (miniflare), and through `npx freshet serve`. A project with
 * only the tarball (a push-only user) has no SDK: each plugin that needs one
 * says which package to install.
 *
 * It runs once (`// @runtimes node`: Node 24) and starts Node 20, 22 and 24
 * itself.
 *
 * The installs use npm's shared cache with --prefer-offline, so after the
 * repository's own `npm install` they read no registry. The tarball's size
 * and file count and the push-only install size are printed as diagnostics.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { accessSync, constants, mkdirSync, mkdtempSync, readdirSync, realpathSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join, sep } from "node:path";
import process from "node:process";
import { build } from "esbuild";
import { Miniflare } from "miniflare";

const root = new URL("../../", import.meta.url).pathname;
const binOf = (name: string) => join(root, "node_modules", ".bin", name);

/** npm's environment without what `npm test` set for this repository (its prefix, its scripts' settings). */
const cleanEnv = (): Record<string, string> => Object.fromEntries(Object.entries(process.env).filter(([k, v]) => v !== undefined && !/^npm_/i.test(k))) as Record<string, string>;

/** The machine's Node (20): the first `node` on PATH outside node_modules, past the runner's link to the Node under test. */
function machineNode(): string {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    const p = dir && join(dir, "node");
    try {
      accessSync(p, constants.X_OK);
      if (!realpathSync(p).split(sep).includes("node_modules")) return realpathSync(p);
    } catch {
      // not here
    }
  }
  return process.execPath;
}

const NODES: Record<string, string> = {
  node20: machineNode(),
  node22: join(root, "node_modules", "node22", "bin", "node"),
  node24: join(root, "node_modules", "node24", "bin", "node"),
};

function run(cmd: string, args: string[], cwd: string, env: Record<string, string> = {}, timeout = 180_000) {
  const r = spawnSync(cmd, args, { cwd, encoding: "utf8", timeout, env: { ...cleanEnv(), ...env } });
  return { code: r.status, stdout: r.stdout ?? "", out: `${r.stdout ?? ""}${r.stderr ?? ""}${r.error ? String(r.error) : ""}` };
}

/** Runs it, fails on a non-zero exit, and returns its stdout. */
function mustRun(cmd: string, args: string[], cwd: string, env: Record<string, string> = {}): string {
  const r = run(cmd, args, cwd, env);
  assert.equal(r.code, 0, `${cmd} ${args.join(" ")} in ${cwd} exited ${r.code}:\n${r.out.slice(-4000)}`);
  return r.stdout;
}

function duBytes(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) n += duBytes(p);
    else if (e.isFile()) n += statSync(p).size;
  }
  return n;
}

const npmInstall = (dir: string, pkgs: string[]) => mustRun("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error", ...pkgs], dir);

/** A fresh project: package.json (no "type": "module", as `npm init` makes it) and the given files. */
function project(base: string, name: string, files: Record<string, string>): string {
  const dir = join(base, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name, version: "1.0.0", private: true }, null, 2));
  for (const [f, text] of Object.entries(files)) writeFileSync(join(dir, f), text);
  return dir;
}

// A feature repo as a user writes it, in JavaScript (for every Node) and TypeScript.
const REPO_BODY = `
const driver = entity({ name: "driver", joinKeys: ["driver_id"] });
const pushes = pushSource({ name: "driver_stats_push", timestampField: "ts" });
const stats = streamFeatureView({
  name: "driver_stats",
  entities: [driver],
  source: pushes,
  ttl: "1d",
  offline: false,
  schema: v.object({ driver_id: v.number(), conv_rate: v.number(), ts: v.number() }),
});
export default featureRepo({ project: "consumer", definitions: [driver, pushes, stats] });
`;
const REPO_IMPORTS = `import * as v from "valibot";\nimport { entity, featureRepo, pushSource, streamFeatureView } from "freshet";\n`;

// Push one row through the app on the memory store and read it back: the core, a store plugin and the push source, built.
const SMOKE = `${REPO_IMPORTS}import { createProcessor } from "freshet";
import { memoryStore } from "freshet/stores/memory";
import { pushApp } from "freshet/sources/push";
${REPO_BODY.replace("export default ", "const repo = ")}
const app = pushApp({ processor: createProcessor({ registry: repo, online: memoryStore(), deadLetters: { name: "none", async write() {} } }) });
const post = (path, body) => app.fetch(new Request("http://localhost" + path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) }));
const pushed = await post("/push", { push_source_name: "driver_stats_push", df: { driver_id: [7], conv_rate: [0.25], ts: [Date.now()] }, to: "online" });
const read = await post("/get-online-features", { entities: { driver_id: [7] }, features: ["driver_stats:conv_rate"] });
console.log(JSON.stringify({ push: pushed.status, values: (await read.json()).results[1].values }));
`;
const SMOKE_OUT = JSON.stringify({ push: 200, values: [0.25] });
// The same repo with a type in it, for the loaders that strip types.
const repoTs = `${REPO_IMPORTS}type Ttl = \`\${number}d\`;\nconst ttl: Ttl = "1d";\n${REPO_BODY.replace('ttl: "1d"', "ttl")}`;

describe("the npm package, from its tarball (issue 14)", () => {
  let base: string;
  let tgz: string;
  let pack: { size: number; unpackedSize: number; entryCount: number; files: { path: string }[] };
  let pushOnly: string;

  before(() => {
    base = mkdtempSync(join(tmpdir(), "freshet-consumer-"));
    // prepack runs `npm run build`: no manual step between a checkout and a tarball.
    const out = mustRun("npm", ["pack", "--json", "--pack-destination", base], root);
    [pack] = JSON.parse(out);
    tgz = join(base, (pack as unknown as { filename: string }).filename);
    pushOnly = project(base, "push-only", {
      "smoke.mjs": SMOKE,
      "repo.mjs": REPO_IMPORTS + REPO_BODY,
      "repo.ts": repoTs,
      "kafka-repo.mjs": `import { entity, featureRepo, kafkaSource } from "freshet";\nexport default featureRepo({ project: "k", definitions: [kafkaSource({ name: "k", kafkaBootstrapServers: "127.0.0.1:1", topic: "t", timestampField: "ts" })] });\n`,
      "sdks.mjs": `import * as v from "valibot";
import { entity, fileSource, streamFeatureView, pushSource } from "freshet";
import { redisStore } from "freshet/stores/redis";
import { readFileSource } from "freshet/sources/file";
import { avroFormat } from "freshet/formats/avro";
import { writeFileSync } from "node:fs";
const view = streamFeatureView({ name: "s", ttl: "1d", entities: [entity({ name: "d", joinKeys: ["d"] })], source: pushSource({ name: "p", timestampField: "ts" }), schema: v.object({ d: v.number(), x: v.number(), ts: v.number() }) });
const msg = async (f) => { try { await f(); return "no error"; } catch (e) { return e.message; } };
const drain = async (it) => { for await (const _ of it) {} };
writeFileSync("h.csv", "d,x,ts\\n1,2,3\\n");
writeFileSync("h.parquet", "PAR1");
console.log(JSON.stringify({
  redis: await msg(() => redisStore({ url: "redis://127.0.0.1:1" }).read(view, ["1"], ["x"])),
  csv: await msg(() => drain(readFileSource(fileSource({ name: "c", path: "h.csv", timestampField: "ts" })))),
  parquet: await msg(() => drain(readFileSource(fileSource({ name: "q", path: "h.parquet", timestampField: "ts" })))),
  avro: await msg(() => avroFormat({ schema: { type: "string" } }).decode(new Uint8Array([2, 97]))),
}));
`,
    });
    npmInstall(pushOnly, [tgz]);
  });
  after(() => {
    if (base) rmSync(base, { recursive: true, force: true });
  });

  it("ships the built code, the TypeScript sources for Bun, LICENSE and README, and no tests, bench, examples or scripts", (t) => {
    const paths = pack.files.map((f) => f.path);
    for (const f of ["LICENSE", "README.md", "package.json", "bin/freshet.mjs", "mod.ts", "dist/mod.js", "dist/mod.d.ts", "dist/adapters/cli.js", "dist/plugins/stores/redis/redis.d.ts"]) assert.ok(paths.includes(f), `${f} is in the tarball`);
    for (const p of paths) assert.doesNotMatch(p, /^(tests|bench|examples|scripts|\.ci)\/|\.test\.ts$|^tsconfig/, `${p} is not shipped`);
    t.diagnostic(`tarball: ${pack.size} bytes (${(pack.size / 1024).toFixed(0)} KiB), ${pack.entryCount} files, ${(pack.unpackedSize / 1024).toFixed(0)} KiB unpacked`);
  });

  it("installs light for a push-only user: hono, valibot, standardwebhooks and the Node server adapter, no SDK, no tsx, no esbuild", (t) => {
    const installed = readdirSync(join(pushOnly, "node_modules")).filter((n) => !n.startsWith("."));
    for (const sdk of ["kafkajs", "@aws-sdk", "@smithy", "ioredis", "@upstash", "avsc", "hyparquet", "hyparquet-writer", "csv-parse", "tsx", "esbuild", "libsql", "@libsql", "@duckdb"]) assert.ok(!installed.includes(sdk), `${sdk} is not installed`);
    for (const dep of ["freshet", "hono", "valibot", "standardwebhooks", "@hono"]) assert.ok(installed.includes(dep), `${dep} is installed`);
    const bytes = duBytes(join(pushOnly, "node_modules"));
    t.diagnostic(`push-only install: ${(bytes / 1024 / 1024).toFixed(1)} MiB in node_modules (${installed.join(", ")})`);
    assert.ok(bytes < 15 * 1024 * 1024, `node_modules is ${bytes} bytes`);
  });

  for (const [name, node] of Object.entries(NODES)) {
    it(`plain JavaScript on ${name} imports it and pushes and reads a row`, () => {
      assert.equal(mustRun(node, ["smoke.mjs"], pushOnly).trim().split("\n").pop(), SMOKE_OUT);
    });
  }

  it("each plugin without its SDK says which package to install", () => {
    const got = JSON.parse(mustRun(NODES.node24, ["sdks.mjs"], pushOnly).trim().split("\n").pop()!);
    assert.match(got.redis, /install ioredis to use the Redis store: npm install ioredis/);
    assert.match(got.csv, /install csv-parse to use CSV files/);
    assert.match(got.parquet, /install hyparquet to use Parquet files/);
    assert.match(got.avro, /install avsc to use the Avro format/);
    // Through the CLI: one line, exit 2.
    const kafka = run(NODES.node24, ["node_modules/.bin/freshet", "consume", "kafka-repo.mjs"], pushOnly);
    assert.equal(kafka.code, 2, kafka.out);
    assert.match(kafka.out, /install kafkajs to use the Kafka source: npm install kafkajs/);
  });

  it("the CLI loads a TypeScript repo with Node's type stripping on 24, and on 20 without tsx says to install it", () => {
    const described = JSON.parse(mustRun(NODES.node24, ["node_modules/.bin/freshet", "describe", "repo.ts"], pushOnly));
    assert.equal(described.project, "consumer");
    const old = run(NODES.node20, ["node_modules/.bin/freshet", "describe", "repo.ts"], pushOnly);
    assert.equal(old.code, 2, old.out);
    assert.match(old.out, /does not strip TypeScript types; install tsx/);
    assert.doesNotMatch(old.out, /\n\s+at /, "no stack trace");
  });

  it("on Node 20 with tsx installed, the CLI loads a TypeScript repo in a project without \"type\": \"module\"", () => {
    const dir = project(base, "node20-tsx", { "repo.ts": repoTs });
    npmInstall(dir, [tgz, "tsx"]);
    const described = JSON.parse(mustRun(NODES.node20, ["node_modules/.bin/freshet", "describe", "repo.ts"], dir));
    assert.equal(described.project, "consumer");
  });

  it("npx freshet serve runs from the install and answers /health", async () => {
    const child = spawn("npx", ["--no-install", "freshet", "serve", "repo.mjs", "--port", "0", "--store", "memory:"], { cwd: pushOnly, env: { ...cleanEnv(), FRESHET_DATA_DIR: join(pushOnly, "data") }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    try {
      const port = await new Promise<number>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no port in 30 s:\n${out}`)), 30_000);
        const on = (d: unknown) => {
          out += String(d);
          const m = /on http:\/\/localhost:(\d+)/.exec(out);
          if (m) (clearTimeout(timer), resolve(Number(m[1])));
        };
        child.stdout.on("data", on);
        child.stderr.on("data", on);
        child.once("exit", (code) => reject(new Error(`exited ${code}:\n${out}`)));
      });
      const res = await fetch(`http://127.0.0.1:${port}/health`);
      assert.equal(res.status, 200, await res.clone().text());
    } finally {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
    }
  });

  it("deno publish --dry-run passes (JSR: license, no slow types) and publishes only the sources", () => {
    const r = run(binOf("deno"), ["publish", "--dry-run", "--allow-dirty"], root, { NO_COLOR: "1" });
    assert.equal(r.code, 0, r.out.slice(-4000));
    const files = [...r.out.matchAll(/^\s+file:\/\/(\S+) \(/gm)].map((m) => m[1].slice(root.length));
    assert.ok(files.includes("mod.ts") && files.includes("core/index.ts") && files.includes("LICENSE"), `mod.ts, core/ and LICENSE are published: ${files.join(" ")}`);
    for (const f of files) assert.doesNotMatch(f, /^(tests|bench|examples|scripts|bin|dist|node_modules)\/|\.test\.ts$|^\.git/, `${f} is not published`);
  });

  describe("with TypeScript, Deno, Bun and a Workers bundle", () => {
    let full: string;
    const USE_TS = `${REPO_IMPORTS}import { createProcessor, type Registry, type OnlineStore } from "freshet";
import { memoryStore } from "freshet/stores/memory";
import { pushApp } from "freshet/sources/push";
import { redisStore, type RedisStoreOptions } from "freshet/stores/redis";
import { serve, type RunningServer } from "freshet/node";
import { createWorker, type WorkerEnv } from "freshet/workers";
${REPO_BODY.replace("export default ", "const repo: Registry = ")}
const online: OnlineStore = memoryStore();
const opts: RedisStoreOptions = { url: "redis://127.0.0.1:6379" };
const app = pushApp({ processor: createProcessor({ registry: repo, online, deadLetters: { name: "none", async write() {} } }) });
export const started: Promise<RunningServer> | undefined = process.env.NEVER ? serve(app) : undefined;
export const worker: (env: WorkerEnv) => Promise<Response> = (env) => createWorker(repo).fetch(new Request("http://x/health"), env);
void opts; void redisStore;
`;
    before(() => {
      full = project(base, "full", {
        "main.ts": USE_TS,
        "smoke.ts": SMOKE,
        "worker.ts": `${REPO_IMPORTS}import { createWorker } from "freshet/workers";\n${REPO_BODY.replace("export default ", "const repo = ")}\nexport default createWorker(repo);\n`,
      });
      // A TypeScript project on nodenext is an ES module project; a Redis user has ioredis (its types are in redis.d.ts).
      writeFileSync(join(full, "package.json"), JSON.stringify({ name: "full", version: "1.0.0", private: true, type: "module" }, null, 2));
      npmInstall(full, [tgz, "@types/node@22", "@upstash/redis", "ioredis"]);
    });

    for (const [label, extra] of [["nodenext (tsc --init)", {}], ["bundler", { module: "preserve", moduleResolution: "bundler" }]] as const) {
      it(`type-checks with tsc --init's settings, ${label}, our .d.ts files included`, () => {
        // tsc --init's file, less its comments; types: node, as a Node project has, and our .d.ts checked too.
        const init = {
          compilerOptions: { module: "nodenext", target: "esnext", types: ["node"], strict: true, noUncheckedIndexedAccess: true, exactOptionalPropertyTypes: true, verbatimModuleSyntax: true, isolatedModules: true, noUncheckedSideEffectImports: true, moduleDetection: "force", skipLibCheck: false, noEmit: true, ...extra },
          include: ["main.ts"],
        };
        writeFileSync(join(full, "tsconfig.json"), JSON.stringify(init));
        mustRun(binOf("tsc"), ["-p", "tsconfig.json"], full);
      });
    }

    it("Deno imports it from node_modules (the built JavaScript) and pushes and reads a row", () => {
      assert.equal(mustRun(binOf("deno"), ["run", "-A", "--no-check", "smoke.ts"], full).trim().split("\n").pop(), SMOKE_OUT);
    });

    it("Bun imports its TypeScript sources (the bun condition) and pushes and reads a row", () => {
      assert.equal(mustRun(binOf("bun"), ["smoke.ts"], full).trim().split("\n").pop(), SMOKE_OUT);
      assert.match(mustRun(binOf("bun"), ["-e", 'console.log(import.meta.resolve("freshet"))'], full), /node_modules\/freshet\/mod\.ts/);
    });

    it("bundles for Workers with esbuild (workerd conditions) and answers in workerd", async () => {
      const bundle = await build({ entryPoints: [join(full, "worker.ts")], bundle: true, format: "esm", platform: "browser", conditions: ["workerd", "worker", "browser"], target: "es2022", write: false, logLevel: "error", absWorkingDir: full });
      const script = bundle.outputFiles[0].text;
      assert.doesNotMatch(script, /from\s*["']node:(fs|net|child_process)/, "no Node-only module in the bundle");
      const mf = new Miniflare({ modules: true, script, compatibilityDate: "2025-09-01", d1Databases: ["DB"] });
      try {
        const res = await mf.dispatchFetch("http://edge/push", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ push_source_name: "driver_stats_push", df: { driver_id: [7], conv_rate: [0.5], ts: [Date.now()] }, to: "online" }) });
        assert.equal(res.status, 200, await res.text());
      } finally {
        await mf.dispose();
      }
    });
  });
});
