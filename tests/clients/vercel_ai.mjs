// The Vercel AI SDK (`ai` with `@ai-sdk/openai`, whose `openai(model)` speaks the Responses
// API with `store` on) running a multi-step tool loop through tollgate.
// Usage: node vercel_ai.mjs MODEL generate|stream   (TG_BASE, TG_KEY in the environment)
// Prints one JSON line: the final text, the steps, and what the SDK sent (item types per step).
import { createOpenAI } from '@ai-sdk/openai';
import { generateText, streamText, tool, stepCountIs } from 'ai';
import { z } from 'zod';

const [model, mode] = process.argv.slice(2);
const sent = [];
const openai = createOpenAI({
  baseURL: `${process.env.TG_BASE}/v1`,
  apiKey: process.env.TG_KEY,
  fetch: async (url, init) => {
    const body = JSON.parse(init.body);
    sent.push({
      store: body.store ?? null,
      previous_response_id: body.previous_response_id ?? null,
      types: (body.input ?? []).map((i) => i.type ?? i.role),
    });
    return fetch(url, init);
  },
});
const tools = {
  Bash: tool({
    description: 'Runs a shell command',
    inputSchema: z.object({ command: z.string() }),
    execute: async ({ command }) => `ran ${command}: vercel-tool-output`,
  }),
};
const args = { model: openai(model), tools, stopWhen: stepCountIs(4), prompt: 'CALL_TOOL please' };
let text;
let steps;
if (mode === 'stream') {
  const r = streamText(args);
  text = '';
  for await (const t of r.textStream) text += t;
  steps = await r.steps;
} else {
  const r = await generateText(args);
  text = r.text;
  steps = r.steps;
}
console.log(JSON.stringify({
  text,
  steps: steps.map((s) => ({
    finishReason: s.finishReason,
    toolCalls: s.toolCalls.map((c) => c.toolName),
    responseId: s.response?.id ?? null,
  })),
  sent,
}));
