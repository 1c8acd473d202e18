'use strict';
/**
 * cocaine-worker: write cocaine apps in JavaScript.
 *
 * ```js
 * const { Worker, Response } = require('cocaine-worker');
 * const worker = new Worker();
 * worker.on('echo', (req) => req.body);
 * worker.on('count', async function* (req) { for (let i = 1; i <= 3; i++) yield `${i}\n`; });
 * worker.on('upload', async (req) => {          // a body that may stream in pieces
 *   let size = 0;
 *   for await (const piece of req.stream) size += piece.length;
 *   return new Response(`${size} bytes\n`, { status: 201, headers: { 'Content-Type': 'text/plain' } });
 * });
 * worker.run();
 * ```
 * @module cocaine-worker
 */

const { Worker } = require('./worker');
const { Code, Status } = require('./protocol');
const { Response } = require('./response');
const { Cancelled } = require('./body');

module.exports = { Worker, Response, Cancelled, Code, Status };
