import { memoryStore } from "../../plugins/stores/memory.ts";
import { testAggregatingStore } from "../../testing/aggregating-store.ts";

testAggregatingStore("memory", async (now) => ({ store: memoryStore({ now }) }));
