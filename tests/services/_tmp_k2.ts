import { startKafka } from "./kafka.ts";
let t0 = Date.now();
const k = await startKafka();
console.log("up", Date.now() - t0); t0 = Date.now();
await new Promise((r) => setTimeout(r, 500));
await k.stop(); console.log("stop", Date.now() - t0);
