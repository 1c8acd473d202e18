'use strict';
/**
 * cocaine-worker: write cocaine apps in JavaScript.
 *
 * ```js
 * const { Worker } = require('cocaine-worker');
 * const worker = new Worker();
 * worker.on('echo', (req) => req.body);
 * worker.on('count', async function* (req) { for (let i = 1; i <= 3; i++) yield `${i}\n`; });
 * worker.run();
 * ```
 * @module cocaine-worker
 */

const { Worker } = require('./worker');
const { Code, Status } = require('./protocol');

module.exports = { Worker, Code, Status };
