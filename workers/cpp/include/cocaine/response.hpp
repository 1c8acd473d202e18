// cocaine/response.hpp: what a handler gets: the request (its body whole, or piece by piece),
// and the response it answers through (status and headers, chunks, the end, errors with codes).
#pragma once

#include "body.hpp"
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
#include <utility>
#include <vector>

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
    std::string body;      // a plain request's payload: raw bytes, binary-safe, maybe empty;
                           // empty for a streamed one (streamed()): read that with read_piece
    msgpack::object meta;  // what the task adds (a map, or nil): HTTP method, path, headers...

    /// Whether the body arrives in pieces while the handler runs (read_piece, read_all).
    bool streamed() const noexcept { return stream != nullptr; }

    /// The next piece of the body (never empty), waiting for it; nothing once the body is
    /// complete. A plain request's body is one piece (none if empty). Throws
    /// `cocaine::cancelled` once nobody waits for the answer (let it leave the handler). Call
    /// it from the handler's thread, before the handler returns.
    std::optional<std::string> read_piece() const {
        if (stream) return stream->next();
        if (taken || body.empty()) return std::nullopt;
        taken = true;
        return body;
    }

    /// The rest of a streamed body as one string (all of it if no piece was read yet),
    /// waiting for every piece; throws as read_piece does. A plain request's: its whole body.
    std::string read_all() const {
        if (!stream) return body;
        std::string all;
        while (auto piece = stream->next()) all += *piece;
        return all;
    }

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
    std::shared_ptr<detail::body_stream> stream;  // a streamed body's pieces (library's)
    mutable bool taken = false;                    // a plain body was read (library's)
};

namespace detail {

/// Throws std::invalid_argument unless `status` is an HTTP status (100..599) and `headers`
/// are at most 64 pairs of an HTTP token name and a UTF-8 value without CR, LF or NUL, 64 KiB
/// in all.
inline void check_head(int status, const std::vector<std::pair<std::string, std::string>>& headers) {
    if (status < 100 || status > 599) {
        throw std::invalid_argument("response::head: status " + std::to_string(status) +
                                    " is not an HTTP status: give one in 100..599");
    }
    if (headers.size() > 64) {
        throw std::invalid_argument("response::head: " + std::to_string(headers.size()) +
                                    " headers: an answer carries at most 64");
    }
    std::size_t size = 0;
    for (const auto& [name, value] : headers) {
        const bool token = !name.empty() && name.find_first_not_of(
            "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") ==
            std::string::npos;
        if (!token) {
            throw std::invalid_argument("response::head: header name '" +
                                        protocol::cut(name, 100) + "' is not valid: letters, "
                                        "digits and !#$%&'*+-.^_`|~ only (no spaces, colons or "
                                        "line breaks)");
        }
        if (value.find_first_of(std::string("\r\n\0", 3)) != std::string::npos ||
            protocol::detail::escape(value) != value) {
            throw std::invalid_argument("response::head: header '" + name + "': its value holds "
                                        "a line break, a NUL or bytes that are not UTF-8");
        }
        size += name.size() + value.size();
    }
    if (size > 64 * 1024) {
        throw std::invalid_argument("response::head: the headers hold " + std::to_string(size) +
                                    " bytes: at most 65536");
    }
}

}  // namespace detail

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
        started_ = true;
        send(protocol::code::chunk, data, true);
    }

    /// How the answer should be presented (an HTTP driver's status and headers; drivers with
    /// no use for them, native clients, drop them): sends HEADERS. Call it once, before the
    /// first `write` or `end` (std::logic_error otherwise); std::invalid_argument for a status
    /// outside 100..599, more than 64 headers, a name that is not an HTTP token, or a value
    /// with CR, LF or NUL. Either fails the job with 502 if it leaves the handler.
    void head(int status, const std::vector<std::pair<std::string, std::string>>& headers = {}) {
        const std::string job = "response::head: job " + std::to_string(job_id_);
        if (headed_) throw std::logic_error(job + ": its status and headers were sent already");
        if (started_ || ended_) {
            throw std::logic_error(job + "'s answer has started: call head() before the first "
                                   "write() or end()");
        }
        detail::check_head(status, headers);
        headed_ = true;
        const std::string header = protocol::headers(job_id_, status, headers);
        out_.send(zmq::buffer(header), zmq::send_flags::none);
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
    bool started_ = false;  // a chunk went out
    bool headed_ = false;   // HEADERS went out
};

}  // namespace cocaine
