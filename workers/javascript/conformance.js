'use strict';
/**
 * The conformance app: the events `cocaine conformance` drives (echo, stream, sleep, fail,
 * sizes, status), on cocaine-worker. Run: `cocaine conformance -- node workers/javascript/conformance.js`.
 */

const { setTimeout: sleep } = require('node:timers/promises');
const { Worker, Response } = require('./lib');

const worker = new Worker();

/** The body, unchanged (a streamed one whole, once it is complete). */
worker.on('echo', (req) => req.read());

/** Per piece of the body, as it is read: one chunk, the piece's size in ASCII decimal. */
worker.on('sizes', async function* sizes(req) {
  for await (const piece of req.stream) yield String(piece.length);
});

/** Body n: HEADERS with status n and `X-Conformance: yes`, then `status n` (n outside
 * 100..599: the library refuses it, ERROR 502). */
worker.on('status', (req) => {
  const n = Number.parseInt(req.body.toString('ascii'), 10);
  return new Response(`status ${n}`, { status: n, headers: { 'X-Conformance': 'yes' } });
});

/** Body n (0..100000): n chunks, chunk i being the ASCII decimal i. */
worker.on('stream', async function* stream(req) {
  const n = Number.parseInt(req.body.toString('ascii'), 10);
  if (!(n >= 0 && n <= 100000)) throw new RangeError(`stream wants a count from 0 to 100000, not '${req.body}'`);
  for (let i = 0; i < n; i++) yield String(i);
});

/** Body: milliseconds to wait on a timer (heartbeats and other jobs go on), then `slept`. */
worker.on('sleep', async (req) => {
  const ms = Number.parseInt(req.body.toString('ascii'), 10);
  if (!(ms >= 0)) throw new RangeError(`sleep wants milliseconds, not '${req.body}'`);
  await sleep(ms);
  return 'slept';
});

/** Fails with the body as the message: ERROR 502. */
worker.on('fail', (req) => {
  throw new Error(req.body.toString('utf8'));
});

worker.run();
