// @runtimes node
// `npm start` as a container's command: SIGTERM goes to npm alone, and the
// server under it must drain and exit with it, leaving nothing listening.
import { it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { root } from "../fixtures/cli-harness.ts";

/** Every process under `pid`, children first. */
function descendants(pid: number): number[] {
  let kids: number[] = [];
  try {
    kids = execFileSync("ps", ["-o", "pid=", "--ppid", String(pid)], { encoding: "utf8" }).split("\n").map((s) => Number(s.trim())).filter(Boolean);
  } catch {
    // ps exits 1 when there are none.
  }
  return kids.flatMap((k) => [...descendants(k), k]);
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const listening = (port: number) =>
  new Promise<boolean>((done) => {
    const s = connect(port, "127.0.0.1");
    s.once("connect", () => (s.destroy(), done(true)));
    s.once("error", () => done(false));
  });

it("npm start stops cleanly on SIGTERM sent to npm alone: the server drains, exits, and its port closes", async () => {
  const dir = mkdtempSync(join(tmpdir(), "freshet-npm-start-"));
  const npm = spawn("npm", ["start"], { cwd: root, detached: true, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, FRESHET_PORT: "0", FRESHET_DATA_DIR: dir } });
  let out = "";
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`npm start printed no port in 60 s:\n${out}`)), 60_000);
    const on = (d: unknown) => {
      out += String(d);
      const m = /on http:\/\/localhost:(\d+)/.exec(out);
      if (m) (clearTimeout(timer), resolve(Number(m[1])));
    };
    npm.stdout.on("data", on);
    npm.stderr.on("data", on);
  });
  const procs = descendants(npm.pid!);
  try {
    assert.ok(await listening(port), "the server listens");
    const exited = new Promise<number | null>((done) => npm.once("exit", (code) => done(code)));
    process.kill(npm.pid!, "SIGTERM");
    assert.equal(await exited, 0, `npm exits 0:\n${out}`);
    const deadline = Date.now() + 10_000;
    while (procs.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(procs.filter(alive), [], `every process under npm is gone (${procs.join(", ")}):\n${out}`);
    assert.equal(await listening(port), false, "nothing listens on the port any more");
    assert.match(out, /SIGTERM: finishing in-flight work, then stopping/, "the server ran its graceful stop");
  } finally {
    for (const p of procs) if (alive(p)) process.kill(p, "SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});
