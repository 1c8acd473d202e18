// cocaine/flow.hpp: the flow rule of docs/protocol.md (CREDIT and CANCEL), shared between the
// thread that reads the engine's messages and the handler threads that send answers.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_map>

namespace cocaine {

/// Thrown by `response::write` once the engine has said that nobody waits for the job's answer
/// (CANCEL). Let it leave the handler: the library ends the job with a CHOKE.
class cancelled : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

namespace detail {

/// Reads and takes one message from the engine, waiting at most the time given; returns
/// whether one came. Set only when handlers run on the thread that reads the engine.
using pump = std::function<bool(std::chrono::milliseconds)>;

/// Per-job credit and cancel marks. The reading thread adds jobs, credit and cancels; a
/// handler thread takes credit (waiting for it) and forgets its job when the job ends.
class flow_ledger {
public:
    /// `window`: chunks each job may send ahead (CONFIGURE's `credit`); none: never wait.
    explicit flow_ledger(std::optional<std::int64_t> window) : window_(window) {}

    /// A job arrived (INVOKE): it starts with the whole window. False if it is already known.
    bool add(std::uint64_t job_id) {
        std::lock_guard<std::mutex> lock(mutex_);
        return jobs_.emplace(job_id, entry{window_.value_or(0), false}).second;
    }

    /// CREDIT: the job may send `n` more chunks (ignored for a job that has ended).
    void grant(std::uint64_t job_id, std::int64_t n) {
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = jobs_.find(job_id);
        if (it == jobs_.end() || n <= 0) return;
        it->second.credit += n;
        changed_.notify_all();
    }

    /// CANCEL: nobody waits for the job's answer (ignored for a job that has ended).
    void cancel(std::uint64_t job_id) {
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = jobs_.find(job_id);
        if (it == jobs_.end()) return;
        it->second.cancelled = true;
        changed_.notify_all();
    }

    /// Whether the job was cancelled.
    bool is_cancelled(std::uint64_t job_id) {
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = jobs_.find(job_id);
        return it != jobs_.end() && it->second.cancelled;
    }

    /// Take one chunk's credit, waiting while the job has none (its heartbeats go on from
    /// their own thread); throws `cancelled` once the job is cancelled. With `pump` (a handler
    /// on the thread that reads the engine), it reads the engine's messages while it waits,
    /// instead of sleeping until that thread brings credit.
    void take(std::uint64_t job_id, const pump& read = {}) {
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
            const auto it = jobs_.find(job_id);  // found anew: an insert may rehash the map
            if (it == jobs_.end()) return;
            if (it->second.cancelled) {
                throw cancelled("job " + std::to_string(job_id) + ": nobody waits for its "
                                "answer any more (the engine cancelled it)");
            }
            if (!window_) return;
            if (it->second.credit > 0) {
                --it->second.credit;
                return;
            }
            if (read) {
                lock.unlock();
                read(std::chrono::milliseconds(100));
                lock.lock();
            } else {
                changed_.wait(lock);
            }
        }
    }

    /// The job ended: forget it (later CREDIT or CANCEL for it are ignored).
    void forget(std::uint64_t job_id) {
        std::lock_guard<std::mutex> lock(mutex_);
        jobs_.erase(job_id);
    }

    /// Cancel every job (the worker is shutting down): handlers waiting for credit stop.
    void cancel_all() {
        std::lock_guard<std::mutex> lock(mutex_);
        for (auto& job : jobs_) job.second.cancelled = true;
        changed_.notify_all();
    }

private:
    struct entry {
        std::int64_t credit;
        bool cancelled;
    };
    std::optional<std::int64_t> window_;
    std::mutex mutex_;
    std::condition_variable changed_;
    std::unordered_map<std::uint64_t, entry> jobs_;
};

}  // namespace detail
}  // namespace cocaine
