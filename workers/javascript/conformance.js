'use strict';
/**
 * The conformance app: the events `cocaine conformance` drives (echo, stream, sleep, fail),
 * on cocaine-worker. Run: `cocaine conformance -- node workers/javascript/conformance.js`.
 */

const { setTimeout: sleep } = require('node:timers/promises');
const { Worker } = require('./lib');

const worker = new Worker();

/** The body, unchanged. */
worker.on('echo', (req) => req.body);

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
