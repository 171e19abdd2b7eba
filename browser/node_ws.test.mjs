// Node's `ws` client against the axum_echo example and `wsx serve`, with permessage-deflate on
// and off: byte-exact echoes up to 16 MiB, the negotiated extension, a burst of messages, a
// close with an application code; against axum_echo also `/private/ws` with and without
// `Authorization: Bearer secret`.
//
// Needs target/release/wsx (`cargo build --release`) and target/release/examples/axum_echo
// (`cargo build --release -p wsx --features axum --example axum_echo`).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import WebSocket, { extension } from 'ws';
import { startAxumEcho, startWsxServe, textOfBytes } from './servers.mjs';

const TIMEOUT = { timeout: 60_000 };
const SIZES = [20, 64 << 10, 1 << 20, 16 << 20];
// Both servers' default --max-frame-size / Config::max_frame_size: 16 MiB of frame payload.
const MAX_FRAME = 16 << 20;

const servers = {};
const sockets = new Set();

before(async () => {
  [servers.axum, servers.wsx] = await Promise.all([startAxumEcho(), startWsxServe()]);
});

after(async () => {
  for (const ws of sockets) ws.terminate();
  await Promise.all(Object.values(servers).map((s) => s.stop()));
});

/**
 * Opens a `ws` client and resolves once it is open, with `next()` (the next message as
 * { data, isBinary }), `closed` (a promise of { code, reason }) and the upgrade response's
 * headers.
 */
function connect(url, options = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { handshakeTimeout: 10_000, ...options });
    sockets.add(ws);
    const inbox = [], waiters = [];
    let headers;
    ws.on('upgrade', (response) => { headers = response.headers; });
    ws.on('message', (data, isBinary) => {
      const w = waiters.shift();
      if (w) w.resolve({ data, isBinary }); else inbox.push({ data, isBinary });
    });
    ws.on('error', (e) => reject(e));
    const closed = new Promise((done) => ws.once('close', (code, reason) => {
      sockets.delete(ws);
      for (const w of waiters.splice(0)) w.reject(new Error(`closed with ${code} ${reason} before the echo`));
      done({ code, reason: reason.toString() });
    }));
    const next = () => (inbox.length ? Promise.resolve(inbox.shift())
      : new Promise((res, rej) => waiters.push({ resolve: res, reject: rej })));
    ws.once('open', () => resolve({ ws, next, closed, headers }));
  });
}

/** Where two buffers first differ, or -1. */
function firstDifference(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

function assertEcho(got, sent, isBinary, name) {
  assert.equal(got.isBinary, isBinary, `${name}: message type`);
  assert.equal(got.data.length, sent.length, `${name}: length`);
  assert.ok(got.data.equals(sent), `${name}: differs at byte ${firstDifference(got.data, sent)}`);
}

const TARGETS = [
  { name: 'axum_echo /ws', server: 'axum', path: '/ws' },
  { name: 'wsx serve /', server: 'wsx', path: '/' },
];

for (const target of TARGETS) {
  for (const deflate of [true, false]) {
    describe(`${target.name}, permessage-deflate ${deflate ? 'on' : 'off'}`, () => {
      const url = () => servers[target.server].ws + target.path;
      const open = () => connect(url(), { perMessageDeflate: deflate });

      test('text and binary of 20 B, 64 KiB, 1 MiB and 16 MiB echo byte for byte', TIMEOUT, async () => {
        const client = await open();
        for (const n of SIZES) {
          const text = Buffer.from(textOfBytes(n));
          client.ws.send(text.toString());
          assertEcho(await client.next(), text, false, `text ${n} B`);

          const binary = randomBytes(n);
          if (deflate && n === MAX_FRAME) {
            // Incompressible, its compressed frame would exceed the servers' 16 MiB frame limit
            // (see the test below): sent as four frames of one message instead.
            const quarter = n / 4;
            for (let i = 0; i < 4; i++) client.ws.send(binary.subarray(i * quarter, (i + 1) * quarter), { fin: i === 3 });
          } else {
            client.ws.send(binary);
          }
          assertEcho(await client.next(), binary, true, `binary ${n} B`);
        }
        client.ws.close(1000);
        assert.equal((await client.closed).code, 1000);
      });

      test(`the extension header ${deflate ? 'accepts' : 'has no'} permessage-deflate`, TIMEOUT, async () => {
        const client = await open();
        const header = client.headers['sec-websocket-extensions'];
        if (deflate) {
          assert.deepEqual(Object.keys(extension.parse(header)), ['permessage-deflate'], header);
          assert.equal(client.ws.extensions, 'permessage-deflate');
        } else {
          assert.equal(header, undefined);
          assert.equal(client.ws.extensions, '');
        }
        // The echo of 1 MiB of repetitive text: compressed on the wire only when negotiated.
        const text = Buffer.from(textOfBytes(1 << 20));
        const before = client.ws._socket.bytesRead;
        client.ws.send(text.toString());
        assertEcho(await client.next(), text, false, '1 MiB text');
        const onWire = client.ws._socket.bytesRead - before;
        if (deflate) assert.ok(onWire < 64 << 10, `${onWire} bytes read for a compressed 1 MiB echo`);
        else assert.ok(onWire >= 1 << 20, `${onWire} bytes read for an uncompressed 1 MiB echo`);
        client.ws.close(1000);
        await client.closed;
      });

      test('a burst of 1,000 messages of 100 B comes back complete and in order', TIMEOUT, async () => {
        const client = await open();
        const sent = [];
        for (let i = 0; i < 1000; i++) {
          const payload = Buffer.from(`#${i} `.padEnd(100, String.fromCharCode(97 + (i % 26))));
          const isBinary = i % 10 === 9;
          sent.push({ payload, isBinary });
          client.ws.send(isBinary ? payload : payload.toString());
        }
        for (let i = 0; i < sent.length; i++) {
          assertEcho(await client.next(), sent[i].payload, sent[i].isBinary, `message ${i}`);
        }
        client.ws.close(1000);
        await client.closed;
      });

      test('a close with 4000 and a reason is answered with 4000 (the code echoed, not the reason)',
        TIMEOUT, async () => {
          const client = await open();
          client.ws.send('before closing');
          await client.next();
          client.ws.close(4000, 'client done');
          assert.deepEqual(await client.closed, { code: 4000, reason: '' });
        });

      if (deflate) {
        test('an incompressible 16 MiB message as one frame exceeds the 16 MiB frame limit once compressed: 1009',
          TIMEOUT, async () => {
            const client = await open();
            client.ws.send(randomBytes(MAX_FRAME));
            const close = await client.closed;
            assert.equal(close.code, 1009);
            const m = /^frame of (\d+) bytes exceeds the limit of (\d+)$/.exec(close.reason);
            assert.ok(m, close.reason);
            assert.ok(Number(m[1]) > MAX_FRAME, close.reason);
            assert.equal(Number(m[2]), MAX_FRAME);
          });
      }
    });
  }
}

describe('axum_echo /private/ws', () => {
  const url = () => `${servers.axum.ws}/private/ws`;

  for (const deflate of [true, false]) {
    test(`echoes with Authorization: Bearer secret (permessage-deflate ${deflate ? 'on' : 'off'})`,
      TIMEOUT, async () => {
        const client = await connect(url(), { perMessageDeflate: deflate, headers: { Authorization: 'Bearer secret' } });
        assert.equal(client.ws.extensions, deflate ? 'permessage-deflate' : '');
        const binary = randomBytes(64 << 10);
        client.ws.send('secret handshake');
        assertEcho(await client.next(), Buffer.from('secret handshake'), false, 'text');
        client.ws.send(binary);
        assertEcho(await client.next(), binary, true, 'binary');
        client.ws.close(1000);
        assert.equal((await client.closed).code, 1000);
      });
  }

  for (const [name, headers] of [['without Authorization', {}], ['with a wrong token', { Authorization: 'Bearer guess' }]]) {
    test(`${name}: 'unexpected-response' reports 401 with WWW-Authenticate: Bearer`, TIMEOUT, async () => {
      const result = await new Promise((resolve, reject) => {
        const ws = new WebSocket(url(), { headers, handshakeTimeout: 10_000 });
        sockets.add(ws);
        ws.on('open', () => reject(new Error('opened without the secret')));
        ws.on('error', reject);
        ws.on('unexpected-response', (request, response) => {
          let body = '';
          response.setEncoding('utf8');
          response.on('data', (d) => { body += d; });
          response.on('end', () => {
            request.destroy();
            sockets.delete(ws);
            resolve({ status: response.statusCode, auth: response.headers['www-authenticate'], body });
          });
        });
      });
      assert.deepEqual(result, { status: 401, auth: 'Bearer', body: 'unauthorized\n' });
    });
  }
});
