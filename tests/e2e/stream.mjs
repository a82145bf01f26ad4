// One streaming chat completion through celgate with the official `openai` npm package.
//
//   node tests/e2e/stream.mjs BASE_URL [PROMPT]
//
// Prints the assembled reply text on the first line of stdout and, on the second, a
// JSON line with what else the stream carried ({"model", "usage", "finish_reason",
// "chunks"}) so the caller can compare it with the span Phoenix stored.
import OpenAI from "openai";

const [baseURL, prompt = "Say hello from Node."] = process.argv.slice(2);
if (!baseURL) {
  console.error("usage: node stream.mjs BASE_URL [PROMPT]");
  process.exit(2);
}

// celgate holds the upstream key; what the client sends is never forwarded.
const client = new OpenAI({ baseURL, apiKey: "sk-client-not-forwarded", maxRetries: 0, timeout: 30_000 });

const stream = await client.chat.completions.create({
  model: "gpt-4o-mini",
  messages: [{ role: "user", content: prompt }],
  stream: true,
  stream_options: { include_usage: true },
});

let text = "";
let usage = null;
let model = null;
let finishReason = null;
let chunks = 0;
for await (const chunk of stream) {
  chunks += 1;
  model = chunk.model ?? model;
  if (chunk.usage) usage = chunk.usage;
  for (const choice of chunk.choices ?? []) {
    if (choice.delta?.content) text += choice.delta.content;
    if (choice.finish_reason) finishReason = choice.finish_reason;
  }
}

console.log(text);
console.log(JSON.stringify({ model, usage, finish_reason: finishReason, chunks }));
