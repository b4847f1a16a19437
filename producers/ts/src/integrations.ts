/**
 * Usage from provider responses (objects or plain JSON; no provider SDK needed), counting
 * each token once: nodemeter's inputTokens exclude cache reads (docs/wire.md, Meters).
 */
import { InvalidUsageError } from "./errors";
import type { Meters } from "./wire";

function fieldOf(obj: unknown, name: string): unknown {
  if (obj === null || typeof obj !== "object") return undefined;
  return (obj as Record<string, unknown>)[name];
}

function count(obj: unknown, name: string): number {
  const value = fieldOf(obj, name);
  if (value === undefined || value === null) return 0;
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new InvalidUsageError(`usage field ${name} must be an integer, got ${JSON.stringify(value)}`,
      "invalid_quantity");
  }
  if (value < 0) throw new InvalidUsageError(`usage field ${name} must not be negative, got ${value}`, "negative_quantity");
  return value;
}

function usageOf(response: unknown): unknown {
  const usage = fieldOf(response, "usage") ?? response;
  if (usage === null || usage === undefined) throw new InvalidUsageError("response has no usage", "missing_usage");
  return usage;
}

/** The response's model name, if it has one. */
export function modelOf(response: unknown): string | undefined {
  const model = fieldOf(response, "model");
  return typeof model === "string" && model ? model : undefined;
}

/**
 * OpenAI (Chat Completions or Responses API): prompt tokens INCLUDE the cached ones,
 * so input = prompt - cached, cachedInput = cached. Reasoning tokens are already in
 * the completion tokens. One response is one API call.
 */
export function usageFromOpenAI(response: unknown): Meters {
  const usage = usageOf(response);
  let prompt: number, output: number, cached: number;
  if (fieldOf(usage, "prompt_tokens") != null || fieldOf(usage, "completion_tokens") != null) {
    prompt = count(usage, "prompt_tokens");
    output = count(usage, "completion_tokens");
    cached = count(fieldOf(usage, "prompt_tokens_details"), "cached_tokens");
  } else {
    prompt = count(usage, "input_tokens");
    output = count(usage, "output_tokens");
    cached = count(fieldOf(usage, "input_tokens_details"), "cached_tokens");
  }
  if (cached > prompt) {
    throw new InvalidUsageError(`cached_tokens (${cached}) exceed prompt tokens (${prompt})`, "invalid_quantity");
  }
  return { inputTokens: prompt - cached, outputTokens: output, cachedInputTokens: cached, apiCalls: 1 };
}

/**
 * Anthropic (Messages API): input_tokens EXCLUDE cache reads and writes, which come as
 * cache_read_input_tokens and cache_creation_input_tokens: each is its own meter.
 */
export function usageFromAnthropic(response: unknown): Meters {
  const usage = usageOf(response);
  return {
    inputTokens: count(usage, "input_tokens"),
    outputTokens: count(usage, "output_tokens"),
    cachedInputTokens: count(usage, "cache_read_input_tokens"),
    cacheWriteTokens: count(usage, "cache_creation_input_tokens"),
    apiCalls: 1,
  };
}
