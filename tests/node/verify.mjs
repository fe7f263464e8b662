// Verifies one forwarded webhook with a provider's own npm library.
// stdin: {"provider": "linear", "secret": "...", "body_b64": "...", "headers": {...}}
// stdout: {"ok": true} or {"ok": false, "error": "..."}
import { LinearWebhookClient } from "@linear/sdk/webhooks";

const input = JSON.parse(await new Promise((resolve) => {
  let text = "";
  process.stdin.on("data", (chunk) => (text += chunk));
  process.stdin.on("end", () => resolve(text));
}));
const body = Buffer.from(input.body_b64, "base64");
const header = (name) => input.headers[name.toLowerCase()];
try {
  if (input.provider !== "linear") throw new Error(`no library for ${input.provider}`);
  new LinearWebhookClient(input.secret).verify(body, header("Linear-Signature"));
  console.log(JSON.stringify({ ok: true }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, error: String(error.message) }));
}
