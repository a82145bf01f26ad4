// One chat completion through celgate with the official `openai` npm package and a
// given client key, for test_client_keys.py.
//
//   node tests/e2e/client_keys.mjs BASE_URL KEY
//
// Prints `ok` when the call succeeds, else the error's class name and HTTP status
// (`AuthenticationError 401`).
import OpenAI from "openai";

const [baseURL, apiKey] = process.argv.slice(2);
if (!baseURL || !apiKey) {
  console.error("usage: node client_keys.mjs BASE_URL KEY");
  process.exit(2);
}

const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 30_000 });
try {
  const r = await client.chat.completions.create({
    model: "gpt-4o-mini",
    messages: [{ role: "user", content: "hello from node" }],
  });
  console.log(r.choices[0]?.message?.content ? "ok" : "empty reply");
} catch (e) {
  console.log(`${e.constructor.name} ${e.status ?? ""}`.trim());
}
