/** The Worker's bindings are validated like the CLI's flags: a size with units, or a startup error, never a removed limit. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { FreshetError } from "../../mod.ts";
import { createWorker } from "../../adapters/workers.ts";
import { memoryDeadLetters, memoryStore } from "../../plugins/stores/memory.ts";
import repo from "../../examples/edge_push/feature_repo.ts";

const worker = () => createWorker(repo, { store: () => memoryStore(), deadLetters: () => memoryDeadLetters() });
const push = (bytes: number) =>
  new Request("http://localhost/push", { method: "POST", headers: { "content-type": "application/json", authorization: "Bearer w-token" }, body: JSON.stringify({ push_source_name: "x", pad: "x".repeat(bytes) }) });

describe("Worker bindings", () => {
  it("MAX_BODY_BYTES takes units: 1kB refuses a 2 KB push with 413", async () => {
    const res = await worker().fetch(push(2000), { MAX_BODY_BYTES: "1kB", WRITE_TOKEN: "w-token" });
    assert.equal(res.status, 413);
    assert.match((await res.json()).error.message, /larger than 1000 bytes/);
    const ok = await worker().fetch(push(2000), { MAX_BODY_BYTES: "1MiB", WRITE_TOKEN: "w-token" });
    assert.equal(ok.status, 422, "within the limit: the body is read (and refused for its unknown source)");
  });

  it("a MAX_BODY_BYTES that is not a size fails loudly instead of removing the limit", async () => {
    await assert.rejects(async () => worker().fetch(push(10), { MAX_BODY_BYTES: "5XB" }), (e: unknown) => e instanceof FreshetError && e.code === "INVALID_CONFIG" && /MAX_BODY_BYTES "5XB" is not a size: use bytes/.test(e.message));
  });

  it("an empty WRITE_TOKEN fails loudly instead of turning authentication off", async () => {
    await assert.rejects(async () => worker().fetch(push(10), { WRITE_TOKEN: "" }), (e: unknown) => e instanceof FreshetError && e.code === "INVALID_CONFIG" && /writeToken is empty/.test(e.message));
  });
});
