'use strict';
/**
 * One job: call its handler and send its answer (HEADERS if it gave a `Response`, CHUNKs then
 * CHOKE, or one ERROR), within the job's credit (flow: a job that used its credit waits for
 * CREDIT) and stopping when the engine cancels it (a generator is closed with `return()`, so
 * its `finally` blocks run; a read of the body throws `Cancelled`).
 * @module cocaine-worker/job
 */

const { Code, Status, MESSAGE_LIMIT, TRACEBACK_LIMIT, HEADER_ROOM, header, cut } = require('./protocol');
const { Response } = require('./response');

/**
 * What a handler gets.
 * @typedef {object} Request
 * @property {number} id the job's id (unique among this slave's jobs in flight)
 * @property {string} event the event's name (the task)
 * @property {Buffer} body the request's body (may be empty); reading it for a streamed request
 *   throws, saying to use `read()` or `stream`
 * @property {boolean} streamed whether the body arrives in pieces while the handler runs
 * @property {AsyncIterable<Buffer>} stream the body's pieces as they arrive (never empty; a
 *   plain body is one piece, none if empty)
 * @property {() => Promise<Buffer>} read the rest of the body as one Buffer (all of it if
 *   nothing was read yet)
 * @property {object} meta what the driver says about the request (e.g. HTTP headers)
 * @property {AbortSignal} signal aborted when nobody waits for the answer any more (CANCEL)
 */

/** The handler's answer cannot be sent: the job fails with 502 saying why. */
class AnswerError extends Error {}

/**
 * A handler's value as chunk bytes: Buffer and Uint8Array as they are, a string as UTF-8,
 * undefined and null as no chunk.
 * @param {*} value
 * @returns {Buffer|null}
 */
function toBytes(value) {
  if (value === undefined || value === null) return null;
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  if (typeof value === 'string') return Buffer.from(value, 'utf8');
  const what = typeof value === 'object' ? (value.constructor && value.constructor.name) || 'object' : typeof value;
  throw new AnswerError(`the handler answered a ${what}; answer a Buffer, a Uint8Array, a string, `
    + 'or null/undefined for an empty answer (JSON.stringify an object first)');
}

const isIterator = (value, symbol) => value !== null && typeof value === 'object'
  && typeof value[symbol] === 'function' && typeof value.next === 'function';

class Job {
  /**
   * @param {import('./channel').Channel} channel where the answer goes
   * @param {{jobId: number, event: string, body: Buffer, meta: object}} invoke the INVOKE
   * @param {{credit: number|null, maxMessage: number}} limits the CONFIGURE's flow settings
   * @param {import('./body').Body} body the request's body (its pieces, for a streamed one)
   */
  constructor(channel, invoke, limits, body) {
    this.channel = channel;
    this.id = invoke.jobId;
    this.limits = limits;
    this.credit = limits.credit; // null: unlimited
    this.ended = false; // its CHOKE or ERROR is sent: nothing more goes out for it
    this.cancelled = null; // the reason, once the engine has cancelled the job
    this.abort = null; // made when the handler first reads request.signal
    this.wake = null; // resolves a wait for credit
    this.body = body;
    this.started = false; // something of the answer (HEADERS or a chunk) went out
    let ended;
    /** Resolves once the job has ended (its CHOKE or ERROR is queued). */
    this.done = new Promise((resolve) => { ended = resolve; });
    this._ended = ended;
    const job = this;
    const stream = { [Symbol.asyncIterator]: () => body[Symbol.asyncIterator]() };
    /** @type {Request} */
    this.request = {
      id: invoke.jobId, event: invoke.event, meta: invoke.meta, streamed: body.streamed, stream,
      get body() {
        if (body.streamed) {
          throw new Error(`req.body: the body of job ${invoke.jobId} streams in pieces while the `
            + 'handler runs: read it with `await req.read()` (all of it) or '
            + '`for await (const piece of req.stream)` (check `req.streamed`)');
        }
        return invoke.body;
      },
      read: () => body.gather(),
      get signal() {
        if (job.abort === null) {
          job.abort = new AbortController();
          if (job.cancelled) job.abort.abort(job.cancelled);
        }
        return job.abort.signal;
      },
    };
  }

  /** CREDIT: the job may send `n` more chunks. @param {number} n */
  addCredit(n) {
    if (this.credit === null) return;
    this.credit += n;
    this._wakeUp();
  }

  /**
   * CANCEL: nobody waits for the answer. The job ends at once with a CHOKE (its slot is
   * free); `request.signal` is aborted, and a generator is closed at its next step (its
   * `finally` blocks run); what the handler still answers is dropped.
   */
  cancel() {
    if (this.ended) return;
    const why = `job ${this.id} was cancelled: nobody waits for its answer`;
    this.body.cancel(why);
    this._finish([header(Code.CHOKE, this.id)]);
    this.cancelled = new Error(why);
    if (this.abort !== null) this.abort.abort(this.cancelled);
    this._wakeUp();
  }

  _wakeUp() {
    if (this.wake) {
      const wake = this.wake;
      this.wake = null;
      wake();
    }
  }

  /**
   * Run `handler` and answer; never rejects (every outcome becomes CHOKE or ERROR).
   * @param {Function} handler
   * @returns {Promise<void>} resolves once the handler has returned (or thrown)
   */
  async run(handler) {
    let stream = null;
    try {
      let result = handler(this.request);
      if (result && typeof result.then === 'function') result = await result;
      if (isIterator(result, Symbol.asyncIterator) || isIterator(result, Symbol.iterator)) {
        stream = result;
        await this._stream(stream);
        this._finish([header(Code.CHOKE, this.id)]);
      } else if (!this.ended) {
        const head = result instanceof Response ? result : null;
        const last = toBytes(head ? head.body : result);
        if (last !== null) this._checkSize(last);
        if (head) this._head(head);
        this._finish(last === null ? [header(Code.CHOKE, this.id)] : [header(Code.CHOKE, this.id), last]);
      }
    } catch (err) {
      if (stream) await closeQuietly(stream);
      this.fail(Status.APP_ERROR, describe(err), err instanceof AnswerError ? '' : stackOf(err));
    }
  }

  async _stream(iterator) {
    for (;;) {
      if (this.ended) {
        await closeQuietly(iterator);
        return;
      }
      const step = await iterator.next();
      if (step.done) return;
      if (step.value instanceof Response) {
        if (this.started) {
          throw new AnswerError('the generator yielded a Response after the answer had started: '
            + 'yield new Response(null, {status, headers}) first, before any chunk, and only once');
        }
        if (step.value.body !== null) {
          throw new AnswerError('the generator yielded a Response with a body: yield '
            + 'new Response(null, {status, headers}) first, then the body as chunks');
        }
        if (!this.ended) this._head(step.value);
        continue;
      }
      const data = toBytes(step.value);
      if (data === null) continue;
      while (this.credit !== null && this.credit <= 0 && !this.ended) {
        await new Promise((resolve) => { this.wake = resolve; });
      }
      if (this.ended) continue; // closes the iterator above
      this._checkSize(data);
      if (this.credit !== null) this.credit -= 1;
      this.started = true;
      await this._send([header(Code.CHUNK, this.id), data]);
    }
  }

  /** HEADERS: how the answer should be presented (its status and headers). */
  _head(response) {
    this.started = true;
    this._send([header(Code.HEADERS, this.id, { status: response.status, headers: response.headers })])
      .catch(() => {});
  }

  _checkSize(data) {
    const largest = this.limits.maxMessage;
    if (data.length > largest - HEADER_ROOM) {
      throw new AnswerError(`an answer's chunk of ${data.length} bytes is larger than the node `
        + `takes from a slave (${largest} bytes with its header): send it as several smaller `
        + 'chunks (yield them from a generator)');
    }
  }

  /**
   * End the job with an ERROR (its message and traceback cut to the protocol's limits);
   * nothing if it has ended already.
   * @param {number} code
   * @param {string} message
   * @param {string} [traceback]
   */
  fail(code, message, traceback = '') {
    this._finish([header(Code.ERROR, this.id, code, cut(message, MESSAGE_LIMIT),
      cut(traceback, TRACEBACK_LIMIT, true))]);
  }

  /** Send the job's last message (CHOKE or ERROR), once. */
  _finish(frames) {
    if (this.ended) return;
    this.ended = true;
    this.body.close();
    this._ended();
    this._send(frames).catch(() => {});
  }

  async _send(frames) {
    try {
      await this.channel.send(frames);
    } catch (err) {
      if (!this.channel.closed) throw err;
    }
  }
}

/** `Name: message` of a thrown value (anything may be thrown), never throwing itself. */
function describe(err) {
  try {
    if (err instanceof Error) return `${err.name}: ${err.message}`;
    return `the handler threw ${typeof err === 'string' ? err : String(err)}`;
  } catch {
    return 'the handler threw a value that cannot be shown';
  }
}

function stackOf(err) {
  try {
    return err instanceof Error && typeof err.stack === 'string' ? err.stack : '';
  } catch {
    return '';
  }
}

async function closeQuietly(iterator) {
  try {
    if (typeof iterator.return === 'function') await iterator.return(undefined);
  } catch {
    // a finally block that throws: the job ends anyway
  }
}

module.exports = { Job, toBytes, AnswerError };
