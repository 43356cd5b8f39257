// Temporary: P12 phases at a smaller size (not committed).
import { runHistorical } from "./historical.ts";
const r = await runHistorical({ runs: 1, small: false, duration: 1, warmup: 0, resultsDir: "/tmp", runtimes: [] as never });
console.log(JSON.stringify(r.failures), r.notes.join("\n"));
