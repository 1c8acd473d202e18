// cocaine/worker.hpp: write a cocaine slave in C++ (an app of type "exec").
//
//     #include <cocaine/worker.hpp>
//     int main() {
//         cocaine::worker worker;  // from COCAINE_ENDPOINT, COCAINE_SLAVE_ID, COCAINE_APP
//         worker.on("echo", [](const cocaine::request& req, cocaine::response& res) {
//             res.write(req.body);
//         });
//         return worker.run();     // serves until the engine says terminate
//     }
//
// Header-only, C++17, on cppzmq (zmq.hpp) and msgpack-cxx (msgpack.hpp). It speaks
// docs/protocol.md, "Engine <-> slave", with flow (CREDIT and CANCEL), streamed request bodies
// (request::read_piece) and HEADERS (response::head).
//
// Threads: the thread that calls `run` owns the main DEALER: it reads the engine's messages
// and forwards the answers, which handler threads (CONFIGURE's `concurrency` of them) push to
// it over an inproc socket each; a heartbeat thread beats from a DEALER of its own. No ZeroMQ
// socket is ever used by two threads. With concurrency 1 there is no handler thread: the
// handler runs on the thread that calls `run` (one hand-over less per job), which reads the
// engine's messages while the handler waits for credit or for a piece of its body. The pieces
// of a streamed body are routed by job id, by the thread that reads the engine, to the job's
// queue (body.hpp), whichever thread its handler runs on.
#pragma once

#include "body.hpp"
#include "flow.hpp"
#include "heartbeat.hpp"
#include "job_queue.hpp"
#include "protocol.hpp"
#include "response.hpp"

#include <zmq.hpp>

#include <cxxabi.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <typeinfo>
#include <unordered_map>
#include <vector>

namespace cocaine {

namespace detail {

/// A line on stderr (the node logs it, tagged with the app and pid).
inline void report(const std::string& text) {
    std::fprintf(stderr, "cocaine worker: %s\n", text.c_str());
    std::fflush(stderr);
}

/// The readable name of an exception's type ("std::runtime_error").
inline std::string type_name(const std::type_info& type) {
    int status = 0;
    char* name = abi::__cxa_demangle(type.name(), nullptr, nullptr, &status);
    std::string readable = (status == 0 && name != nullptr) ? name : type.name();
    std::free(name);
    return readable;
}

inline std::string environment(const char* name) {
    const char* value = std::getenv(name);
    return value != nullptr ? value : "";
}

}  // namespace detail

/// A cocaine slave: register handlers with `on`, then `run`.
class worker {
public:
    /// A handler: answer `req` through `res` (write chunks; returning ends the answer).
    /// Throw `cocaine::error(code, message)` to fail with that code, anything else for 502.
    using handler = std::function<void(const request& req, response& res)>;

    /// Seconds the worker waits, after TERMINATE is read, for jobs still running before it
    /// exits anyway (status 0).
    static constexpr double termination_grace = 5.0;
    /// Most jobs waiting for a free handler thread (past it, an INVOKE gets 503).
    static constexpr std::size_t queue_limit = 10000;

    /// A worker configured from the environment the node gives an exec slave:
    /// COCAINE_ENDPOINT, COCAINE_SLAVE_ID and COCAINE_APP. Throws std::runtime_error naming
    /// what is missing.
    worker() : worker(from_environment()) {}

    /// A worker connecting to `endpoint` (the engine's ROUTER) as slave `slave_id` of `app`.
    worker(std::string endpoint, std::string slave_id, std::string app)
        : endpoint_(std::move(endpoint)), slave_id_(std::move(slave_id)), app_(std::move(app)),
          parent_(::getppid()) {
        if (endpoint_.empty() || slave_id_.empty()) {
            throw std::invalid_argument("cocaine::worker: the endpoint and the slave id must not "
                                        "be empty");
        }
    }

    worker(const worker&) = delete;
    worker& operator=(const worker&) = delete;

    /// Handle `event` with `fn`. Throws std::invalid_argument for an empty name or an event
    /// that already has a handler, std::logic_error once `run` has started.
    worker& on(const std::string& event, handler fn) {
        if (started_) throw std::logic_error("cocaine::worker::on('" + event + "'): call on() "
                                             "before run()");
        if (event.empty()) throw std::invalid_argument("cocaine::worker::on: empty event name");
        if (!fn) throw std::invalid_argument("cocaine::worker::on('" + event + "'): no handler");
        if (!handlers_.emplace(event, std::move(fn)).second) {
            throw std::invalid_argument("cocaine::worker::on('" + event + "'): the event "
                                        "already has a handler");
        }
        return *this;
    }

    /// Serve the engine until it says TERMINATE; returns the exit code for main (0).
    /// Exits the process (status 1) if the process that started it goes away.
    int run();

    /// The app's name (COCAINE_APP).
    const std::string& app() const noexcept { return app_; }
    /// This slave's id (COCAINE_SLAVE_ID).
    const std::string& slave_id() const noexcept { return slave_id_; }
    /// What CONFIGURE said (defaults until `run` has received it).
    const protocol::settings& settings() const noexcept { return settings_; }

private:
    struct from_env {
        std::string endpoint, slave_id, app;
    };

    explicit worker(from_env env)
        : worker(std::move(env.endpoint), std::move(env.slave_id), std::move(env.app)) {}

    static from_env from_environment() {
        from_env env{detail::environment("COCAINE_ENDPOINT"),
                     detail::environment("COCAINE_SLAVE_ID"), detail::environment("COCAINE_APP")};
        std::string missing;
        const auto need = [&](const std::string& value, const char* name) {
            if (value.empty()) missing += std::string(missing.empty() ? "" : ", ") + name;
        };
        need(env.endpoint, "COCAINE_ENDPOINT");
        need(env.slave_id, "COCAINE_SLAVE_ID");
        need(env.app, "COCAINE_APP");
        if (!missing.empty()) {
            throw std::runtime_error(
                "cocaine::worker: the environment lacks " + missing +
                ": this program is a cocaine slave, started by the node for an app of type "
                "\"exec\" (cocaine run manifest.json) or by `cocaine conformance -- COMMAND`");
        }
        return env;
    }

    // -- start-up --------------------------------------------------------------------------

    /// Receive one multipart message; false if none came within `timeout`.
    static bool receive(zmq::socket_t& socket, std::vector<zmq::message_t>& frames,
                        std::chrono::milliseconds timeout) {
        frames.clear();
        frames.emplace_back();
        if (!socket.recv(frames[0], zmq::recv_flags::dontwait)) {  // no poll while busy
            zmq::pollitem_t item{static_cast<void*>(socket), 0, ZMQ_POLLIN, 0};
            if (timeout.count() == 0 || zmq::poll(&item, 1, timeout) <= 0 ||
                !socket.recv(frames[0], zmq::recv_flags::dontwait)) {
                frames.clear();
                return false;
            }
        }
        while (frames.back().more()) {  // the rest of a multipart message is there already
            frames.emplace_back();
            (void)socket.recv(frames.back(), zmq::recv_flags::none);
        }
        return true;
    }

    /// Wait for CONFIGURE (as long as the parent lives); false if TERMINATE came first.
    bool configure(zmq::socket_t& socket) {
        std::vector<zmq::message_t> frames;
        for (;;) {
            detail::exit_if_orphaned(parent_);
            if (!receive(socket, frames, std::chrono::milliseconds(100))) continue;
            try {
                const auto msg = protocol::decode(frames[0].data(), frames[0].size());
                if (msg.kind == static_cast<int>(protocol::code::terminate)) return false;
                if (msg.kind == static_cast<int>(protocol::code::configure)) {
                    settings_ = msg.settings;
                    return true;
                }
                detail::report("ignoring message " + std::to_string(msg.kind) +
                               " before CONFIGURE (the engine configures a slave first)");
            } catch (const protocol::protocol_error& e) {
                detail::report(std::string("ignoring a malformed message from the engine: ") +
                               e.what());
            }
        }
    }

    // -- the handler threads ---------------------------------------------------------------

    void start_handlers(zmq::context_t& context, const std::string& answers) {
        for (int i = 0; i < settings_.concurrency; ++i) {
            threads_.emplace_back([this, &context, answers] { handler_loop(context, answers); });
        }
    }

    /// Stop the handler threads once the queue is empty (jobs still waiting for credit are
    /// cancelled, so that none waits for ever) and wait for them.
    void stop_handlers() {
        if (flow_) flow_->cancel_all();
        bodies_.cancel_all();
        queue_.stop();
        for (auto& thread : threads_) thread.join();
        threads_.clear();
    }

    void handler_loop(zmq::context_t& context, const std::string& answers) {
        zmq::socket_t out(context, zmq::socket_type::push);
        out.set(zmq::sockopt::linger, 1000);
        out.connect(answers);
        while (auto req = queue_.pop()) {
            run_job(*req, out);
            flow_->forget(req->id);
            bodies_.forget(req->id);
        }
    }

    /// Call the job's handler and end its answer: CHOKE, or ERROR with a code. `read`: set
    /// when it runs on the thread that reads the engine (concurrency 1).
    void run_job(const request& req, zmq::socket_t& out, detail::pump read = {}) {
        if (req.stream) req.stream->bind(&out, read);
        struct close_body {  // however the handler leaves: its body's later pieces are dropped
            const request& req;
            ~close_body() {
                if (req.stream) req.stream->close();
            }
        } body_guard{req};
        response res(req.id, out, *flow_, settings_.max_message, std::move(read));
        const auto found = handlers_.find(req.event);
        if (found == handlers_.end()) {
            res.fail(protocol::status::not_found, "this app has no handler for '" + req.event + "'",
                     "");
            return;
        }
        if (flow_->is_cancelled(req.id)) {  // cancelled while it waited for a thread
            res.finish();
            return;
        }
        const std::string where = " thrown by the handler of '" + req.event + "' (job " +
                                  std::to_string(req.id) + ")";
        bool answered = true;
        std::string what;
        try {
            found->second(req, res);
            res.finish();
        } catch (const cancelled&) {
            if (!res.ended()) res.finish();  // nobody waits: end it quietly, as the protocol says
        } catch (const error& e) {
            what = e.what();
            answered = res.fail(e.code(), what, "cocaine::error " + std::to_string(e.code()) +
                                                    where + ": " + what);
        } catch (const std::exception& e) {
            what = e.what();
            answered = res.fail(protocol::status::app_error, what,
                                detail::type_name(typeid(e)) + where + ": " + what);
        } catch (...) {
            what = "the handler threw something that is not a std::exception";
            answered = res.fail(protocol::status::app_error, what, "an unknown exception" + where);
        }
        if (!answered) {
            detail::report("an exception" + where + " after its answer had ended: " + what);
        }
    }

    // -- the main loop ---------------------------------------------------------------------

    /// Take one message from the engine.
    void handle(zmq::socket_t& socket, std::vector<zmq::message_t>& frames) {
        protocol::incoming msg;
        try {
            msg = protocol::decode(frames[0].data(), frames[0].size());
        } catch (const protocol::protocol_error& e) {
            detail::report(std::string("ignoring a malformed message from the engine: ") +
                           e.what());
            return;
        }
        switch (static_cast<protocol::code>(msg.kind)) {
            case protocol::code::invoke:
                invoke(socket, msg, frames);
                break;
            case protocol::code::credit:
                flow_->grant(msg.job_id, msg.credit);
                break;
            case protocol::code::cancel:
                flow_->cancel(msg.job_id);
                if (auto body = bodies_.find(msg.job_id)) body->cancel();
                break;
            case protocol::code::chunk:  // a piece of a streamed body (dropped once it ended)
            case protocol::code::choke:  // its end
                if (auto body = bodies_.find(msg.job_id)) {
                    if (msg.kind == static_cast<int>(protocol::code::choke)) {
                        body->end();
                    } else if (frames.size() > 1) {
                        body->push(std::string(frames[1].data<char>(), frames[1].size()));
                    }
                }
                break;
            case protocol::code::terminate:
                terminating_ = true;
                terminated_ = true;  // the heartbeat thread ends the process after the grace
                break;
            default:
                detail::report("ignoring message " + std::to_string(msg.kind) +
                               " from the engine (not one a slave receives)");
        }
    }

    void invoke(zmq::socket_t& socket, protocol::incoming& msg,
                std::vector<zmq::message_t>& frames) {
        std::string refusal;
        if (terminating_) refusal = "the slave is terminating";
        if (refusal.empty() && (one_thread_ ? waiting_.size() >= queue_limit : queue_.full())) {
            refusal = "the slave has " + std::to_string(queue_limit) + " jobs waiting already";
        }
        if (refusal.empty() && !flow_->add(msg.job_id)) {
            detail::report("ignoring INVOKE of job " + std::to_string(msg.job_id) +
                           ", which is already running here");
            return;
        }
        if (!refusal.empty()) {
            const std::string header =
                protocol::error(msg.job_id, protocol::status::unavailable, refusal, "");
            socket.send(zmq::buffer(header), zmq::send_flags::none);
            return;
        }
        request req;
        req.id = msg.job_id;
        req.event = std::move(msg.event);
        if (msg.stream) {
            req.stream = bodies_.add(msg.job_id, frames.size() > 1 ? frames[1].to_string()
                                                                   : std::string());
        } else if (frames.size() > 1) {
            req.body.assign(frames[1].data<char>(), frames[1].size());
        }
        req.meta = msg.meta;
        req.zone = std::move(msg.zone);
        if (one_thread_) {
            waiting_.push_back(std::move(req));  // run by the main loop, one at a time
        } else {
            queue_.push(std::move(req));
        }
        ++in_flight_;
    }

    /// Run the next waiting job on this thread (concurrency 1), reading the engine's messages
    /// while its handler waits for credit.
    void run_waiting(zmq::socket_t& socket) {
        const request req = std::move(waiting_.front());
        waiting_.pop_front();
        std::vector<zmq::message_t> frames;
        run_job(req, socket, [this, &socket, &frames](std::chrono::milliseconds timeout) {
            if (!receive(socket, frames, timeout)) return false;
            handle(socket, frames);  // an INVOKE only joins `waiting_`
            return true;
        });
        flow_->forget(req.id);
        bodies_.forget(req.id);
        --in_flight_;
    }

    /// Pass the handler threads' answers on to the engine (up to `most` messages).
    void forward(zmq::socket_t& answers, zmq::socket_t& socket, int most) {
        for (int i = 0; i < most; ++i) {
            zmq::message_t header;
            if (!answers.recv(header, zmq::recv_flags::dontwait)) return;
            if (ends_job(header)) --in_flight_;
            bool more = header.more();
            socket.send(header, more ? zmq::send_flags::sndmore : zmq::send_flags::none);
            while (more) {  // the rest of a multipart message is there already
                zmq::message_t part;
                (void)answers.recv(part, zmq::recv_flags::none);
                more = part.more();
                socket.send(part, more ? zmq::send_flags::sndmore : zmq::send_flags::none);
            }
        }
    }

    /// Whether an answer's header (ours: a small fixarray, its code first) is CHOKE or ERROR.
    static bool ends_job(const zmq::message_t& header) {
        if (header.size() < 2) return false;
        const auto* bytes = header.data<unsigned char>();
        const int kind = bytes[1];
        return (bytes[0] & 0xF0u) == 0x90u && (kind == static_cast<int>(protocol::code::choke) ||
                                               kind == static_cast<int>(protocol::code::error));
    }

    std::string endpoint_;
    std::string slave_id_;
    std::string app_;
    pid_t parent_;
    bool started_ = false;
    std::unordered_map<std::string, handler> handlers_;
    protocol::settings settings_;
    std::unique_ptr<detail::flow_ledger> flow_;
    detail::body_registry bodies_;  // streamed bodies of the jobs not ended

    detail::job_queue queue_{queue_limit};  // from the main thread to the handler threads
    std::vector<std::thread> threads_;

    // The main thread's own state.
    bool one_thread_ = false;      // concurrency 1: handlers run on the main thread
    std::deque<request> waiting_;  // jobs for it, when one_thread_
    std::size_t in_flight_ = 0;    // jobs accepted and not yet answered with CHOKE or ERROR
    bool terminating_ = false;
    std::atomic<bool> terminated_{false};  // the same, for the heartbeat thread
};

inline int worker::run() {
    if (started_) throw std::logic_error("cocaine::worker::run: already run");
    started_ = true;
    zmq::context_t context(1);
    zmq::socket_t socket(context, zmq::socket_type::dealer);
    socket.set(zmq::sockopt::routing_id, slave_id_);
    socket.set(zmq::sockopt::linger, 2000);
    try {
        socket.connect(endpoint_);
    } catch (const zmq::error_t& e) {
        throw std::runtime_error("cocaine::worker: cannot connect to the engine at '" +
                                 endpoint_ + "' (COCAINE_ENDPOINT): " + e.what());
    }
    socket.send(zmq::buffer(protocol::handshake(slave_id_, ::getpid(), true)),
                zmq::send_flags::none);
    if (!configure(socket)) return 0;  // told to terminate before it started
    if (app_.empty()) app_ = settings_.app;
    flow_ = std::make_unique<detail::flow_ledger>(settings_.credit);

    zmq::socket_t answers(context, zmq::socket_type::pull);
    const std::string inproc = "inproc://cocaine-answers-" +
                               std::to_string(reinterpret_cast<std::uintptr_t>(this));
    answers.bind(inproc);
    one_thread_ = settings_.concurrency == 1;
    if (!one_thread_) start_handlers(context, inproc);
    // Stops the handler threads however run() leaves (before `answers` and `context` go).
    struct handlers_guard {
        worker& self;
        ~handlers_guard() { self.stop_handlers(); }
    } guard{*this};
    socket.send(zmq::buffer(protocol::heartbeat(slave_id_)), zmq::send_flags::none);  // ready
    detail::heartbeat_thread heartbeat(context, endpoint_, slave_id_,
                                       settings_.heartbeat_interval, parent_, terminated_,
                                       termination_grace);

    std::vector<zmq::message_t> frames;
    for (;;) {
        if (!waiting_.empty()) run_waiting(socket);
        zmq::pollitem_t items[] = {{static_cast<void*>(socket), 0, ZMQ_POLLIN, 0},
                                   {static_cast<void*>(answers), 0, ZMQ_POLLIN, 0}};
        zmq::poll(items, 2, std::chrono::milliseconds(waiting_.empty() ? 100 : 0));
        if (items[1].revents & ZMQ_POLLIN) forward(answers, socket, 256);
        if (items[0].revents & ZMQ_POLLIN) {
            for (int i = 0; i < 256 && receive(socket, frames, std::chrono::milliseconds(0)); ++i) {
                handle(socket, frames);
            }
        }
        if (terminating_ && in_flight_ == 0) break;
    }
    heartbeat.stop();
    return 0;  // the guard stops the handler threads (all idle now)
}

}  // namespace cocaine
