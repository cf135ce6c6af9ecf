// The official OpenAI TypeScript SDK (6.x) against the gateway, with its zod helpers.
// Usage: node openai_sdk.mjs CASE
import OpenAI from "openai";
import { zodFunction, zodResponseFormat } from "openai/helpers/zod";
import { z } from "zod";

import { MODEL, apiKey, baseURL, main, recordingFetch } from "./harness.mjs";

const client = new OpenAI({ baseURL, apiKey, fetch: recordingFetch, maxRetries: 0 });

// Strict structured outputs (what the helpers send) need every field required.
const Address = z.object({ city: z.string().max(24), floor: z.number().int() });
const Person = z.object({
  name: z.string().max(20),
  age: z.number().int().min(0).max(150),
  address: Address,
});
const common = { model: MODEL, temperature: 0 };
const INVENT = [{ role: "user", content: "Invent a person and the address where they live." }];

async function parseResponseFormat() {
  const r = await client.chat.completions.parse({
    ...common,
    messages: INVENT,
    max_tokens: 200,
    response_format: zodResponseFormat(Person, "person"),
  });
  const c = r.choices[0];
  return { finishReason: c.finish_reason, parsed: c.message.parsed, content: c.message.content };
}

async function parseFunctionThenAnswer() {
  // Turn one: the nested tool (strict, as zodFunction makes it). Turn two: its result goes
  // back and the model answers in text.
  const tools = [
    zodFunction({ name: "record_person", parameters: Person, description: "Record a person" }),
  ];
  const messages = [
    { role: "user", content: "Record a person called Ada, aged 36, living on floor 2 in Paris." },
  ];
  const first = await client.chat.completions.parse({
    ...common,
    messages,
    tools,
    tool_choice: "required",
    max_tokens: 200,
  });
  const msg = first.choices[0].message;
  const call = msg.tool_calls?.[0];
  const out = {
    finishReason: first.choices[0].finish_reason,
    name: call?.function.name,
    parsedArguments: call?.function.parsed_arguments,
  };
  if (!call) return out;
  messages.push(msg, { role: "tool", tool_call_id: call.id, content: '{"saved": true}' });
  // A plain answer: create, not parse, which raises on any answer cut by max_tokens.
  const second = await client.chat.completions.create({
    ...common,
    messages,
    tools,
    max_tokens: 32,
  });
  out.answer = second.choices[0].message.content;
  out.answerFinishReason = second.choices[0].finish_reason;
  return out;
}

async function streamParsed() {
  // A stream whose deltas assemble into the structured answer the helper parses at the end.
  const stream = client.chat.completions.stream({
    ...common,
    messages: INVENT,
    max_tokens: 200,
    response_format: zodResponseFormat(Person, "person"),
  });
  let deltas = 0;
  for await (const chunk of stream) {
    if (chunk.choices[0]?.delta?.content) deltas += 1;
  }
  const final = await stream.finalChatCompletion();
  const c = final.choices[0];
  return { deltas, finishReason: c.finish_reason, parsed: c.message.parsed };
}

async function responsesTwoTurns() {
  // Multi-turn on /v1/responses the SDK's way: previous_response_id, the second one streamed.
  const first = await client.responses.create({
    ...common,
    input: "Name one colour.",
    max_output_tokens: 24,
  });
  const stream = await client.responses.create({
    ...common,
    input: "Now name another colour.",
    previous_response_id: first.id,
    max_output_tokens: 24,
    stream: true,
  });
  let text = "";
  let deltas = 0;
  let completed = null;
  for await (const event of stream) {
    if (event.type === "response.output_text.delta") {
      text += event.delta;
      deltas += 1;
    } else if (event.type === "response.completed") {
      completed = event.response;
    }
  }
  return {
    first: { id: first.id, text: first.output_text, status: first.status },
    second: { text, deltas, status: completed?.status },
  };
}

await main({
  "parse-response-format": parseResponseFormat,
  "parse-function": parseFunctionThenAnswer,
  "stream-parsed": streamParsed,
  "responses-two-turns": responsesTwoTurns,
});
