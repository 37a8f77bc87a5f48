// OpenAI Agents SDK JS in a browser (WebSocket transport), bundled by esbuild into agents.js.
// As its documentation configures it for OpenAI: an ephemeral `ek_…` from the app's backend
// (here `POST /v1/realtime/client_secrets`) and the endpoint URL, `…/v1/realtime?model=…`.
// It authenticates with the subprotocols `realtime`, `openai-insecure-api-key.<key>`,
// `openai-agents-sdk.<version>`. Its WebSocket transport does not open the microphone, so the
// page sends the turn's PCM with `session.sendAudio`.
//   agents.html?url=<ws url>&key=<ek_…>&voice=<voice>   → window.__compat
import { RealtimeAgent, RealtimeSession, tool } from '@openai/agents-realtime';
import { INSTRUCTIONS, MODEL, Result, chunks, speech, weatherTool } from '../turn.mjs';

const query = new URLSearchParams(location.search);
const result = new Result();
window.__compat = { finished: false, line: () => result.line() };
const finish = () => { window.__compat.finished = true; };

const getWeather = tool({
  name: weatherTool.name,
  description: weatherTool.description,
  parameters: weatherTool.parameters,
  strict: true,
  execute: async ({ city }) => `Sunny in ${city}.`,
});
const agent = new RealtimeAgent({ name: 'Assistant', instructions: INSTRUCTIONS, tools: [getWeather], voice: query.get('voice') });
const session = new RealtimeSession(agent, { transport: 'websocket', model: MODEL });
session.on('error', (event) => result.errors.push(JSON.stringify(event.error?.error ?? String(event.error)).slice(0, 300)));
session.on('audio', (event) => { result.audio_bytes += event.data.byteLength; });
session.transport.on('*', (event) => {
  result.serverEvent(event, { errors: false }); // the session's 'error' listener has them
  if (result.response_done) finish();
});
session.transport.on('connection_change', (status) => { if (status === 'disconnected') { result.notes.push('disconnected'); finish(); } });

try {
  await session.connect({ apiKey: query.get('key'), url: query.get('url') });
  for (const chunk of chunks(speech(), 100)) session.sendAudio(chunk.buffer);
} catch (error) {
  result.errors.push(`connect: ${error?.message ?? error}`.slice(0, 300));
  finish();
}
