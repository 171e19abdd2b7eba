// Servers for the tests: `wsx serve` and the axum_echo example, each on a port of its own.
//
// Each is started with port 0 and the port is read from its `listening on` line, so the kernel
// picks a free port at bind time (no probe-then-bind race between test files running at once).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const WSX = fileURLToPath(new URL('../target/release/wsx', import.meta.url));
export const AXUM_ECHO = fileURLToPath(new URL('../target/release/examples/axum_echo', import.meta.url));

/** `wsx serve` on 127.0.0.1; extra arguments are passed on. */
export function startWsxServe(...args) {
  assert.ok(existsSync(WSX), `${WSX} is missing: run \`cargo build --release\` in the repository root`);
  return startListening('wsx serve', WSX, ['serve', '--listen', '127.0.0.1:0', ...args]);
}

/** The axum_echo example on 127.0.0.1. */
export function startAxumEcho() {
  assert.ok(existsSync(AXUM_ECHO), `${AXUM_ECHO} is missing: run ` +
    '`cargo build --release -p wsx --features axum --example axum_echo` in the repository root');
  return startListening('axum_echo', AXUM_ECHO, ['127.0.0.1:0']);
}

/**
 * Spawns `program` and resolves once it prints `listening on [scheme://]127.0.0.1:PORT`, with
 * `port`, `url` (http://127.0.0.1:PORT/), `ws` (ws://127.0.0.1:PORT), `child`, `exited` (a
 * promise of { code, signal }), `output()` and `stop()` (SIGTERM, SIGKILL after 5 s).
 */
async function startListening(name, program, args) {
  const child = spawn(program, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let announced;
  const listening = new Promise((resolve) => { announced = resolve; });
  const onData = (d) => {
    output += d;
    const m = /listening on (?:\w+:\/\/)?127\.0\.0\.1:(\d+)/.exec(output);
    if (m) announced(Number(m[1]));
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  let running = true;
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => {
    running = false;
    resolve({ code, signal });
  }));
  // Should this process die without running `after`, take the server with it.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);

  const stop = async () => {
    if (running) {
      child.kill('SIGTERM');
      const force = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(force);
    }
    process.removeListener('exit', killOnExit);
  };

  let timer;
  const port = await Promise.race([
    listening,
    exited.then((status) => { throw new Error(`${name} exited (${JSON.stringify(status)}) before listening:\n${output}`); }),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${name} did not listen within 15 s:\n${output}`)), 15_000);
    }),
  ]).catch(async (e) => {
    await stop();
    throw e;
  }).finally(() => clearTimeout(timer));
  return {
    port,
    url: `http://127.0.0.1:${port}/`,
    ws: `ws://127.0.0.1:${port}`,
    child,
    exited,
    output: () => output,
    stop,
  };
}

/** Chromium as the tests launch it: Debian's build, headless, without background traffic. */
export const CHROMIUM = {
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
};

/** Deterministic pseudo-random (incompressible) bytes: xorshift32 from `seed`. */
export function randomBytes(n, seed) {
  const b = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; b[i] = x & 0xff; }
  return b;
}

/** Text of exactly `bytes` bytes of UTF-8, mixing 1- to 4-byte characters. */
export function textOfBytes(bytes) {
  const units = ['wsx ', 'é', '€ ', '漢字', '😀', 'ñ', ' 한국어 ', '👩‍👩‍👧', 'abc123\n'];
  const cycle = units.join('');
  let out = cycle.repeat(Math.floor(bytes / Buffer.byteLength(cycle)));
  let size = Buffer.byteLength(out);
  for (const unit of units) {
    const n = Buffer.byteLength(unit);
    if (size + n > bytes) break;
    out += unit;
    size += n;
  }
  return out + 'x'.repeat(bytes - size);
}
