// OpenAI's browser convention with no library: `new WebSocket(url, ["realtime",
// "openai-insecure-api-key." + key])`, then Realtime events by hand. Bundled into raw.js.
//   raw.html?url=<ws url>&key=<key>&voice=<voice>   → window.__compat
import { INSTRUCTIONS, MODEL, Result, base64, base64Length, chunks, speech, weatherTool } from '../turn.mjs';

const query = new URLSearchParams(location.search);
const result = new Result();
window.__compat = { finished: false, line: () => result.line() };
const finish = () => { window.__compat.finished = true; };

const ws = new WebSocket(query.get('url'), ['realtime', `openai-insecure-api-key.${query.get('key')}`]);
const send = (event) => ws.send(JSON.stringify(event));
ws.onopen = () => {
  if (ws.protocol !== 'realtime') result.errors.push(`subprotocol selected: ${JSON.stringify(ws.protocol)}, not "realtime"`);
  send({
    type: 'session.update',
    session: { type: 'realtime', model: MODEL, instructions: INSTRUCTIONS, tools: [weatherTool], output_modalities: ['audio'], audio: { output: { voice: query.get('voice') } } },
  });
  for (const chunk of chunks(speech(), 100)) send({ type: 'input_audio_buffer.append', audio: base64(chunk) });
};
ws.onmessage = (message) => {
  const event = JSON.parse(message.data);
  result.serverEvent(event);
  if (event.type === 'response.output_audio.delta') result.audio_bytes += base64Length(event.delta);
  if (result.response_done) { ws.close(); finish(); }
};
ws.onclose = (event) => {
  if (window.__compat.finished) return;
  result.notes.push(`closed ${event.code} ${event.reason}`.trim());
  finish();
};
