// Vercel AI SDK 6 against the gateway: `@ai-sdk/openai` (which speaks /v1/responses) and
// `@ai-sdk/openai-compatible` (which speaks /v1/chat/completions). Usage: node aisdk.mjs CASE
import { createOpenAI } from "@ai-sdk/openai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { generateObject, generateText, stepCountIs, streamText, tool } from "ai";
import { z } from "zod";

import { MODEL, apiKey, baseURL, main, recordingFetch } from "./harness.mjs";

const openai = createOpenAI({ baseURL, apiKey, fetch: recordingFetch });
const compat = createOpenAICompatible({
  name: "gateway",
  baseURL,
  apiKey,
  fetch: recordingFetch,
  supportsStructuredOutputs: true,
});

// `.int()` alone makes zod emit minimum/maximum of -+(2**53 - 1); `age` has bounds of its own.
const Person = z.object({
  name: z.string().max(20),
  age: z.number().int().min(0).max(150),
  address: z.object({ city: z.string().max(24), floor: z.number().int() }),
});

const common = { temperature: 0, maxRetries: 0 };
const TURN_ONE = "Name one colour.";
const TURN_TWO = "Now name another colour.";

function store(on) {
  return { openai: { store: on } };
}

async function twoTurns(model, providerOptions, stream) {
  const messages = [{ role: "user", content: TURN_ONE }];
  const turns = [];
  for (const next of [TURN_TWO, null]) {
    const args = { ...common, model, messages, maxOutputTokens: 24, providerOptions };
    let turn;
    if (stream) {
      // streamText never throws: an error arrives in onError (or the stream just ends).
      const errors = [];
      const result = streamText({ ...args, onError: ({ error }) => errors.push(error) });
      const deltas = [];
      for await (const delta of result.textStream) deltas.push(delta);
      if (errors.length) throw errors[0];
      const response = await result.response;
      turn = {
        text: deltas.join(""),
        deltas: deltas.filter((d) => d.length > 0).length,
        finishReason: await result.finishReason,
        responseId: response.id,
        responseMessages: response.messages,
      };
    } else {
      const result = await generateText(args);
      turn = {
        text: result.text,
        finishReason: result.finishReason,
        responseId: result.response.id,
        responseMessages: result.response.messages,
      };
    }
    turns.push(turn);
    messages.push(...turn.responseMessages);
    if (next !== null) messages.push({ role: "user", content: next });
  }
  return { turns: turns.map(({ responseMessages, ...t }) => t) };
}

async function object(model) {
  const result = await generateObject({
    ...common,
    model,
    schema: Person,
    prompt: "Invent a person and the address where they live.",
    maxOutputTokens: 200,
  });
  return { object: result.object, finishReason: result.finishReason };
}

async function nestedTool(model, providerOptions) {
  // Step one must call the tool (its input is the nested schema); step two answers in text.
  const result = await generateText({
    ...common,
    model,
    providerOptions,
    prompt: "Record a person called Ada, aged 36, living on floor 2 in Paris.",
    maxOutputTokens: 200,
    tools: {
      record_person: tool({
        description: "Record a person and their address",
        inputSchema: Person,
        execute: async () => ({ saved: true }),
      }),
    },
    toolChoice: "required",
    prepareStep: ({ stepNumber }) => (stepNumber > 0 ? { toolChoice: "none" } : {}),
    stopWhen: stepCountIs(2),
  });
  return {
    steps: result.steps.map((s) => ({
      finishReason: s.finishReason,
      text: s.text,
      toolCalls: s.toolCalls.map((c) => ({ name: c.toolName, input: c.input })),
      toolResults: s.toolResults.map((r) => r.output),
      errors: s.content.filter((p) => p.type === "tool-error").map((p) => String(p.error)),
    })),
  };
}

await main({
  "responses-generate-store": () => twoTurns(openai(MODEL), store(true), false),
  "responses-generate-nostore": () => twoTurns(openai(MODEL), store(false), false),
  "responses-stream-store": () => twoTurns(openai(MODEL), store(true), true),
  "responses-stream-nostore": () => twoTurns(openai(MODEL), store(false), true),
  "responses-object": () => object(openai(MODEL)),
  "responses-tool-store": () => nestedTool(openai(MODEL), store(true)),
  "chat-stream-two-turn": () => twoTurns(compat(MODEL), undefined, true),
  "chat-object": () => object(compat(MODEL)),
  "chat-tool": () => nestedTool(compat(MODEL), undefined),
});
