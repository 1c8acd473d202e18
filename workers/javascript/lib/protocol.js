'use strict';
/**
 * The engine ↔ slave protocol's messages (docs/protocol.md, "Engine ↔ slave"): codes, the
 * headers this worker sends, and the checked reading of what the engine sends.
 *
 * Every message is a ZeroMQ multipart message: a msgpack array header whose first element is
 * the code, and for INVOKE, CHUNK and CHOKE one more frame with the raw payload.
 * @module cocaine-worker/protocol
 */

const { Encoder, Decoder } = require('@msgpack/msgpack');

// One of each, reused (making them is most of msgpack's cost for headers this small).
const encoder = new Encoder();
const decoder = new Decoder();

/** Message codes. */
const Code = Object.freeze({
  HANDSHAKE: 1,
  CONFIGURE: 2,
  HEARTBEAT: 3,
  INVOKE: 4,
  CHUNK: 5,
  CHOKE: 6,
  ERROR: 7,
  TERMINATE: 8,
  LOG: 9,
  CANCEL: 11,
  CREDIT: 12,
  HEADERS: 13,
});

/** Error codes carried by ERROR. */
const Status = Object.freeze({
  SERVER_ERROR: 500,
  NOT_FOUND: 404,
  APP_ERROR: 502,
  UNAVAILABLE: 503,
});

/** The most UTF-8 bytes of an ERROR's message and traceback (the engine cuts to the same). */
const MESSAGE_LIMIT = 4 * 1024;
const TRACEBACK_LIMIT = 16 * 1024;
/** Bytes kept for a CHUNK's header when checking a chunk against `max_message`. */
const HEADER_ROOM = 1024;

/**
 * A header frame: `header(Code.CHOKE, jobId)`.
 * @param {...*} fields the code, then the message's fields
 * @returns {Buffer}
 */
function header(...fields) {
  const bytes = encoder.encode(fields);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A message from the engine that this worker cannot understand. */
class ProtocolError extends Error {}

const isInt = (value) => Number.isSafeInteger(value);
const isMap = (value) => value !== null && typeof value === 'object' && !Array.isArray(value)
  && !(value instanceof Uint8Array);

/**
 * Read one message from the engine: `{code, ...fields}`, or a ProtocolError saying what is
 * wrong with it. Codes this worker does not know come back as `{code}` (ignored by callers).
 * CHUNK and CHOKE from the engine are a piece, and the end, of a streamed body: `{code, jobId,
 * data}`; an INVOKE whose options say `stream` has `streamed: true`.
 * @param {Buffer[]} frames the message's frames (header first)
 * @returns {{code: number, jobId?: number, event?: string, meta?: object, body?: Buffer,
 *            streamed?: boolean, data?: Buffer, settings?: object, n?: number,
 *            reason?: string}}
 */
function parse(frames) {
  if (!frames.length) throw new ProtocolError('an empty message');
  let fields;
  try {
    fields = decoder.decode(frames[0]);
  } catch (err) {
    throw new ProtocolError(`the header frame is not msgpack (${err.message})`);
  }
  if (!Array.isArray(fields) || !isInt(fields[0])) {
    throw new ProtocolError('the header frame is not a msgpack array starting with a code');
  }
  const [code, ...rest] = fields;
  switch (code) {
    case Code.CONFIGURE:
      if (!isMap(rest[0])) throw new ProtocolError('CONFIGURE without a settings map');
      return { code, settings: rest[0] };
    case Code.INVOKE: {
      const [jobId, event, meta, options] = rest;
      if (!isInt(jobId)) throw new ProtocolError('INVOKE without an integer job id');
      if (typeof event !== 'string') {
        throw new ProtocolError(`INVOKE of job ${jobId} without an event name`);
      }
      if (meta !== undefined && meta !== null && !isMap(meta)) {
        throw new ProtocolError(`INVOKE of job ${jobId} with a meta that is not a map`);
      }
      if (frames.length > 2) {
        throw new ProtocolError(`INVOKE of job ${jobId} with ${frames.length} frames (at most 2)`);
      }
      const streamed = isMap(options) && options.stream === true;
      return { code, jobId, event, meta: meta || {}, body: frames[1] || Buffer.alloc(0), streamed };
    }
    case Code.CHUNK:
    case Code.CHOKE: {
      const name = code === Code.CHUNK ? 'CHUNK' : 'CHOKE';
      if (!isInt(rest[0])) throw new ProtocolError(`${name} of a body without an integer job id`);
      if (frames.length > 2) {
        throw new ProtocolError(`${name} of job ${rest[0]} with ${frames.length} frames (at most 2)`);
      }
      return { code, jobId: rest[0], data: frames[1] || Buffer.alloc(0) };
    }
    case Code.CREDIT:
      if (!isInt(rest[0]) || !isInt(rest[1]) || rest[1] < 0) {
        throw new ProtocolError('CREDIT without a job id and a count');
      }
      return { code, jobId: rest[0], n: rest[1] };
    case Code.CANCEL:
      if (!isInt(rest[0])) throw new ProtocolError('CANCEL without a job id');
      return { code, jobId: rest[0] };
    case Code.TERMINATE:
      return { code, reason: typeof rest[0] === 'string' ? rest[0] : '' };
    default:
      return { code };
  }
}

/**
 * `text` cut to at most `limit` UTF-8 bytes with a note `… [N bytes cut]`; with `keepEnd`, a
 * quarter of the room from the start and the rest from the end (a stack trace's end matters).
 * @param {string} text
 * @param {number} limit
 * @param {boolean} [keepEnd]
 * @returns {string}
 */
function cut(text, limit, keepEnd = false) {
  const bytes = Buffer.from(String(text), 'utf8');
  if (bytes.length <= limit) return bytes.toString('utf8');
  const room = Math.max(0, limit - Buffer.byteLength(` … [${bytes.length} bytes cut] `));
  // toString drops a character cut in half as U+FFFD; trim it away.
  const clean = (s) => s.replace(/^\uFFFD+|\uFFFD+$/g, '');
  if (!keepEnd) {
    const head = clean(bytes.subarray(0, room).toString('utf8'));
    return `${head} … [${bytes.length - Buffer.byteLength(head)} bytes cut]`;
  }
  const head = clean(bytes.subarray(0, Math.floor(room / 4)).toString('utf8'));
  const tailRoom = room - Buffer.byteLength(head);
  const tail = clean(bytes.subarray(bytes.length - tailRoom).toString('utf8'));
  const gone = bytes.length - Buffer.byteLength(head) - Buffer.byteLength(tail);
  return `${head} … [${gone} bytes cut] ${tail}`;
}

module.exports = {
  Code, Status, MESSAGE_LIMIT, TRACEBACK_LIMIT, HEADER_ROOM, ProtocolError, header, parse, cut,
};
