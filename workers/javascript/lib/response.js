'use strict';
/**
 * `Response`: an answer with a status and headers (how an HTTP driver presents it), sent to the
 * engine as HEADERS `[13, job_id, {status, headers}]` before the answer's first chunk.
 *
 * ```js
 * const { Response } = require('cocaine-worker');
 * worker.on('create', () => new Response('{"ok":true}', { status: 201,
 *   headers: { 'Content-Type': 'application/json' } }));
 * worker.on('list', async function* () {
 *   yield new Response(null, { headers: [['Content-Type', 'text/plain']] }); // first, no body
 *   yield 'a\n'; yield 'b\n';
 * });
 * ```
 * @module cocaine-worker/response
 */

/** The most headers one answer carries, and their names and values together at most. */
const MAX_HEADERS = 64;
const MAX_HEADER_BYTES = 64 * 1024;
/** An HTTP field name (RFC 9110 token). */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/**
 * `headers` (an object, a Map, or an array of `[name, value]` pairs) as HEADERS carries them,
 * if they and `status` are valid: status an integer 100..599, at most 64 headers, names HTTP
 * tokens, values strings without CR, LF or NUL, all of them at most 64 KiB; else a TypeError
 * or RangeError saying what is wrong.
 * @param {*} status
 * @param {*} headers
 * @returns {Array<[string, string]>}
 */
function checkHeaders(status, headers) {
  if (!Number.isInteger(status)) {
    throw new TypeError(`status must be an integer (an HTTP status, 100..599), not ${JSON.stringify(status)}`);
  }
  if (status < 100 || status > 599) {
    throw new RangeError(`status ${status} is not an HTTP status: give one in 100..599`);
  }
  if (headers === undefined || headers === null) return [];
  let items;
  if (Array.isArray(headers) || headers instanceof Map) {
    items = [...headers];
  } else if (typeof headers === 'object' && !(headers instanceof Uint8Array)) {
    items = Object.entries(headers);
  } else {
    throw new TypeError(`headers must be an object or an array of [name, value] pairs, not a ${typeof headers}`);
  }
  if (items.length > MAX_HEADERS) {
    throw new RangeError(`${items.length} headers: an answer carries at most ${MAX_HEADERS}`);
  }
  let size = 0;
  const pairs = items.map((item) => {
    if (!Array.isArray(item) || item.length !== 2) {
      throw new TypeError(`header ${JSON.stringify(item)} is not a [name, value] pair`);
    }
    const [name, value] = item;
    if (typeof name !== 'string' || typeof value !== 'string') {
      throw new TypeError(`header ${JSON.stringify(name)}: its name and value must be strings, `
        + `not ${typeof name} and ${typeof value}`);
    }
    if (!TOKEN.test(name)) {
      throw new RangeError(`header name ${JSON.stringify(name)} is not valid: letters, digits and `
        + "!#$%&'*+-.^_`|~ only (no spaces, colons or line breaks)");
    }
    if (/[\r\n\0]/.test(value)) {
      throw new RangeError(`header ${JSON.stringify(name)}: its value ${JSON.stringify(value)} `
        + 'holds a line break or NUL');
    }
    size += name.length + value.length;
    return [name, value];
  });
  if (size > MAX_HEADER_BYTES) {
    throw new RangeError(`the headers hold ${size} characters: at most ${MAX_HEADER_BYTES}`);
  }
  return pairs;
}

/** An answer's status, headers and (optional) body. */
class Response {
  /**
   * @param {*} [body] the answer (Buffer, Uint8Array, string, or null/undefined for none)
   * @param {{status?: number, headers?: object|Map|Array<[string, string]>}} [options]
   *   status 100..599 (default 200); headers an object or `[name, value]` pairs (at most 64)
   * @throws {TypeError|RangeError} saying what is wrong with the status or a header
   */
  constructor(body = null, { status = 200, headers = undefined } = {}) {
    this.headers = checkHeaders(status, headers);
    this.status = status;
    this.body = body === undefined ? null : body;
  }
}

module.exports = { Response, checkHeaders, MAX_HEADERS };
