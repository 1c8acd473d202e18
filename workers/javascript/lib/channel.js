'use strict';
/**
 * A slave's sockets: the main DEALER (identity: the slave id) that carries the conversation,
 * sends in order from a queue (a zeromq.js socket takes one send at a time), and a second
 * DEALER (identity `<id>/hb`) that a timer beats on, so heartbeats never wait behind answers.
 * A second timer watches the parent process: a worker never outlives its node.
 * @module cocaine-worker/channel
 */

const zmq = require('zeromq');
const { Code, header } = require('./protocol');

/** Milliseconds queued messages may still go out once the sockets close (then dropped). */
const LINGER_MS = 1000;
/** How often the parent process is checked, in milliseconds. */
const PARENT_CHECK_MS = 200;

class Channel {
  /**
   * @param {string} endpoint the engine's ROUTER
   * @param {string} slaveId this slave's id (the main socket's routing identity)
   */
  constructor(endpoint, slaveId) {
    this.endpoint = endpoint;
    this.slaveId = slaveId;
    this.socket = new zmq.Dealer({ routingId: slaveId, linger: LINGER_MS });
    this.socket.connect(endpoint);
    this.heartbeat = null;
    this.timers = [];
    this.queue = [];
    this.sending = false;
    this.idle = [];
    this.closed = false;
  }

  /**
   * Queue a message (its frames) on the main socket; resolves once ZeroMQ has taken it.
   * Messages go out in the order they were queued.
   * @param {Array<Buffer|Uint8Array>} frames
   * @returns {Promise<void>}
   */
  send(frames) {
    return new Promise((resolve, reject) => {
      this.queue.push({ frames, resolve, reject });
      if (!this.sending) this._drain();
    });
  }

  async _drain() {
    this.sending = true;
    while (this.queue.length && !this.closed) {
      const { frames, resolve, reject } = this.queue.shift();
      try {
        await this.socket.send(frames);
        resolve();
      } catch (err) {
        reject(err);
      }
    }
    this.sending = false;
    for (const resolve of this.idle.splice(0)) resolve();
  }

  /**
   * Resolves once every queued message has been taken by ZeroMQ, or after `timeoutMs`.
   * @param {number} timeoutMs
   * @returns {Promise<void>}
   */
  flushed(timeoutMs) {
    if (!this.sending) return Promise.resolve();
    return new Promise((resolve) => {
      this.idle.push(resolve);
      setTimeout(resolve, timeoutMs).unref();
    });
  }

  /**
   * The next message from the engine (its frames), or null once the socket is closed.
   * @returns {Promise<Buffer[]|null>}
   */
  async receive() {
    try {
      return await this.socket.receive();
    } catch (err) {
      if (this.closed) return null;
      throw err;
    }
  }

  /**
   * Start the heartbeat timer: HEARTBEAT from the second socket every `intervalMs`. A beat
   * is skipped while the previous one still waits in ZeroMQ (the engine is not reading).
   * @param {number} intervalMs
   */
  startHeartbeats(intervalMs) {
    this.heartbeat = new zmq.Dealer({ routingId: `${this.slaveId}/hb`, linger: 0 });
    this.heartbeat.connect(this.endpoint);
    const beat = header(Code.HEARTBEAT, this.slaveId);
    let busy = false;
    this.timers.push(setInterval(() => {
      if (busy || this.closed) return;
      busy = true;
      this.heartbeat.send(beat).catch(() => {}).finally(() => { busy = false; });
    }, intervalMs));
  }

  /**
   * Call `onGone` once the process that started this worker is gone (its parent pid changed).
   * @param {() => void} onGone
   */
  watchParent(onGone) {
    const parent = process.ppid;
    this.timers.push(setInterval(() => {
      if (process.ppid !== parent) onGone();
    }, PARENT_CHECK_MS));
  }

  /**
   * Stop the timers and close both sockets; what is queued in ZeroMQ may go out for
   * `lingerMs` more (0: drop it now).
   * @param {number} [lingerMs]
   */
  close(lingerMs = LINGER_MS) {
    if (this.closed) return;
    this.closed = true;
    for (const timer of this.timers) clearInterval(timer);
    for (const { reject } of this.queue.splice(0)) reject(new Error('the channel is closed'));
    for (const socket of [this.socket, this.heartbeat]) {
      if (socket === null) continue;
      socket.linger = lingerMs;
      socket.close();
    }
  }
}

module.exports = { Channel };
