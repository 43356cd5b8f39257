/** The Worker of P3 on workerd (bench/workerd.ts): the bench repo through `createWorker`, on the Upstash store. */
import { createWorker } from "../adapters/workers.ts";
import { workerRepo } from "./feature_repo.ts";

export default createWorker(workerRepo);
