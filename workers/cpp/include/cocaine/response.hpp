// cocaine/response.hpp: what a handler gets: the request, and the response it answers through
// (chunks, the end, errors with codes).
#pragma once

#include "flow.hpp"
#include "protocol.hpp"

#include <zmq.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace cocaine {

/// Throw from a handler to fail its job with an error code of your choice (400..599) and a
/// message for the client: `throw cocaine::error(404, "no such user: " + name);`.
/// Any other exception fails the job with 502 and its `what()`.
class error : public std::runtime_error {
public:
    error(int code, const std::string& message) : std::runtime_error(message), code_(code) {
        if (code < 400 || code > 599) {
            throw std::invalid_argument("cocaine::error: code " + std::to_string(code) +
                                        " is not an error code (400..599); message: " + message);
        }
    }

    /// The error code the client receives.
    int code() const noexcept { return code_; }

private:
    int code_;
};

/// One invocation of a handler: which job, which event, and what came with it.
struct request {
    std::uint64_t id = 0;  // the job's id (unique among the jobs in flight)
    std::string event;     // the event's name, as the task names it
    std::string body;      // the request's payload: raw bytes, binary-safe, maybe empty
    msgpack::object meta;  // what the task adds (a map, or nil): HTTP method, path, headers...

    /// `meta[key]` when it is a string, else nothing.
    std::optional<std::string> meta_string(std::string_view key) const {
        if (meta.type != msgpack::type::MAP) return std::nullopt;
        for (std::uint32_t i = 0; i < meta.via.map.size; ++i) {
            const auto& k = meta.via.map.ptr[i].key;
            const auto& v = meta.via.map.ptr[i].val;
            if (k.type == msgpack::type::STR && std::string_view(k.via.str.ptr, k.via.str.size) == key &&
                v.type == msgpack::type::STR) {
                return std::string(v.via.str.ptr, v.via.str.size);
            }
        }
        return std::nullopt;
    }

    std::shared_ptr<msgpack::zone> zone;  // keeps `meta` alive
};

class worker;

/// The answer to one request. Each `write` sends one chunk at once; the job ends when the
/// handler returns (or calls `end`). Not thread-safe: use it from the handler's thread.
class response {
public:
    response(const response&) = delete;
    response& operator=(const response&) = delete;

    /// Send one chunk of the answer. With flow, waits while the job has no credit (its
    /// client has not read enough yet); throws `cocaine::cancelled` once nobody waits for the
    /// answer (let it leave the handler), and `std::length_error` for a chunk larger than the
    /// engine takes (send several smaller ones instead).
    void write(std::string_view data) {
        check_open("write");
        check_size(data.size());
        flow_.take(job_id_, pump_);
        send(protocol::code::chunk, data, true);
    }

    /// Send one chunk of the answer (raw bytes).
    void write(const void* data, std::size_t size) {
        write(std::string_view(static_cast<const char*>(data), size));
    }

    /// End the answer now, `last` as its last chunk: one message instead of a CHUNK and a
    /// CHOKE (the cheapest one-chunk answer). Nothing may be written after.
    void end(std::string_view last) {
        check_open("end");
        check_size(last.size());
        ended_ = true;
        send(protocol::code::choke, last, true);
    }

    /// End the answer now (a CHOKE); returning from the handler does the same.
    void end() {
        check_open("end");
        ended_ = true;
        send(protocol::code::choke, {}, false);
    }

    /// Whether the engine has said nobody waits for this answer any more (CANCEL): a handler
    /// that computes for long without writing can check it and stop early.
    bool is_cancelled() const {
        for (int i = 0; pump_ && i < 1000 && pump_(std::chrono::milliseconds(0)); ++i) {
        }  // on the reading thread: take what the engine sent meanwhile
        return flow_.is_cancelled(job_id_);
    }

    /// Whether the answer has ended.
    bool ended() const noexcept { return ended_; }

    /// The job's id.
    std::uint64_t job_id() const noexcept { return job_id_; }

private:
    friend class worker;

    response(std::uint64_t job_id, zmq::socket_t& out, detail::flow_ledger& flow,
             std::optional<std::int64_t> max_message, detail::pump pump)
        : job_id_(job_id), out_(out), flow_(flow), max_message_(max_message),
          pump_(std::move(pump)) {}

    /// End the job with a CHOKE unless it has ended.
    void finish() {
        if (!ended_) end();
    }

    /// End the job with an ERROR (nothing if it has ended: returns false).
    bool fail(int status, std::string_view message, std::string_view traceback) {
        if (ended_) return false;
        ended_ = true;
        const std::string header = protocol::error(job_id_, status, message, traceback);
        out_.send(zmq::buffer(header), zmq::send_flags::none);
        return true;
    }

    void check_open(const char* what) const {
        if (ended_) {
            throw std::logic_error(std::string("response::") + what + ": job " +
                                   std::to_string(job_id_) + "'s answer has already ended");
        }
    }

    void check_size(std::size_t size) const {
        // 1 KiB left for the header and ZeroMQ's framing, as cocaine-python does.
        if (max_message_ && static_cast<std::int64_t>(size) > *max_message_ - 1024) {
            throw std::length_error("an answer's chunk of " + std::to_string(size) +
                                    " bytes is larger than the node takes from a slave (" +
                                    std::to_string(*max_message_) +
                                    " bytes with its header): send it as several smaller chunks");
        }
    }

    void send(protocol::code kind, std::string_view data, bool with_data) {
        const std::string header = protocol::answer(kind, job_id_);
        if (!with_data) {
            out_.send(zmq::buffer(header), zmq::send_flags::none);
            return;
        }
        out_.send(zmq::buffer(header), zmq::send_flags::sndmore);
        out_.send(zmq::message_t(data.data(), data.size()), zmq::send_flags::none);
    }

    std::uint64_t job_id_;
    zmq::socket_t& out_;
    detail::flow_ledger& flow_;
    std::optional<std::int64_t> max_message_;
    detail::pump pump_;  // set when the handler runs on the thread that reads the engine
    bool ended_ = false;
};

}  // namespace cocaine
