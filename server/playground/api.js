// Talking to s1-serve from the page: streamed chat completions (Server-Sent Events over
// fetch) and the server's error shape. No dependencies.

export class APIError extends Error {
  constructor(status, message, param) {
    super(message);
    this.status = status;
    this.param = param || null;
  }
}

function headers(key) {
  const h = {"Content-Type": "application/json"};
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

async function errorOf(response) {
  let message = response.statusText, param = null;
  try {
    const body = await response.json();
    if (body && body.error) { message = body.error.message; param = body.error.param; }
  } catch (_) { /* not JSON */ }
  return new APIError(response.status, message, param);
}

export async function getJSON(path, key) {
  const r = await fetch(path, {headers: headers(key)});
  if (!r.ok) throw await errorOf(r);
  return r.json();
}

// Streams one chat completion; calls onChunk(choice) for every choice object received
// (delta, finish_reason and, in the last chunk of the choice, budget) and onUsage(usage).
export async function streamChat(body, key, {onChunk, onUsage, signal}) {
  const r = await fetch("/v1/chat/completions", {
    method: "POST", headers: headers(key), signal,
    body: JSON.stringify({...body, stream: true, stream_options: {include_usage: true}}),
  });
  if (!r.ok) throw await errorOf(r);
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        const msg = JSON.parse(data);
        if (msg.error) throw new APIError(msg.error.code || 500, msg.error.message, msg.error.param);
        for (const choice of msg.choices || []) onChunk(choice);
        if (msg.usage) onUsage(msg.usage);
      }
    }
  }
}
