// cocaine/job_queue.hpp: the jobs waiting for a handler thread, handed from the thread that
// reads the engine's messages to the handler threads.
#pragma once

#include "response.hpp"

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>

namespace cocaine::detail {

/// A bounded queue of requests; `pop` waits for one, or for `stop`.
class job_queue {
public:
    explicit job_queue(std::size_t limit) : limit_(limit) {}

    /// Whether the queue holds `limit` jobs (a push would be refused).
    bool full() {
        std::lock_guard<std::mutex> lock(mutex_);
        return jobs_.size() >= limit_;
    }

    /// Add a job for the next free handler thread.
    void push(request req) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            jobs_.push_back(std::move(req));
        }
        ready_.notify_one();
    }

    /// The next job; nothing once the queue is stopped and empty (the thread should end).
    std::optional<request> pop() {
        std::unique_lock<std::mutex> lock(mutex_);
        ready_.wait(lock, [this] { return stopped_ || !jobs_.empty(); });
        if (jobs_.empty()) return std::nullopt;
        request req = std::move(jobs_.front());
        jobs_.pop_front();
        return req;
    }

    /// Let the handler threads end once the jobs left have run.
    void stop() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stopped_ = true;
        }
        ready_.notify_all();
    }

private:
    std::size_t limit_;
    std::mutex mutex_;
    std::condition_variable ready_;
    std::deque<request> jobs_;
    bool stopped_ = false;
};

}  // namespace cocaine::detail
