// cocaine/body.hpp: streamed request bodies (docs/protocol.md, "Streamed bodies"). The thread
// that reads the engine routes each piece (engine CHUNK) and the end (engine CHOKE) by job id
// to the job's `body_stream`; the handler's thread takes the pieces (`request::read_piece`) and
// grants them back to the engine (CREDIT [12, job_id, n]) as it reads them, `grant_step` at a
// time and before it waits for more, from its own socket (in order with its answer).
#pragma once

#include "flow.hpp"
#include "protocol.hpp"

#include <zmq.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_map>

namespace cocaine::detail {

/// Pieces read before they are granted back as one CREDIT (at most half the engine's window).
inline constexpr std::int64_t grant_step = 4;
/// Pieces held unread past which the engine is taken to ignore its window (a guard only).
inline constexpr std::size_t max_held = 1024;

/// One job's streamed body: pieces come (reading thread), the handler takes them (its thread).
class body_stream {
public:
    /// `first`: the INVOKE's payload, the body's first piece (maybe empty).
    body_stream(std::uint64_t job_id, std::string first) : job_id_(job_id) {
        if (!first.empty()) pieces_.push_back(std::move(first));
    }

    body_stream(const body_stream&) = delete;
    body_stream& operator=(const body_stream&) = delete;

    /// Engine CHUNK: the next piece (an empty one adds nothing).
    void push(std::string data) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (complete_ || stopped_) return;
        if (pieces_.size() >= max_held) {
            broken_ = true;
            pieces_.clear();
        } else if (!data.empty()) {
            pieces_.push_back(std::move(data));
        }
        changed_.notify_all();
    }

    /// Engine CHOKE: the body is complete.
    void end() {
        std::lock_guard<std::mutex> lock(mutex_);
        complete_ = true;
        changed_.notify_all();
    }

    /// CANCEL: a read waiting for a piece, and every later one, throws `cocaine::cancelled`.
    void cancel() {
        std::lock_guard<std::mutex> lock(mutex_);
        cancelled_ = true;
        pieces_.clear();
        changed_.notify_all();
    }

    /// The handler is about to run on this thread: CREDIT goes out on `out`; with `read` (the
    /// handler runs on the thread that reads the engine), a wait reads the engine's messages.
    void bind(zmq::socket_t* out, pump read) {
        std::lock_guard<std::mutex> lock(mutex_);
        out_ = out;
        pump_ = std::move(read);
    }

    /// The handler has returned: pieces still to come are dropped, reading throws.
    void close() {
        std::lock_guard<std::mutex> lock(mutex_);
        stopped_ = true;
        out_ = nullptr;
        pump_ = nullptr;
        pieces_.clear();
    }

    /// The next piece (never empty), or nothing once the body is complete. Waits for it (the
    /// heartbeats go on from their thread); throws `cocaine::cancelled` once the engine has
    /// cancelled the job, std::logic_error once the handler has returned.
    std::optional<std::string> next() {
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
            if (cancelled_) {
                throw cancelled("job " + std::to_string(job_id_) + ": nobody waits for its "
                                "answer any more (the engine cancelled it while its body was "
                                "read)");
            }
            if (stopped_) {
                throw std::logic_error("request::read_piece: job " + std::to_string(job_id_) +
                                       " has ended: read its body in the handler, before it "
                                       "returns");
            }
            if (broken_) {
                throw std::runtime_error("job " + std::to_string(job_id_) + ": the engine "
                                         "sent more than " + std::to_string(max_held) +
                                         " pieces the handler had not read (far past its "
                                         "window)");
            }
            if (!pieces_.empty()) {
                std::string piece = std::move(pieces_.front());
                pieces_.pop_front();
                if (++read_ >= grant_step) grant();
                return piece;
            }
            if (complete_) return std::nullopt;
            grant();  // before waiting: the engine may be waiting for it
            if (pump_) {
                const pump read = pump_;
                lock.unlock();
                read(std::chrono::milliseconds(100));
                lock.lock();
            } else {
                changed_.wait(lock);
            }
        }
    }

private:
    void grant() {  // with the lock held; only from the handler's thread (owner of out_)
        if (read_ == 0 || out_ == nullptr) return;
        const std::string header = protocol::credit(job_id_, read_);
        out_->send(zmq::buffer(header), zmq::send_flags::none);
        read_ = 0;
    }

    std::uint64_t job_id_;
    std::mutex mutex_;
    std::condition_variable changed_;
    std::deque<std::string> pieces_;
    bool complete_ = false;
    bool cancelled_ = false;
    bool stopped_ = false;
    bool broken_ = false;
    std::int64_t read_ = 0;  // pieces handed out and not yet granted
    zmq::socket_t* out_ = nullptr;
    pump pump_;
};

/// The streamed bodies of the jobs not ended, by job id (the reading thread routes pieces).
class body_registry {
public:
    /// A streamed INVOKE: its body, starting with `first`.
    std::shared_ptr<body_stream> add(std::uint64_t job_id, std::string first) {
        auto body = std::make_shared<body_stream>(job_id, std::move(first));
        std::lock_guard<std::mutex> lock(mutex_);
        bodies_[job_id] = body;
        return body;
    }

    /// The body of a job not ended, or null (its pieces are dropped).
    std::shared_ptr<body_stream> find(std::uint64_t job_id) {
        std::lock_guard<std::mutex> lock(mutex_);
        const auto it = bodies_.find(job_id);
        return it == bodies_.end() ? nullptr : it->second;
    }

    /// The job ended: forget its body.
    void forget(std::uint64_t job_id) {
        std::lock_guard<std::mutex> lock(mutex_);
        bodies_.erase(job_id);
    }

    /// Cancel every body (the worker is shutting down): handlers waiting for pieces stop.
    void cancel_all() {
        std::lock_guard<std::mutex> lock(mutex_);
        for (auto& body : bodies_) body.second->cancel();
    }

private:
    std::mutex mutex_;
    std::unordered_map<std::uint64_t, std::shared_ptr<body_stream>> bodies_;
};

}  // namespace cocaine::detail
