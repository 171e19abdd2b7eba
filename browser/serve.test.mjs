// Chromium against `wsx serve`: echoes, close codes, the negotiated extension, the demo page.
//
// Needs the release binary (`cargo build --release` in the repository root) and Debian's
// Chromium at /usr/bin/chromium. Run with `npm install && node --test` in this folder.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { CHROMIUM, startWsxServe } from './servers.mjs';

const SCREENSHOT = fileURLToPath(new URL('../docs/demo.png', import.meta.url));
const TIMEOUT = { timeout: 60_000 };

// Installed in every page: a socket whose echoes can be awaited one by one, and its close event.
const PAGE_HELPERS = `
window.openSocket = (path = '/echo') => new Promise((resolve, reject) => {
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
`;

let browser;
let server;

before(async () => {
  server = await startWsxServe();
  browser = await chromium.launch(CHROMIUM);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

describe('echo', () => {
  let page;
  before(async () => {
    page = await newPage();
    await page.goto(server.url);
  });

  test('text echoes of several sizes, multi-byte UTF-8 included', TIMEOUT, async () => {
    const cases = {
      empty: '',
      ascii: 'Hello, wsx!',
      '125 B (7-bit length)': 'a'.repeat(125),
      '126 B (16-bit length)': 'b'.repeat(126),
      '65535 B': 'c'.repeat(65535),
      '65536 B (64-bit length)': 'd'.repeat(65536),
      emoji: '😀🎉🚀 👩‍👩‍👧‍👦 🇯🇵 ❤️‍🔥',
      CJK: '漢字かなカナ 한국어 中文测试 「引用」',
      'mixed 96 KiB': 'wsx 😀 漢字 ñ € '.repeat(4096),
      '1 MiB of emoji': '🙂'.repeat(262_144),
    };
    const results = await page.evaluate(async (cases) => {
      const ws = await openSocket();
      const out = {};
      const enc = new TextEncoder();
      for (const [name, text] of Object.entries(cases)) {
        ws.send(text);
        const got = await ws.next();
        out[name] = {
          type: typeof got,
          bytes: typeof got === 'string' ? enc.encode(got).length : got.byteLength,
          equal: got === text,
        };
      }
      ws.close();
      return out;
    }, cases);
    for (const [name, text] of Object.entries(cases)) {
      assert.deepEqual(results[name], { type: 'string', bytes: Buffer.byteLength(text), equal: true }, name);
    }
    assert.equal(Buffer.byteLength(cases['1 MiB of emoji']), 1 << 20);
  });

  test('binary echoes up to 1 MiB, byte for byte', TIMEOUT, async () => {
    const sizes = [0, 1, 125, 126, 127, 65535, 65536, 65537, 300_000, 1 << 20];
    const results = await page.evaluate(async (sizes) => {
      // Pseudo-random (incompressible) bytes, plus one compressible MiB of a repeating pattern.
      const random = (n, seed) => {
        const b = new Uint8Array(n);
        let x = seed >>> 0 || 1;
        for (let i = 0; i < n; i++) { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; b[i] = x & 0xff; }
        return b;
      };
      const pattern = new Uint8Array(1 << 20).map((_, i) => i % 7);
      const payloads = [...sizes.map((n) => [String(n), random(n, n + 1)]), ['1 MiB pattern', pattern]];
      const ws = await openSocket();
      const out = [];
      for (const [name, sent] of payloads) {
        ws.send(sent);
        const got = await ws.next();
        const view = typeof got === 'string' ? null : new Uint8Array(got);
        let firstDifference = -1;
        if (view) {
          const n = Math.min(view.length, sent.length);
          for (let i = 0; i < n && firstDifference < 0; i++) if (view[i] !== sent[i]) firstDifference = i;
        }
        out.push({ name, binary: view !== null, sent: sent.length, received: view ? view.length : -1, firstDifference });
      }
      ws.close();
      return out;
    }, sizes);
    assert.equal(results.length, sizes.length + 1);
    for (const r of results) {
      assert.deepEqual(r, { name: r.name, binary: true, sent: r.sent, received: r.sent, firstDifference: -1 }, r.name);
    }
  });

  test('a burst of 1,000 messages comes back complete and in order', TIMEOUT, async () => {
    const result = await page.evaluate(async () => {
      const ws = await openSocket();
      const sent = [];
      // Every tenth message binary; lengths vary so frames straddle reads and writes.
      for (let i = 0; i < 1000; i++) {
        const text = '#' + i + ' ' + 'x'.repeat((i * 37) % 500);
        const msg = i % 10 === 9 ? new TextEncoder().encode(text) : text;
        sent.push(text);
        ws.send(msg);
      }
      const received = [];
      for (let i = 0; i < 1000; i++) {
        const got = await ws.next();
        received.push(typeof got === 'string' ? got : 'binary:' + new TextDecoder().decode(got));
      }
      ws.close();
      const expected = sent.map((t, i) => (i % 10 === 9 ? 'binary:' + t : t));
      const firstWrong = received.findIndex((r, i) => r !== expected[i]);
      return { count: received.length, firstWrong, got: received[firstWrong], want: expected[firstWrong] };
    });
    assert.deepEqual(result, { count: 1000, firstWrong: -1, got: undefined, want: undefined });
  });

  test('a close started by the browser is clean with code 1000', TIMEOUT, async () => {
    const close = await page.evaluate(async () => {
      const ws = await openSocket();
      ws.send('last words');
      await ws.next();
      ws.close(1000, 'done');
      return ws.closed;
    });
    assert.equal(close.code, 1000);
    assert.equal(close.wasClean, true);
  });

  test('permessage-deflate is negotiated', TIMEOUT, async () => {
    const extensions = await page.evaluate(async () => {
      const ws = await openSocket();
      const ext = ws.extensions;
      ws.close();
      return ext;
    });
    // `wsx serve`'s default: no context takeover either way, which Chromium accepts.
    assert.equal(extensions, 'permessage-deflate; server_no_context_takeover; client_no_context_takeover',
      `ws.extensions was ${JSON.stringify(extensions)}`);
  });
});

describe('demo page', () => {
  let page;
  before(async () => {
    page = await newPage({ viewport: { width: 1100, height: 900 } });
    await page.goto(server.url);
  });

  test('is served at / and defaults to ws://host/', TIMEOUT, async () => {
    const response = await fetch(server.url);
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type'), /^text\/html/);
    assert.ok((await response.text()).length < 25_000, 'the page stays small');
    assert.equal(await page.inputValue('#url'), `ws://127.0.0.1:${server.port}/`);
    assert.equal(await page.textContent('#extensions'), 'none');
  });

  test('the experiment logs four echoes and the verdict', TIMEOUT, async () => {
    await page.click('#experiment');
    await page.waitForSelector('#log li.verdict', { timeout: 30_000 });
    const entries = await logEntries(page);
    const shape = (dir) => entries.filter((e) => e.dir === dir && e.kind).map((e) => `${e.kind} ${e.bytes}`);
    const expected = ['text 11', 'text 126', 'text 65536', 'binary 65536'];
    assert.deepEqual(shape('sent'), expected);
    assert.deepEqual(shape('received'), expected);
    const received = entries.filter((e) => e.dir === 'received');
    assert.ok(received.every((e) => e.match === 'yes' && /\d ms$/.test(e.text)), 'each echo matches and has a time');
    assert.ok(entries.some((e) => e.dir === 'sent' && e.text.includes('Hello, wsx!')));
    const verdicts = entries.filter((e) => e.verdict);
    assert.equal(verdicts.length, 1);
    assert.match(verdicts[0].text, /experiment: 4\/4 echoes matched/);
    assert.match(await page.textContent('#experiment-result'), /^experiment: 4\/4 echoes matched/);
    assert.equal(await page.getAttribute('#state', 'data-state'), 'open');
    const extensions = await page.evaluate(() => document.getElementById('extensions').textContent);
    assert.ok(extensions === 'none' || extensions.includes('permessage-deflate'), extensions);
  });

  test('the latency test reports min, median and p99', TIMEOUT, async () => {
    await page.click('#latency');
    await page.waitForFunction(() => /p99/.test(document.getElementById('latency-result').textContent),
      null, { timeout: 30_000 });
    const result = await page.textContent('#latency-result');
    assert.match(result, /^latency: min [\d.]+ ms · median [\d.]+ ms · p99 [\d.]+ ms \(100 round trips\)$/);
  });

  test('screenshot after the experiment and the latency test saved to docs/demo.png', TIMEOUT, async () => {
    mkdirSync(fileURLToPath(new URL('../docs/', import.meta.url)), { recursive: true });
    await page.evaluate(() => { document.getElementById('log').scrollTop = 0; });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    const png = readFileSync(SCREENSHOT);
    assert.equal(png.subarray(1, 4).toString(), 'PNG');
  });

  test('the message box sends UTF-8 and logs the echo', TIMEOUT, async () => {
    const text = 'héllo 🌍 世界';
    await page.fill('#message', text);
    await page.click('#send');
    const want = String(Buffer.byteLength(text));
    await page.waitForFunction((want) => [...document.querySelectorAll('#log li[data-dir=received]')]
      .some((li) => li.dataset.bytes === want && li.dataset.match === 'yes' && li.textContent.includes('🌍')), want);
  });

  test('disconnect shows close 1000', TIMEOUT, async () => {
    await page.click('#disconnect');
    await page.waitForSelector('#state[data-state=closed]');
    assert.match(await page.textContent('#close-info'), /^1000 \(normal closure\).* · clean$/);
  });
});

describe('shutdown', () => {
  // Its own server, which this test terminates.
  let doomed;
  before(async () => {
    doomed = await startWsxServe();
  });
  after(async () => {
    await doomed?.stop();
  });

  test('SIGTERM closes browsers with 1001 and the server exits 0', TIMEOUT, async () => {
    const page = await newPage();
    await page.goto(doomed.url);
    await page.evaluate(async () => {
      window.victim = await openSocket('/any/path');
      victim.send('still here?');
      await victim.next();
    });
    await page.click('#connect');
    await page.waitForSelector('#state[data-state=open]');

    doomed.child.kill('SIGTERM');
    const close = await page.evaluate(() => victim.closed);
    assert.deepEqual(close, { code: 1001, reason: 'server shutting down', wasClean: true });
    await page.waitForSelector('#state[data-state=closed]');
    assert.match(await page.textContent('#close-info'), /^1001 \(going away\) · reason "server shutting down"/);
    assert.deepEqual(await doomed.exited, { code: 0, signal: null }, doomed.output());
  });
});

async function newPage(options) {
  const context = await browser.newContext(options);
  await context.addInitScript(PAGE_HELPERS);
  return context.newPage();
}

/** The demo page's log as data: direction, kind, size in bytes, match, text. */
function logEntries(page) {
  return page.$$eval('#log li', (items) => items.map((li) => ({
    dir: li.dataset.dir,
    kind: li.dataset.kind,
    bytes: li.dataset.bytes && Number(li.dataset.bytes),
    match: li.dataset.match,
    verdict: li.classList.contains('verdict'),
    text: li.textContent,
  })));
}
