// What the JavaScript drivers share (Node and, bundled by esbuild, the browser pages): the
// spoken turn, the configuration, and the result the suite judges. See _turn.py, its Python twin.

export const RATE = 24000;
export const MODEL = 'gpt-realtime';
export const INSTRUCTIONS = 'You are a helpful voice assistant. Answer briefly.';
export const TURN_MS = 30000; // the whole session, connect to the answer's end

// PCM16 24 kHz mono: a 440 Hz tone (the "speech") then silence, for a VAD to end the turn.
export function speech(toneSeconds = 1, silenceSeconds = 1) {
  const pcm = new Int16Array(Math.round(RATE * (toneSeconds + silenceSeconds)));
  for (let i = 0; i < RATE * toneSeconds; i++) pcm[i] = Math.round(8000 * Math.sin((2 * Math.PI * 440 * i) / RATE));
  return pcm;
}

export function chunks(pcm, ms) {
  const size = (RATE * ms) / 1000;
  const out = [];
  for (let i = 0; i < pcm.length; i += size) out.push(pcm.slice(i, i + size));
  return out;
}

export function base64(int16) {
  const bytes = new Uint8Array(int16.buffer, int16.byteOffset, int16.byteLength);
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

export function base64Length(text) {
  return Math.floor((text.length * 3) / 4) - (text.endsWith('==') ? 2 : text.endsWith('=') ? 1 : 0);
}

// The voice of a GA session object (`audio.output.voice`), or of a beta one (`voice`).
export function sessionVoice(session) {
  const voice = session?.audio?.output?.voice ?? session?.voice;
  return typeof voice === 'string' ? voice : null;
}

// What the client saw; `done` once the answer ended (or the session failed).
export class Result {
  audio_bytes = 0;
  response_done = false;
  voice = null;
  session_updates = 0;
  errors = [];
  notes = [];

  serverEvent(event, { errors = true } = {}) {
    if (event?.type === 'session.updated') {
      this.session_updates += 1;
      this.voice = sessionVoice(event.session);
    } else if (event?.type === 'response.done') {
      this.response_done = true;
    } else if (event?.type === 'error' && errors) {
      this.errors.push(JSON.stringify(event.error).slice(0, 300));
    }
  }

  line() {
    const { audio_bytes, response_done, voice, session_updates, errors, notes } = this;
    return 'COMPAT-RESULT ' + JSON.stringify({ audio_bytes, response_done, voice, session_updates, errors, notes });
  }
}

// The tool every client declares, in the Realtime API's shape.
export const weatherTool = {
  type: 'function',
  name: 'get_weather',
  description: 'The weather in a city.',
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'], additionalProperties: false },
};
