import { memoryStore } from "../../plugins/stores/memory.ts";
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { conformanceRepo, testOnlineStore } from "../../testing/online-store.ts";

testOnlineStore("memory", async () => {
  let offset = 0;
  const store = memoryStore({ now: () => Date.now() + offset });
  return { store, advance: async (ms) => void (offset += ms) };
});

describe("memoryStore idempotency metadata", () => {
  it("purges expired idempotency keys as writes go on, so unique ids do not pile up", async () => {
    let offset = 0;
    const store = memoryStore({ now: () => Date.now() + offset });
    const view = conformanceRepo.view("conf_stats");
    const row = (i: number) => ({ entityKey: `driver_id=${i}`, eventTime: Date.now(), values: { conv_rate: 0.5, trips: i } });
    for (let i = 0; i < 500; i++) await store.write(view, [row(i)], { done: { key: `push:p:${i}`, fingerprint: "f", ttlMs: 1000 } });
    for (let i = 0; i < 200; i++) await store.meta.begin(`pending-${i}`, "f", 1000);
    assert.equal(store.idempotencyKeys, 700);
    offset = 5000;
    for (let i = 0; i < 50 && store.idempotencyKeys > 0; i++) await store.write(view, [row(i)]);
    assert.equal(store.idempotencyKeys, 0, "every expired key was swept");
    // A live key is kept.
    await store.write(view, [row(1)], { done: { key: "push:p:live", fingerprint: "f", ttlMs: 60_000 } });
    for (let i = 0; i < 20; i++) await store.write(view, [row(i)]);
    assert.equal(store.idempotencyKeys, 1);
    assert.equal((await store.meta.begin("push:p:live", "f", 1000)).state, "done");
  });
});
