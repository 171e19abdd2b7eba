// Chromium against `wsx serve --pubsub`: two pages join one room of the demo page's chat and see
// each other's messages (and their own); a page in another room sees none of them.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { CHROMIUM, startWsxServe } from './servers.mjs';

const TIMEOUT = { timeout: 60_000 };
let browser;
let server;

before(async () => {
  server = await startWsxServe('--pubsub');
  browser = await chromium.launch(CHROMIUM);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** A page of the demo, joined to `room` as `name`. */
async function join(room, name) {
  const page = await browser.newPage();
  await page.goto(server.url);
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

async function lines(page) {
  return page.locator('#chat-log li').allTextContents();
}

test('two pages in one room chat; another room hears nothing', TIMEOUT, async () => {
  const alice = await join('lobby', 'alice');
  const bob = await join('lobby', 'bob');
  const carol = await join('elsewhere', 'carol');
  // Both are subscribed before anyone speaks.
  for (let i = 0; i < 100; i++) {
    const s = await (await fetch(server.url + 'stats')).json();
    if (s.pubsub.subscriptions >= 3) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  await say(alice, 'hi bob');
  await bob.locator('#chat-log li', { hasText: 'alice: hi bob' }).waitFor({ timeout: 10_000 });
  await say(bob, 'hi alice <b>&</b>');
  await alice.locator('#chat-log li', { hasText: 'bob: hi alice <b>&</b>' }).waitFor({ timeout: 10_000 });
  // Senders hear themselves too (the sender is included by default), in order.
  await alice.locator('#chat-log li', { hasText: 'alice: hi bob' }).waitFor({ timeout: 10_000 });
  const a = (await lines(alice)).filter((l) => l.includes(': '));
  const b = (await lines(bob)).filter((l) => l.includes(': '));
  assert.deepEqual(a, ['alice: hi bob', 'bob: hi alice <b>&</b>']);
  assert.deepEqual(b, ['alice: hi bob', 'bob: hi alice <b>&</b>']);
  // Markup arrives as text, not as elements.
  assert.equal(await alice.locator('#chat-log b').count(), 0);
  // The other room got nothing.
  await say(carol, 'anyone?');
  await carol.locator('#chat-log li', { hasText: 'carol: anyone?' }).waitFor({ timeout: 10_000 });
  assert.deepEqual((await lines(carol)).filter((l) => l.includes(': ')), ['carol: anyone?']);
  const stats = await (await fetch(server.url + 'stats')).json();
  assert.equal(stats.pubsub.topics, 2);
  assert.equal(stats.pubsub.deliveries, 5);
});
