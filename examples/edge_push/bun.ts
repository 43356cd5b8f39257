/** The same receiver on Bun: `bun examples/edge_push/bun.ts`. */
import process from "node:process";
import { createWorker } from "../../adapters/workers.ts";
import repo from "./feature_repo.ts";

const worker = createWorker(repo);
export default { port: Number(process.env.PORT ?? 8080), fetch: (req: Request) => worker.fetch(req, process.env) };
