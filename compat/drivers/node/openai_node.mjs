// The official `openai` Node SDK: `new OpenAI({ apiKey, baseURL: 'https://…/v1' })`, then
// `new OpenAIRealtimeWS({ model }, client)`. The SDK appends `/realtime` and always connects
// with `wss:` (whatever the base URL's scheme), so the gateway must serve TLS; a private CA is
// trusted with NODE_EXTRA_CA_CERTS, as Node documents.
//   node openai_node.mjs BASE_URL KEY VOICE   → one COMPAT-RESULT line
import OpenAI from 'openai';
import { OpenAIRealtimeWS } from 'openai/realtime/ws';
import { INSTRUCTIONS, MODEL, Result, TURN_MS, base64, base64Length, chunks, speech, weatherTool } from '../turn.mjs';

const [baseURL, apiKey, voice] = process.argv.slice(2);
const result = new Result();
const finish = () => {
  console.log(result.line());
  rt.close();
  process.exit(0);
};
const client = new OpenAI({ apiKey, baseURL });
const rt = new OpenAIRealtimeWS({ model: MODEL }, client);
rt.on('error', (err) => result.errors.push(`${err.message}`.slice(0, 300)));
rt.on('event', (event) => {
  result.serverEvent(event, { errors: false }); // the 'error' listener has them
  if (event.type === 'response.output_audio.delta') result.audio_bytes += base64Length(event.delta);
  if (result.response_done) finish();
});
rt.socket.on('close', (code, reason) => {
  result.notes.push(`closed ${code} ${reason}`.trim());
  finish();
});
rt.socket.on('open', () => {
  rt.send({
    type: 'session.update',
    session: { type: 'realtime', model: MODEL, instructions: INSTRUCTIONS, tools: [weatherTool], output_modalities: ['audio'], audio: { output: { voice } } },
  });
  for (const chunk of chunks(speech(), 100)) rt.send({ type: 'input_audio_buffer.append', audio: base64(chunk) });
});
setTimeout(() => {
  result.notes.push(`no response.done within ${TURN_MS / 1000} s`);
  finish();
}, TURN_MS).unref();
