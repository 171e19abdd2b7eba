// Chromium against two `wsx serve --pubsub --broker URL` nodes on one real broker (Redis, then
// NATS): a page loaded from node A and a page loaded from node B join one room of the demo
// page's chat and see each other's messages, in order, both ways; each node's /stats shows the
// messages went through its broker link (published on one node, received on the other).
//
// The brokers are Debian's redis-server and nats-server, started here on a free loopback port
// with their files in a temporary directory, and killed at the end. scripts/test.sh installs
// them; without one the test skips with a message, unless CI is set: then it fails.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join as joinPath } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM, startWsxServe } from './servers.mjs';

const TIMEOUT = { timeout: 90_000 };
const REDIS_SERVER = '/usr/bin/redis-server';
const NATS_SERVER = '/usr/sbin/nats-server';

/** A skip reason when `path` is missing, outside CI; in CI the test runs and fails. */
function missing(path) {
  if (existsSync(path) || process.env.CI) return false;
  return `${path} is not installed (apt-get install redis-server nats-server; scripts/test.sh does)`;
}

/** A free loopback port (asked of the kernel, then released for the broker to bind). */
function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** Resolves with the first `bytes` the server at `port` sends after `request` (bounded). */
function exchange(port, request, until) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let got = '';
    const timer = setTimeout(() => { socket.destroy(); reject(new Error(`no answer on ${port}: ${got}`)); }, 5_000);
    socket.on('connect', () => { if (request) socket.write(request); });
    socket.on('data', (d) => {
      got += d;
      if (until(got)) { clearTimeout(timer); socket.destroy(); resolve(got); }
    });
    socket.on('error', (e) => { clearTimeout(timer); reject(e); });
  });
}

/** One Redis command (RESP): its raw reply, once `complete(reply)` says it is all there. */
function redisCommand(port, complete, ...args) {
  const request = `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('');
  return exchange(port, request, complete);
}

/**
 * The broker `kind` ('redis' or 'nats') on a free 127.0.0.1 port, in a temporary directory:
 * { url, subscribers(channel), stop() }. `subscribers` asks the broker itself how many
 * connections are subscribed to a channel (Redis PUBSUB NUMSUB; NATS monitoring /connz).
 */
async function startBroker(kind) {
  const path = kind === 'redis' ? REDIS_SERVER : NATS_SERVER;
  assert.ok(existsSync(path), `${path} is missing and CI is set: scripts/test.sh installs it`);
  const dir = mkdtempSync(joinPath(tmpdir(), `wsx-broker-${kind}-`));
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const monitor = await freePort();
    const args = kind === 'redis'
      ? ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
        '--protected-mode', 'yes', '--daemonize', 'no', '--dir', dir]
      : ['-a', '127.0.0.1', '-p', String(port), '-m', String(monitor)];
    const child = spawn(path, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => { output += d; });
    child.stderr.on('data', (d) => { output += d; });
    let running = true;
    const exited = new Promise((resolve) => child.once('exit', () => { running = false; resolve(); }));
    const killOnExit = () => child.kill('SIGKILL');
    process.once('exit', killOnExit);
    const stop = async () => {
      if (running) {
        child.kill('SIGKILL');
        await exited;
      }
      process.removeListener('exit', killOnExit);
      rmSync(dir, { recursive: true, force: true });
    };
    const answers = () => (kind === 'redis'
      ? redisCommand(port, (r) => r.endsWith('\r\n'), 'PING').then((r) => r.startsWith('+PONG'))
      : exchange(port, '', (got) => got.includes('\r\n')).then((r) => r.startsWith('INFO ')));
    const started = Date.now();
    let up = false;
    while (running && !up && Date.now() - started < 15_000) {
      up = await answers().catch(() => false);
      if (!up) await new Promise((r) => setTimeout(r, 50));
    }
    if (up) {
      const subscribers = async (channel) => {
        if (kind === 'redis') {
          // *2 $len channel :count
          const count = /\r\n:(\d+)\r\n$/;
          const reply = await redisCommand(port, (r) => count.test(r), 'PUBSUB', 'NUMSUB', channel);
          return Number(count.exec(reply)[1]);
        }
        const connz = await (await fetch(`http://127.0.0.1:${monitor}/connz?subs=1`)).json();
        return (connz.connections ?? []).filter((c) => (c.subscriptions_list ?? []).includes(channel)).length;
      };
      return { url: `${kind}://127.0.0.1:${port}`, subscribers, stop };
    }
    // Lost the port to another process between probe and bind, or did not start: again.
    await stop().catch(() => {});
    if (attempt >= 4) throw new Error(`${path} did not answer:\n${output}`);
  }
}

async function stats(node) {
  return (await fetch(node.url + 'stats')).json();
}

/** Polls `check` (bounded) until it holds; the last value on failure. */
async function until(what, check, limit = 15_000) {
  const started = Date.now();
  let last;
  for (;;) {
    last = await check();
    if (last === true) return;
    assert.ok(Date.now() - started < limit, `never ${what}: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A page of the demo loaded from `node`, joined to `room` as `name`. */
async function join(browser, node, room, name) {
  const page = await browser.newPage();
  await page.goto(node.url);
  // The chat card appears once /stats says the server runs pub/sub.
  await page.locator('#chat-card').waitFor({ state: 'visible', timeout: 10_000 });
  await page.fill('#chat-room', room);
  await page.fill('#chat-name', name);
  await page.click('#chat-join');
  await page.locator('#chat-log li', { hasText: `joined ${room}` }).waitFor({ timeout: 10_000 });
  return page;
}

async function say(page, text) {
  await page.fill('#chat-text', text);
  await page.press('#chat-text', 'Enter');
}

async function chatLines(page) {
  return (await page.locator('#chat-log li').allTextContents()).filter((l) => l.includes(': '));
}

for (const [kind, path, channel] of [
  ['redis', REDIS_SERVER, 'wsx.chat/lobby'],
  // NATS: the topic is one escaped subject token (see wsx-broker's nats.rs).
  ['nats', NATS_SERVER, 'wsx.chat%2Flobby'],
]) {
  describe(`two nodes through ${kind}`, { skip: missing(path) }, () => {
    let broker;
    let a;
    let b;
    let browser;

    before(async () => {
      broker = await startBroker(kind);
      a = await startWsxServe('--pubsub', '--broker', broker.url);
      b = await startWsxServe('--pubsub', '--broker', broker.url);
      browser = await chromium.launch(CHROMIUM);
    });

    after(async () => {
      await browser?.close();
      await a?.stop();
      await b?.stop();
      await broker?.stop();
    });

    test('a page on each node: they chat through the broker, in order, both ways', TIMEOUT, async () => {
      for (const node of [a, b]) {
        await until('the broker link up', async () => {
          const link = (await stats(node)).pubsub.broker;
          return link?.connected === true || link;
        });
      }
      const alice = await join(browser, a, 'lobby', 'alice');
      const bob = await join(browser, b, 'lobby', 'bob');
      // Both nodes subscribed at the broker (asked of the broker) before anyone speaks.
      await until('both nodes subscribed at the broker', async () => {
        const n = await broker.subscribers(channel);
        return n === 2 || `${n} subscribers of ${channel}`;
      });

      const fromAlice = ['hi bob', 'from node A', 'third <b>&</b>'];
      const fromBob = ['hi alice', 'from node B', 'last 😀'];
      for (const text of fromAlice) await say(alice, text);
      await bob.locator('#chat-log li', { hasText: `alice: ${fromAlice.at(-1)}` }).waitFor({ timeout: 10_000 });
      for (const text of fromBob) await say(bob, text);
      await alice.locator('#chat-log li', { hasText: `bob: ${fromBob.at(-1)}` }).waitFor({ timeout: 10_000 });
      // Each hears itself too, from its own node's fan-out.
      await bob.locator('#chat-log li', { hasText: `bob: ${fromBob.at(-1)}` }).waitFor({ timeout: 10_000 });
      const expected = [...fromAlice.map((t) => `alice: ${t}`), ...fromBob.map((t) => `bob: ${t}`)];
      assert.deepEqual(await chatLines(alice), expected);
      assert.deepEqual(await chatLines(bob), expected);
      // Markup arrived as text, not as elements.
      assert.equal(await bob.locator('#chat-log b').count(), 0);

      // Each node sent its page's three messages to the broker and got the other's three from
      // it; its own came back (Redis) or not (NATS: no echo) and were never delivered twice.
      const [sa, sb] = [await stats(a), await stats(b)];
      for (const [s, name] of [[sa, 'A'], [sb, 'B']]) {
        const link = s.pubsub.broker;
        assert.equal(link.kind, kind, name);
        assert.equal(link.connected, true, name);
        assert.equal(link.published, 3, `${name}: ${JSON.stringify(link)}`);
        assert.equal(link.received, 3, `${name}: ${JSON.stringify(link)}`);
        assert.equal(link.dropped, 0, `${name}: ${JSON.stringify(link)}`);
        assert.equal(link.outages, 0, `${name}: ${JSON.stringify(link)}`);
        // One subscriber per node; six messages delivered to it: three local, three remote.
        assert.equal(s.pubsub.subscriptions, 1, name);
        assert.equal(s.pubsub.deliveries, 6, `${name}: ${JSON.stringify(s.pubsub)}`);
      }
      await alice.close();
      await bob.close();
      // The last subscriber gone from each node: neither is subscribed at the broker any more.
      await until('unsubscribed at the broker', async () => {
        const n = await broker.subscribers(channel);
        return n === 0 || `${n} subscribers of ${channel}`;
      });
    });
  });
}
