/**
 * @module
 * `GET /openapi.json`: an OpenAPI 3.1 document of the HTTP routes, whose
 * request and response bodies are converted from the valibot schemas the
 * app validates with (`@valibot/to-json-schema`), never written twice.
 */
import { toJsonSchema } from "@valibot/to-json-schema";
import type * as v from "valibot";
import { ErrorResponse, GetOnlineFeaturesRequest, GetOnlineFeaturesResponse, HealthResponse, PushRequest, PushResponse, StatusResponse } from "./schemas.ts";

type Scope = "read" | "write" | "open";

interface RouteDoc {
  summary: string;
  scope: Scope;
  request?: v.GenericSchema;
  /** The success answer's JSON schema; or `media`, the type of an answer without one. */
  response?: v.GenericSchema;
  media?: string;
  /** Error statuses this route can answer, besides 500. */
  errors: number[];
  headers?: { name: string; description: string }[];
}

/** Every route of the app, by `METHOD path`. A test checks this against the app's routes. */
export const ROUTES: Record<string, RouteDoc> = {
  "POST /push": {
    summary: "Push rows through a push source (Feast's push)",
    scope: "write",
    request: PushRequest,
    response: PushResponse,
    errors: [400, 401, 409, 413, 415, 421, 422, 503],
    headers: [
      { name: "webhook-id", description: "Idempotency key (Standard Webhooks): a retry with the same id and body has one effect." },
      { name: "webhook-timestamp", description: "Standard Webhooks signature timestamp (with a webhook secret)." },
      { name: "webhook-signature", description: "Standard Webhooks signature (with a webhook secret)." },
    ],
  },
  "POST /get-online-features": {
    summary: "Read online features (Feast's get-online-features)",
    scope: "read",
    request: GetOnlineFeaturesRequest,
    response: GetOnlineFeaturesResponse,
    errors: [400, 401, 413, 415, 421, 422, 503],
  },
  "GET /health": { summary: "Liveness and the store's reachability (always open)", scope: "open", response: HealthResponse, errors: [503] },
  "GET /metrics": { summary: "Prometheus metrics", scope: "read", media: "text/plain; version=0.0.4", errors: [401, 421] },
  "GET /registry": { summary: "The feature repo's definitions, without secrets", scope: "read", media: "application/json", errors: [401, 421] },
  "GET /status": { summary: "What the status page shows: per view the records by outcome, freshness, source lag and the latest dead letters", scope: "read", response: StatusResponse, errors: [401, 421] },
  "GET /": { summary: "The status page: HTML without data, which renders GET /status (with the read token, asked for when the server has one) and refreshes itself", scope: "open", media: "text/html", errors: [421] },
  "GET /openapi.json": { summary: "This document", scope: "open", media: "application/json", errors: [] },
};

const json = (schema: v.GenericSchema) => toJsonSchema(schema, { target: "draft-2020-12", typeMode: "input", errorMode: "ignore" }) as Record<string, unknown>;

/**
 * The OpenAPI document for an app; `auth` says which token schemes apply.
 *
 * @example
 * ```ts
 * const doc = openApiDocument({ project: "driver_stats", readToken: true, writeToken: false, webhook: true })
 * ```
 */
export function openApiDocument(opts: { project: string; readToken: boolean; writeToken: boolean; webhook: boolean }): Record<string, unknown> {
  const schemas: Record<string, unknown> = {};
  const ref = (name: string, schema: v.GenericSchema) => {
    if (!schemas[name]) {
      const { $schema: _, ...rest } = json(schema);
      schemas[name] = rest;
    }
    return { $ref: `#/components/schemas/${name}` };
  };
  const nameOf = (schema: v.GenericSchema, fallback: string) =>
    ((schema as { pipe?: { type: string; title?: string }[] }).pipe?.find((p) => p.type === "title")?.title) ?? fallback;
  const paths: Record<string, Record<string, unknown>> = {};
  for (const [key, r] of Object.entries(ROUTES)) {
    const [method, path] = key.split(" ");
    const op: Record<string, unknown> = { summary: r.summary, operationId: `${method.toLowerCase()}${path.replace(/[^a-z]+(.)?/gi, (_, c: string | undefined) => (c ?? "").toUpperCase()) || "Root"}` };
    const secured = (r.scope === "read" && opts.readToken) || (r.scope === "write" && (opts.writeToken || opts.webhook));
    op.security = secured ? [r.scope === "write" && !opts.writeToken ? {} : { bearer: [] }] : [];
    if (r.scope === "write" && opts.webhook) op.description = "Needs the write token or a valid Standard Webhooks signature.";
    if (r.headers) op.parameters = r.headers.map((h) => ({ name: h.name, in: "header", required: false, description: h.description, schema: { type: "string" } }));
    if (r.request) op.requestBody = { required: true, content: { "application/json": { schema: ref(nameOf(r.request, `${op.operationId}Request`), r.request) } } };
    const ok = r.response
      ? { content: { "application/json": { schema: ref(nameOf(r.response, `${op.operationId}Response`), r.response) } } }
      : { content: { [r.media!]: { schema: r.media === "application/json" ? { type: "object" } : { type: "string" } } } };
    const responses: Record<string, unknown> = { 200: { description: "OK", ...ok } };
    for (const status of [...r.errors, 500]) responses[status] = { description: STATUS_TEXT[status], content: { "application/json": { schema: ref("ErrorResponse", ErrorResponse) } } };
    op.responses = responses;
    (paths[path] ??= {})[method.toLowerCase()] = op;
  }
  return {
    openapi: "3.1.0",
    info: { title: `Freshet: ${opts.project}`, version: "1", description: "Feast-compatible push and online feature serving." },
    paths,
    components: { schemas, securitySchemes: { bearer: { type: "http", scheme: "bearer" } } },
  };
}

const STATUS_TEXT: Record<number, string> = {
  400: "Malformed JSON or an empty body",
  401: "A missing or wrong token, or a bad signature",
  409: "The same webhook-id is being processed (Retry-After)",
  413: "The body is over the limit",
  415: "The content type is not JSON",
  421: "The Host is not a loopback name (DNS rebinding protection)",
  422: "A body of the wrong shape, or rows that fail the schema (the error names the field)",
  500: "Internal error (its request_id is in the server log)",
  503: "A store is down: retry (Retry-After)",
};
