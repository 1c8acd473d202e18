// cocaine/heartbeat.hpp: the heartbeat thread. It beats from a DEALER of its own (identity
// `<slave id>/hb`: ZeroMQ sockets are not shared between threads), so a handler that runs for
// long, or waits for credit, never makes the slave look hung; it ends the process when the
// process that started it (the node) is gone, or when jobs outlast the grace after TERMINATE.
#pragma once

#include "protocol.hpp"

#include <zmq.hpp>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace cocaine::detail {

/// Exit (status 1) if the process that started us is gone (our parent changed): a slave
/// never outlives its node.
inline void exit_if_orphaned(pid_t parent) {
    if (::getppid() != parent) {
        std::fprintf(stderr, "cocaine worker: the process that started it (pid %d) is gone: "
                             "exiting\n", static_cast<int>(parent));
        std::fflush(stderr);
        std::_Exit(1);
    }
}

/// Sends HEARTBEAT every `interval` seconds until stopped, checking every 50 ms the parent and,
/// once `terminated` is set (TERMINATE came), whether `grace` seconds have passed since.
class heartbeat_thread {
public:
    heartbeat_thread(zmq::context_t& context, std::string endpoint, std::string slave_id,
                     double interval, pid_t parent, const std::atomic<bool>& terminated,
                     double grace)
        : context_(context), endpoint_(std::move(endpoint)), slave_id_(std::move(slave_id)),
          interval_(interval), parent_(parent), terminated_(terminated), grace_(grace),
          thread_([this] { run(); }) {}

    heartbeat_thread(const heartbeat_thread&) = delete;
    heartbeat_thread& operator=(const heartbeat_thread&) = delete;

    ~heartbeat_thread() { stop(); }

    /// Stop beating and close the thread's socket (waits for the thread).
    void stop() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stopping_ = true;
        }
        wake_.notify_all();
        if (thread_.joinable()) thread_.join();
    }

private:
    void run() {
        zmq::socket_t socket(context_, zmq::socket_type::dealer);
        socket.set(zmq::sockopt::routing_id, slave_id_ + "/hb");
        socket.set(zmq::sockopt::linger, 500);
        socket.connect(endpoint_);
        const std::string beat = protocol::heartbeat(slave_id_);
        const auto period = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
            std::chrono::duration<double>(interval_));
        auto next = std::chrono::steady_clock::now() + period;  // the ready beat was just sent
        std::optional<std::chrono::steady_clock::time_point> exit_at;
        std::unique_lock<std::mutex> lock(mutex_);
        while (!stopping_) {
            exit_if_orphaned(parent_);
            const auto now = std::chrono::steady_clock::now();
            if (!exit_at && terminated_.load()) {
                exit_at = now + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                    std::chrono::duration<double>(grace_));
            }
            if (exit_at && now >= *exit_at) {
                std::fprintf(stderr, "cocaine worker: job(s) still running %g s after "
                                     "TERMINATE: exiting without them\n", grace_);
                std::fflush(stderr);
                std::_Exit(0);
            }
            if (now >= next) {
                // If the engine does not read, a lost heartbeat is the right loss: never block.
                (void)socket.send(zmq::buffer(beat), zmq::send_flags::dontwait);
                next = now + period;
            }
            const auto wait = std::min<std::chrono::steady_clock::duration>(
                next - now, std::chrono::milliseconds(50));
            wake_.wait_for(lock, wait, [this] { return stopping_; });
        }
    }

    zmq::context_t& context_;
    std::string endpoint_;
    std::string slave_id_;
    double interval_;
    pid_t parent_;
    const std::atomic<bool>& terminated_;
    double grace_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    std::thread thread_;  // last: starts once everything above is set
};

}  // namespace cocaine::detail
