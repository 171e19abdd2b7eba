// Chromium against the axum_echo example (crates/wsx/examples/axum_echo.rs): its page and
// `/hello` from the same port, echoes at `/` and `/ws`, the negotiated extension, a clean close,
// and `/private/ws`, which a browser cannot open (it cannot send Authorization).
//
// Needs target/release/examples/axum_echo
// (`cargo build --release -p wsx --features axum --example axum_echo`) and /usr/bin/chromium.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chromium } from 'playwright-core';
import { CHROMIUM, randomBytes, startAxumEcho, textOfBytes } from './servers.mjs';

const TIMEOUT = { timeout: 60_000 };
const SIZES = [20, 1024, 64 << 10, 1 << 20];

// Installed in every page: a socket whose echoes can be awaited one by one, its close event,
// SHA-256 in hex, and the same xorshift32 bytes as servers.mjs's randomBytes.
const PAGE_HELPERS = `
window.openSocket = (path) => new Promise((resolve, reject) => {
  const ws = new WebSocket('ws://' + location.host + path);
  ws.binaryType = 'arraybuffer';
  const inbox = [], waiters = [];
  ws.onmessage = (e) => { const w = waiters.shift(); if (w) w.resolve(e.data); else inbox.push(e.data); };
  ws.closed = new Promise((done) => ws.addEventListener('close', (e) => {
    for (const w of waiters.splice(0)) w.reject(new Error('closed with ' + e.code + ' before the echo'));
    done({ code: e.code, reason: e.reason, wasClean: e.wasClean });
  }));
  ws.next = () => inbox.length ? Promise.resolve(inbox.shift())
    : new Promise((res, rej) => waiters.push({ resolve: res, reject: rej }));
  ws.onopen = () => resolve(ws);
  ws.onerror = () => reject(new Error('WebSocket error before open'));
});
window.sha256 = async (bytes) => [...new Uint8Array(await crypto.subtle.digest('SHA-256', bytes))]
  .map((b) => b.toString(16).padStart(2, '0')).join('');
window.randomBytes = (n, seed) => {
  const b = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; b[i] = x & 0xff; }
  return b;
};
`;

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');

let browser;
let server;
let page;

before(async () => {
  server = await startAxumEcho();
  browser = await chromium.launch(CHROMIUM);
  const context = await browser.newContext();
  await context.addInitScript(PAGE_HELPERS);
  page = await context.newPage();
  page.setDefaultTimeout(30_000);
  await page.goto(server.url);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

describe('same-origin HTTP', () => {
  test('GET / is the HTML page', TIMEOUT, async () => {
    const response = await fetch(server.url);
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type'), /^text\/html/);
    await response.arrayBuffer();
    assert.equal(await page.title(), 'wsx axum echo');
    assert.match(await page.textContent('p'), /WebSocket echo at \/ and \/ws\./);
  });

  test("fetch('/hello') from the page is text", TIMEOUT, async () => {
    const got = await page.evaluate(async () => {
      const response = await fetch('/hello');
      return { status: response.status, type: response.headers.get('content-type'), text: await response.text() };
    });
    assert.equal(got.status, 200);
    assert.match(got.type, /^text\/plain/);
    assert.equal(got.text, 'hello from axum\n');
  });
});

for (const path of ['/', '/ws']) {
  describe(`WebSocket at ${path}`, () => {
    test('text of 20 B, 1 KiB, 64 KiB and 1 MiB echoes exactly', TIMEOUT, async () => {
      const texts = SIZES.map((n) => textOfBytes(n));
      const results = await page.evaluate(async ({ path, texts }) => {
        const ws = await openSocket(path);
        const out = [];
        for (const text of texts) {
          ws.send(text);
          const got = await ws.next();
          const bytes = typeof got === 'string' ? new TextEncoder().encode(got) : new Uint8Array(got);
          out.push({ type: typeof got, bytes: bytes.length, sha256: await sha256(bytes), equal: got === text });
        }
        ws.close(1000);
        await ws.closed;
        return out;
      }, { path, texts });
      assert.equal(results.length, texts.length);
      texts.forEach((text, i) => {
        const bytes = Buffer.from(text);
        assert.deepEqual(results[i], { type: 'string', bytes: bytes.length, sha256: sha256(bytes), equal: true },
          `${SIZES[i]} B`);
      });
    });

    test('binary of 20 B, 1 KiB, 64 KiB and 1 MiB echoes byte for byte', TIMEOUT, async () => {
      const results = await page.evaluate(async ({ path, sizes }) => {
        const ws = await openSocket(path);
        const out = [];
        for (const n of sizes) {
          const sent = randomBytes(n, n);
          ws.send(sent);
          const got = await ws.next();
          out.push(typeof got === 'string'
            ? { type: 'string', bytes: got.length }
            : { type: 'binary', bytes: got.byteLength, sha256: await sha256(got) });
        }
        ws.close(1000);
        await ws.closed;
        return out;
      }, { path, sizes: SIZES });
      assert.equal(results.length, SIZES.length);
      SIZES.forEach((n, i) => {
        assert.deepEqual(results[i], { type: 'binary', bytes: n, sha256: sha256(randomBytes(n, n)) }, `${n} B`);
      });
    });

    test('permessage-deflate is negotiated', TIMEOUT, async () => {
      const extensions = await page.evaluate(async (path) => {
        const ws = await openSocket(path);
        const ext = ws.extensions;
        ws.close(1000);
        await ws.closed;
        return ext;
      }, path);
      // The default answer keeps no codec state between messages (RFC 7692 §7.1.1).
      assert.equal(extensions, 'permessage-deflate; server_no_context_takeover; client_no_context_takeover');
    });

    test('a close started by the browser is clean with code 1000', TIMEOUT, async () => {
      const close = await page.evaluate(async (path) => {
        const ws = await openSocket(path);
        ws.send('last words');
        await ws.next();
        ws.close(1000, 'done');
        return ws.closed;
      }, path);
      assert.equal(close.code, 1000);
      assert.equal(close.wasClean, true);
    });
  });
}

test('/private/ws does not open from the browser: an error, then close 1006', TIMEOUT, async () => {
  const result = await page.evaluate(() => new Promise((resolve) => {
    const ws = new WebSocket('ws://' + location.host + '/private/ws');
    const events = [];
    ws.onopen = () => events.push('open');
    ws.onerror = () => events.push('error');
    ws.onclose = (e) => {
      events.push('close');
      resolve({ events, code: e.code, wasClean: e.wasClean, readyState: ws.readyState });
    };
  }));
  assert.deepEqual(result, { events: ['error', 'close'], code: 1006, wasClean: false, readyState: 3 });
  // What the handshake got, seen through fetch from the same page.
  const refusal = await page.evaluate(async () => {
    const response = await fetch('/private/ws');
    return { status: response.status, auth: response.headers.get('www-authenticate'), body: await response.text() };
  });
  assert.deepEqual(refusal, { status: 401, auth: 'Bearer', body: 'unauthorized\n' });
});
