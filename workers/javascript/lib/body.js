'use strict';
/**
 * A request's body as the handler reads it (docs/protocol.md, "Streamed bodies"): `req.stream`,
 * an async iterable of Buffers, and `req.read()`, the rest of the body as one Buffer.
 *
 * A streamed body's pieces come from the engine (CHUNK, then CHOKE at the end) while the
 * handler runs; they are granted back to the engine (CREDIT `[12, job_id, n]`) as the handler
 * reads them, `GRANT_STEP` at a time and before it waits for more, so the engine sends more:
 * the handler's pace sets the client's. A plain request's body is one piece (none if empty).
 * @module cocaine-worker/body
 */

/** Pieces read before they are granted back as one CREDIT (at most half the engine's window). */
const GRANT_STEP = 4;
/** Pieces held unread past which the engine is taken to ignore its window (a guard only). */
const MAX_HELD = 1024;

/** The engine said nobody waits for this job any more (CANCEL): reading the body stops. */
class Cancelled extends Error {
  constructor(message) {
    super(message);
    this.name = 'Cancelled';
  }
}

class Body {
  /**
   * @param {Buffer} first the INVOKE's payload (a plain body, or a streamed body's first piece)
   * @param {boolean} streamed whether more pieces follow from the engine
   * @param {(n: number) => void} grant sends CREDIT for `n` pieces read (streamed bodies only)
   */
  constructor(first, streamed, grant) {
    this.streamed = streamed;
    this.pieces = first.length ? [first] : [];
    this.complete = !streamed; // no more pieces will come
    this.failure = null; // an Error every read throws from now on (cancelled, closed, broken)
    this.grant = grant;
    this.read = 0; // pieces handed out and not yet granted
    this.taken = 0; // pieces handed out in all
    this.whole = streamed ? null : first; // the whole body: a plain one, or once gathered
    this.wake = null; // resolves a read waiting for a piece
  }

  /** Engine CHUNK: the next piece (an empty one adds nothing). @param {Buffer} data */
  push(data) {
    if (this.complete || this.failure) return;
    if (this.pieces.length >= MAX_HELD) {
      this._stop(new Error(`the engine sent more than ${MAX_HELD} pieces of the job's body the `
        + 'handler had not read: far past its window (docs/protocol.md)'));
      return;
    }
    if (data.length) this.pieces.push(data);
    this._wakeUp();
  }

  /** Engine CHOKE: the body is complete. */
  end() {
    this.complete = true;
    this._wakeUp();
  }

  /** CANCEL (or the job ended): a waiting read, and every later one, throws `reason`. */
  _stop(reason) {
    if (this.failure) return;
    this.failure = reason;
    this.pieces = [];
    this._wakeUp();
  }

  /** CANCEL: reading throws `Cancelled`. @param {string} message */
  cancel(message) {
    this._stop(new Cancelled(message));
  }

  /** The job ended: pieces still to come are dropped; reading throws. */
  close() {
    this._stop(new Error('the job has ended: read its body in the handler, before it answers'));
  }

  _wakeUp() {
    if (this.wake) {
      const wake = this.wake;
      this.wake = null;
      wake();
    }
  }

  _grantRead() {
    if (this.read && this.streamed && !this.failure) {
      this.grant(this.read);
    }
    this.read = 0;
  }

  /**
   * The next piece (a non-empty Buffer), or null once the body is complete; rejects with
   * `Cancelled` when the engine cancels the job while (or before) it waits.
   * @returns {Promise<Buffer|null>}
   */
  async next() {
    for (;;) {
      if (this.failure) throw this.failure;
      if (this.pieces.length) {
        this.taken += 1;
        this.read += 1;
        if (this.read >= GRANT_STEP) this._grantRead();
        return this.pieces.shift();
      }
      if (this.complete) return null;
      this._grantRead(); // before waiting: the engine may be waiting for it
      await new Promise((resolve) => { this.wake = resolve; });
    }
  }

  /**
   * The rest of the body as one Buffer (all of it if nothing was read yet, then kept: a second
   * call returns it again). A plain body is always returned whole.
   * @returns {Promise<Buffer>}
   */
  async gather() {
    if (this.whole !== null) return this.whole;
    const fresh = this.taken === 0;
    const pieces = [];
    for (let piece = await this.next(); piece !== null; piece = await this.next()) {
      pieces.push(piece);
    }
    const whole = pieces.length === 1 ? pieces[0] : Buffer.concat(pieces);
    if (fresh) this.whole = whole;
    return whole;
  }

  /** `for await (const piece of req.stream)`. */
  [Symbol.asyncIterator]() {
    return {
      next: async () => {
        const piece = await this.next();
        return piece === null ? { done: true, value: undefined } : { done: false, value: piece };
      },
      [Symbol.asyncIterator]() { return this; },
    };
  }
}

module.exports = { Body, Cancelled, GRANT_STEP };
