'use strict';
/**
 * The JavaScript example app: an echo, and a count that streams 1..N (N is the body, default 3),
 * one line a chunk. Run: `cocaine run examples/javascript/manifest.json`.
 */

const { Worker } = require('cocaine-worker');

const worker = new Worker();

// req.read(): the body whole, also when it streams in pieces (a large HTTP upload, Client.open).
worker.on('echo', (req) => req.read());

worker.on('count', async function* count(req) {
  const n = req.body.length ? Number.parseInt(req.body.toString(), 10) : 3;
  if (!(n >= 0 && n <= 1000000)) throw new RangeError(`count wants a number from 0 to 1000000, not '${req.body}'`);
  for (let i = 1; i <= n; i++) yield `${i}\n`;
});

worker.run();
