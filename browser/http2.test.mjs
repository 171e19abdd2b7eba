// WebSockets over HTTP/2 (RFC 8441): Chromium loads the demo page from `wsx serve --tls-*` over
// h2 and opens wss:// to the same origin, which it sends as an extended CONNECT on that same
// connection; `GET /stats` proves from the server side that the WebSockets ran as h2 streams.
// Node's own http2 client (a second, independent implementation) opens one too.
//
// The certificate is made by the test (openssl): a CA and a server certificate it signs for
// 127.0.0.1 and localhost. Chromium trusts it through --ignore-certificate-errors-spki-list
// (the SHA-256 of the server key's SubjectPublicKeyInfo), Node through `ca`.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM, startWsxServe } from './servers.mjs';

const TIMEOUT = { timeout: 60_000 };

let dir;
let ca;
let server;
let browser;
let origin;

/** A CA and a server certificate signed by it, in `dir`. */
function makeCertificates() {
  const run = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=wsx test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign');
  run('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost');
  writeFileSync(join(dir, 'ext.cnf'),
    'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-out', 'server.pem', '-days', '2', '-extfile', 'ext.cnf');
  return readFileSync(join(dir, 'ca.pem'));
}

/** base64 SHA-256 of the certificate's SubjectPublicKeyInfo, as Chromium's flag wants it. */
function spkiHash(pem) {
  const spki = new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('base64');
}

/** GET `path` over HTTP/2 with Node's client; the parsed JSON body. */
function getJson(path) {
  return new Promise((resolve, reject) => {
    const session = http2.connect(origin, { ca });
    session.on('error', reject);
    const req = session.request({ ':path': path });
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d) => { body += d; });
    req.on('end', () => { session.close(); resolve(JSON.parse(body)); });
    req.on('error', reject);
    req.end();
  });
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'wsx-h2-'));
  ca = makeCertificates();
  server = await startWsxServe('--tls-cert', join(dir, 'server.pem'), '--tls-key', join(dir, 'server.key'));
  origin = `https://127.0.0.1:${server.port}`;
  const spki = spkiHash(readFileSync(join(dir, 'server.pem')));
  browser = await chromium.launch({
    ...CHROMIUM,
    args: [...CHROMIUM.args, `--ignore-certificate-errors-spki-list=${spki}`],
  });
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('Chromium: the page over h2, then WebSockets as streams of that connection', TIMEOUT, async () => {
  const before = await getJson('/stats');
  const page = await browser.newPage();
  await page.goto(origin + '/');
  const protocol = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
  assert.equal(protocol, 'h2', 'the demo page came over HTTP/2');

  const result = await page.evaluate(async (size) => {
    const open = (path) => new Promise((resolve, reject) => {
      const ws = new WebSocket('wss://' + location.host + path);
      ws.binaryType = 'arraybuffer';
      const inbox = [];
      const waiters = [];
      ws.onmessage = (e) => { const w = waiters.shift(); if (w) w(e.data); else inbox.push(e.data); };
      ws.next = () => (inbox.length ? Promise.resolve(inbox.shift()) : new Promise((r) => waiters.push(r)));
      ws.closed = new Promise((done) => { ws.onclose = (e) => done({ code: e.code, wasClean: e.wasClean }); });
      ws.onopen = () => resolve(ws);
      ws.onerror = () => reject(new Error('WebSocket error before open'));
    });
    // The tutorial's experiment: open, send, get the echo, close.
    const ws = await open('/echo');
    ws.send('Hello from Chromium over HTTP/2');
    const echo = await ws.next();
    // 1 MiB of incompressible bytes (xorshift32), echoed whole.
    const big = new Uint8Array(size);
    let x = 8441;
    for (let i = 0; i < size; i++) { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; big[i] = x & 0xff; }
    ws.send(big);
    const back = new Uint8Array(await ws.next());
    let same = back.length === big.length;
    for (let i = 0; same && i < big.length; i++) same = back[i] === big[i];
    // A second socket at the same time: another stream of the same connection.
    const second = await open('/second');
    second.send('two');
    const echo2 = await second.next();
    const extensions = ws.extensions;
    ws.close(1000, 'done');
    second.close(1000);
    return { echo, same, length: back.length, echo2, extensions, closed: await ws.closed };
  }, 1 << 20);

  assert.equal(result.echo, 'Hello from Chromium over HTTP/2');
  assert.equal(result.length, 1 << 20);
  assert.ok(result.same, '1 MiB echoed unchanged');
  assert.equal(result.echo2, 'two');
  assert.match(result.extensions, /permessage-deflate/, 'deflate negotiated over h2');
  assert.deepEqual(result.closed, { code: 1000, wasClean: true });

  // From the server's side: two more WebSockets over HTTP/2, none over HTTP/1.1.
  const stats = await getJson('/stats');
  assert.equal(stats.http2.total - before.http2.total, 2, JSON.stringify(stats));
  assert.equal(stats.http1.total - before.http1.total, 0, JSON.stringify(stats));
  await page.close();
});

test('Node http2: an extended CONNECT with :protocol websocket gets 200 and an echo', TIMEOUT, async () => {
  const session = http2.connect(origin, { ca });
  const settings = await new Promise((resolve) => session.once('remoteSettings', resolve));
  assert.equal(settings.enableConnectProtocol, true, 'the server advertises extended CONNECT');
  const stream = session.request({
    ':method': 'CONNECT',
    ':protocol': 'websocket',
    ':path': '/node',
    ':scheme': 'https',
    ':authority': `127.0.0.1:${server.port}`,
    'sec-websocket-version': '13',
  });
  const headers = await new Promise((resolve, reject) => {
    stream.once('response', resolve);
    stream.once('error', reject);
  });
  assert.equal(headers[':status'], 200);
  assert.equal(headers['content-length'], undefined, 'a 2xx CONNECT answer has no length');
  // One masked text frame, "hi", then the unmasked echo back.
  const mask = Buffer.from([1, 2, 3, 4]);
  const payload = Buffer.from('hi');
  const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
  stream.write(Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, masked]));
  const frame = await new Promise((resolve) => {
    let got = Buffer.alloc(0);
    stream.on('data', (d) => {
      got = Buffer.concat([got, d]);
      if (got.length >= 2 + (got[1] & 0x7f)) resolve(got);
    });
  });
  assert.equal(frame[0], 0x81, 'a final text frame');
  assert.equal(frame.subarray(2, 2 + (frame[1] & 0x7f)).toString(), 'hi');
  stream.close();
  session.close();
});
