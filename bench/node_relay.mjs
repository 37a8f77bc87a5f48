// The Node.js `ws` pass-through relay baseline of benchmarks.md, in a process of its own.
//
//     node bench/node_relay.mjs UPSTREAM_URL MODULES_DIR      # relay: prints its ws:// URL
//     node bench/node_relay.mjs --check MODULES_DIR           # which native helpers ws uses
//
// The stack of OpenAI's own relay examples: npm `ws` with its native helpers `bufferutil`
// (masking) and `utf-8-validate`, installed in MODULES_DIR/node_modules by the bench
// (bench/node_baseline.py). Every client WebSocket (any path, any query) gets one upstream
// WebSocket to UPSTREAM_URL; every message is forwarded untouched both ways (text stays text,
// binary stays binary), and when one side closes the other is closed with the same code.
// Per-message deflate is off on both sides. Messages a client sends before its upstream is open
// are queued and sent, in order, once it opens.
//
// It refuses to start when the native helpers do not load (the measurement would then be of
// another stack): on stderr it says which it uses, on stdout it prints its URL, then it serves
// until SIGTERM.

import { createRequire } from 'node:module';
import path from 'node:path';

const API_KEY = 'sk-bench-0123456789abcdef'; // bench/_procs.py API_KEY

function helpers(modulesDir) {
  // What ws actually uses, from the same module instances ws loads.
  const require = createRequire(path.join(path.resolve(modulesDir), 'package.json'));
  const wsDir = path.dirname(require.resolve('ws/package.json'));
  const version = (name) => require(`${name}/package.json`).version;
  const gyp = require('node-gyp-build');
  const native = {};
  for (const name of ['bufferutil', 'utf-8-validate']) {
    const dir = path.dirname(require.resolve(`${name}/package.json`));
    try {
      native[name] = gyp.path(dir); // throws when no prebuilt or compiled binary fits
      require(native[name]);
    } catch (err) {
      native[name] = null;
      native[`${name}_error`] = String(err.message || err).split('\n')[0];
    }
  }
  const bufferUtil = require(path.join(wsDir, 'lib', 'buffer-util.js'));
  const validation = require(path.join(wsDir, 'lib', 'validation.js'));
  const maskSource = bufferUtil.mask.toString();
  const utf8Source = validation.isValidUTF8.toString();
  const masking = maskSource.includes('websocketMask')
    ? "node's http.websocketMask"
    : maskSource.includes('bufferUtil.mask')
      ? 'bufferutil'
      : 'JavaScript';
  const utf8 = utf8Source.includes('isUtf8(')
    ? "node's buffer.isUtf8"
    : utf8Source.includes('isValidUTF8(buf)')
      ? 'utf-8-validate'
      : 'JavaScript';
  return {
    node: process.version,
    ws: version('ws'),
    bufferutil: version('bufferutil'),
    'utf-8-validate': version('utf-8-validate'),
    'bufferutil native': native.bufferutil,
    'utf-8-validate native': native['utf-8-validate'],
    errors: [native.bufferutil_error, native['utf-8-validate_error']].filter(Boolean),
    'ws masks with': masking,
    'ws validates UTF-8 with': utf8,
    require,
  };
}

function describe(h) {
  const { require: _require, ...shown } = h;
  return JSON.stringify(shown);
}

function problems(h) {
  const out = [...h.errors];
  if (!h['bufferutil native']) out.push('bufferutil: no native binary');
  if (!h['utf-8-validate native']) out.push('utf-8-validate: no native binary');
  if (h['ws masks with'] === 'JavaScript') out.push('ws masks in JavaScript');
  if (h['ws validates UTF-8 with'] === 'JavaScript') out.push('ws validates UTF-8 in JavaScript');
  return out;
}

function relay(upstreamUrl, h) {
  const { WebSocket, WebSocketServer } = h.require('ws');
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });

  server.on('connection', (client) => {
    const upstream = new WebSocket(upstreamUrl, {
      perMessageDeflate: false,
      headers: { Authorization: `Bearer ${API_KEY}` },
    });
    const early = [];
    const closeCode = (code) => (code >= 1000 && code !== 1005 && code !== 1006 ? code : 1000);

    client.on('message', (data, isBinary) => {
      if (upstream.readyState === WebSocket.OPEN) upstream.send(data, { binary: isBinary });
      else if (upstream.readyState === WebSocket.CONNECTING) early.push([data, isBinary]);
    });
    upstream.on('open', () => {
      for (const [data, isBinary] of early) upstream.send(data, { binary: isBinary });
      early.length = 0;
    });
    upstream.on('message', (data, isBinary) => {
      if (client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary });
    });

    client.on('close', (code, reason) => {
      if (upstream.readyState === WebSocket.OPEN) upstream.close(closeCode(code), reason);
      else upstream.terminate();
    });
    upstream.on('close', (code, reason) => {
      if (client.readyState === WebSocket.OPEN) client.close(closeCode(code), reason);
      else client.terminate();
    });
    client.on('error', () => upstream.terminate());
    upstream.on('error', () => client.terminate());
  });

  server.on('listening', () => {
    process.stdout.write(`ws://127.0.0.1:${server.address().port}/ws\n`);
  });
  const stop = () => {
    for (const ws of server.clients) ws.terminate();
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

const args = process.argv.slice(2);
if (args[0] === '--check') {
  const h = helpers(args[1]);
  process.stdout.write(`${describe(h)}\n`);
  process.exit(problems(h).length ? 1 : 0);
} else {
  const h = helpers(args[1]);
  const wrong = problems(h);
  if (wrong.length) {
    process.stderr.write(`node_relay: native helpers missing: ${wrong.join('; ')}\n`);
    process.exit(1);
  }
  process.stderr.write(`node_relay: ${describe(h)}\n`);
  relay(args[0], h);
}
