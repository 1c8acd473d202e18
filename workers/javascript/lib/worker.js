'use strict';
/**
 * The Worker: handlers by event, and the conversation with the engine (handshake, configure,
 * ready, jobs, terminate), as docs/protocol.md's "Engine ↔ slave" says.
 * @module cocaine-worker/worker
 */

const { Body } = require('./body');
const { Channel } = require('./channel');
const { Job } = require('./job');
const { Code, Status, ProtocolError, header, parse } = require('./protocol');

/** Settings used when CONFIGURE leaves one out: [default, lowest, highest]. */
const SETTINGS = Object.freeze({
  concurrency: [1, 1, 10000],
  heartbeat_interval: [1, 0.01, 3600],
  credit: [8, 1, 1000000],
  max_message: [256 * 2 ** 20, 4096, 2 ** 32],
});
/** INVOKEs held beyond `concurrency` (the engine sends no more than it; a guard only). */
const MAX_WAITING = 10000;
/** Milliseconds TERMINATE waits for the jobs in flight before exiting anyway. */
const TERMINATE_GRACE_MS = 5000;

const ENV = Object.freeze({ endpoint: 'COCAINE_ENDPOINT', slaveId: 'COCAINE_SLAVE_ID', app: 'COCAINE_APP' });

function warn(text) {
  process.stderr.write(`cocaine-worker: ${text}\n`);
}

/**
 * A handler: gets the request and answers with a Buffer, a Uint8Array or a string (one chunk),
 * null/undefined (an empty answer), a `Response` (status, headers and such a body), a Promise
 * of one of these, or a (sync or async) generator whose every yield is one chunk (its first
 * may be a `Response` without a body: the answer's status and headers).
 * @callback Handler
 * @param {import('./job').Request} request
 * @returns {*}
 */

class Worker {
  /**
   * A worker for the slave the engine started: endpoint, slave id and app name come from
   * `COCAINE_ENDPOINT`, `COCAINE_SLAVE_ID` and `COCAINE_APP` unless given.
   * @param {{endpoint?: string, slaveId?: string, app?: string}} [options]
   * @throws {Error} naming the variable that is missing
   */
  constructor(options = {}) {
    for (const [key, name] of Object.entries(ENV)) {
      const value = options[key] !== undefined ? options[key] : process.env[name];
      if (typeof value !== 'string' || value === '') {
        throw new Error(`${name} is not set: this program is a cocaine worker, started by a node `
          + 'for an app of type "exec" (cocaine run manifest.json) or by cocaine conformance; '
          + `to start it by hand, set ${Object.values(ENV).join(', ')}`);
      }
      this[key] = value;
    }
    /** @type {Map<string, Handler>} */
    this.handlers = new Map();
    this.jobs = new Map();
    /** Streamed bodies of jobs not ended (running or waiting), by job id: pieces go there. */
    this.bodies = new Map();
    this.waiting = [];
    this.settings = null;
    this.channel = null;
    this.terminating = false;
    this.exiting = false;
  }

  /**
   * Serve `event` with `handler` (replacing any handler it had).
   * @param {string} event
   * @param {Handler} handler
   * @returns {Worker} this worker, to chain calls
   */
  on(event, handler) {
    if (typeof event !== 'string' || event === '') {
      throw new TypeError('worker.on(event, handler): the event must be a non-empty string');
    }
    if (typeof handler !== 'function') {
      throw new TypeError(`worker.on('${event}', handler): the handler must be a function`);
    }
    this.handlers.set(event, handler);
    return this;
  }

  /**
   * Connect to the engine and serve jobs until TERMINATE, then exit the process (status 0).
   * The process also exits (status 1) when its parent, the node, is gone.
   * A failure of the connection itself is written to stderr and exits with status 1.
   * @returns {Promise<void>} never settles: the process exits
   */
  async run() {
    if (this.channel) throw new Error('worker.run() was called twice');
    try {
      await this._serve();
    } catch (err) {
      warn(`cannot serve: ${err && err.stack ? err.stack : err}`);
      this._exit(1, null, 0);
    }
  }

  async _serve() {
    this.channel = new Channel(this.endpoint, this.slaveId);
    this.channel.watchParent(() => this._exit(1, 'the parent process is gone', 0));
    await this.channel.send([header(Code.HANDSHAKE, this.slaveId, process.pid, { flow: true, stream: true })]);
    for (;;) {
      const frames = await this.channel.receive();
      if (frames === null) return;
      let message;
      try {
        message = parse(frames);
      } catch (err) {
        if (!(err instanceof ProtocolError)) throw err;
        warn(`ignored a message from the engine: ${err.message}`);
        continue;
      }
      this._handle(message);
    }
  }

  _handle(message) {
    switch (message.code) {
      case Code.CONFIGURE:
        if (this.settings) warn('ignored a second CONFIGURE');
        else this._configure(message.settings);
        break;
      case Code.INVOKE:
        if (!this.settings) warn(`ignored INVOKE of job ${message.jobId} before CONFIGURE`);
        else if (this.jobs.has(message.jobId)) warn(`ignored a second INVOKE of job ${message.jobId}`);
        else if (!this.terminating) this._invoke(message);
        break;
      case Code.CHUNK:
      case Code.CHOKE: { // a piece, or the end, of a streamed body (dropped once its job ended)
        const body = this.bodies.get(message.jobId);
        if (body && message.code === Code.CHUNK) body.push(message.data);
        else if (body) body.end();
        break;
      }
      case Code.CREDIT: {
        const job = this.jobs.get(message.jobId);
        if (job) job.addCredit(message.n);
        break;
      }
      case Code.CANCEL: {
        const job = this.jobs.get(message.jobId);
        if (job) job.cancel();
        const at = this.waiting.findIndex((invoke) => invoke.jobId === message.jobId);
        if (at >= 0) { // not started yet: it never will be
          this.waiting.splice(at, 1);
          this.bodies.delete(message.jobId);
          this._reply([header(Code.CHOKE, message.jobId)]);
        }
        break;
      }
      case Code.TERMINATE:
        this._terminate(message.reason);
        break;
      default:
        warn(`ignored a message of code ${message.code}`);
    }
  }

  _configure(given) {
    const settings = {};
    for (const [name, [fallback, low, high]] of Object.entries(SETTINGS)) {
      const value = given[name];
      if (value === undefined || value === null) {
        settings[name] = fallback;
      } else if (typeof value !== 'number' || !(value >= low && value <= high)
          || (name !== 'heartbeat_interval' && !Number.isInteger(value))) {
        const what = name === 'heartbeat_interval' ? 'a number' : 'an integer';
        warn(`CONFIGURE's ${name} ${JSON.stringify(value)} is not ${what} from ${low} to ${high}; `
          + `using ${fallback}`);
        settings[name] = fallback;
      } else {
        settings[name] = value;
      }
    }
    this.settings = settings;
    this.limits = { credit: given.credit === undefined ? null : settings.credit, maxMessage: settings.max_message };
    this.channel.send([header(Code.HEARTBEAT, this.slaveId)]).catch(() => {}); // ready
    this.channel.startHeartbeats(settings.heartbeat_interval * 1000);
  }

  _invoke(invoke) {
    const { jobId } = invoke;
    invoke.reader = new Body(invoke.body, invoke.streamed,
      (n) => this._reply([header(Code.CREDIT, jobId, n)]));
    if (invoke.streamed) this.bodies.set(jobId, invoke.reader);
    if (this.jobs.size < this.settings.concurrency) {
      this._start(invoke);
    } else if (this.waiting.length < MAX_WAITING) {
      this.waiting.push(invoke);
    } else {
      this.bodies.delete(jobId);
      this._reply([header(Code.ERROR, invoke.jobId, Status.UNAVAILABLE,
        `this slave already holds ${MAX_WAITING} jobs beyond its concurrency`, '')]);
    }
  }

  _start(invoke) {
    const job = new Job(this.channel, invoke, this.limits, invoke.reader);
    this.jobs.set(invoke.jobId, job);
    const handler = this.handlers.get(invoke.event);
    if (handler) job.run(handler);
    else job.fail(Status.NOT_FOUND, `no handler for event '${invoke.event}'`);
    job.done.then(() => {
      this.jobs.delete(invoke.jobId);
      this.bodies.delete(invoke.jobId);
      if (this.waiting.length && !this.terminating) this._start(this.waiting.shift());
      if (this.terminating && this.jobs.size === 0) this._exit(0);
    });
  }

  _reply(frames) {
    this.channel.send(frames).catch((err) => warn(`a reply was not sent: ${err.message}`));
  }

  _terminate(reason) {
    if (this.terminating) return;
    this.terminating = true;
    for (const invoke of this.waiting.splice(0)) this.bodies.delete(invoke.jobId);
    if (this.jobs.size === 0) {
      this._exit(0);
      return;
    }
    warn(`terminating (${reason || 'no reason given'}): waiting up to ${TERMINATE_GRACE_MS} ms `
      + `for ${this.jobs.size} job(s) in flight`);
    setTimeout(() => this._exit(0), TERMINATE_GRACE_MS).unref();
  }

  _exit(status, why, lingerMs) {
    if (this.exiting) return;
    this.exiting = true;
    if (why) warn(`exiting: ${why}`);
    // The answers queued reach ZeroMQ first, which sends them for the linger after close.
    const channel = this.channel;
    const flushed = lingerMs === 0 || !channel ? Promise.resolve() : channel.flushed(1000);
    flushed.then(() => {
      if (channel) channel.close(lingerMs);
      process.exit(status);
    });
  }
}

module.exports = { Worker, SETTINGS };
