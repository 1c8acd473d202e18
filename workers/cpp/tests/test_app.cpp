// A worker for tests/languages/test_cpp.py: the handlers the conformance app lacks (error codes,
// cancel, meta, limits, a barrier that only opens when jobs run at the same time).
// MARKS (environment) names a folder where handlers leave files the test looks for.
#include <cocaine/worker.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <mutex>
#include <string>

namespace {

// Writes MARKS/<name> when destroyed: shows a handler's stack was unwound.
struct mark_on_exit {
    std::string name;
    long count = 0;
    ~mark_on_exit() {
        const char* folder = std::getenv("MARKS");
        if (folder != nullptr) std::ofstream(std::string(folder) + "/" + name) << count;
    }
};

std::mutex barrier_mutex;
std::condition_variable barrier_changed;
int barrier_arrived = 0;

}  // namespace

int main() {
    try {
        cocaine::worker worker;
        worker.on("echo", [](const cocaine::request& req, cocaine::response& res) { res.write(req.body); });
        worker.on("nothing", [](const cocaine::request&, cocaine::response&) {});
        worker.on("two", [](const cocaine::request&, cocaine::response& res) {
            res.write("a");
            res.write(std::string("\0b", 2));
        });
        worker.on("error-code", [](const cocaine::request& req, cocaine::response&) {
            throw cocaine::error(409, "conflict: " + req.body);
        });
        worker.on("bad-code", [](const cocaine::request&, cocaine::response&) {
            throw cocaine::error(42, "not a code");
        });
        worker.on("throw-int", [](const cocaine::request&, cocaine::response&) { throw 42; });
        worker.on("write-then-fail", [](const cocaine::request&, cocaine::response& res) {
            res.write("partial");
            throw std::runtime_error("failed after a chunk");
        });
        worker.on("end-then-throw", [](const cocaine::request&, cocaine::response& res) {
            res.end("done");
            throw std::runtime_error("thrown after the end");
        });
        worker.on("huge-error", [](const cocaine::request&, cocaine::response&) {
            throw std::runtime_error("\xff\xfe invalid " + std::string(10000, 'x') + " \xc3\xa9nd");
        });
        worker.on("big", [](const cocaine::request& req, cocaine::response& res) {
            res.write(std::string(std::stoul(req.body), 'b'));
        });
        worker.on("meta", [](const cocaine::request& req, cocaine::response& res) {
            res.write(req.meta_string("method").value_or("none"));
        });
        worker.on("forever", [](const cocaine::request& req, cocaine::response& res) {
            mark_on_exit mark{"closed-" + std::to_string(req.id)};
            for (;;) res.write(std::to_string(mark.count++));
        });
        worker.on("until-cancelled", [](const cocaine::request& req, cocaine::response& res) {
            mark_on_exit mark{"stopped-" + std::to_string(req.id)};
            const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(30);
            while (!res.is_cancelled() && std::chrono::steady_clock::now() < limit) {
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
            }
        });
        worker.on("upload", [](const cocaine::request& req, cocaine::response& res) {
            try {
                res.end(req.read_all());
            } catch (const cocaine::cancelled&) {
                mark_on_exit mark{"upload-" + std::to_string(req.id)};
                throw;
            }
        });
        worker.on("kinds", [](const cocaine::request& req, cocaine::response& res) {
            std::string sizes;
            while (auto piece = req.read_piece()) {
                sizes += (sizes.empty() ? "" : ",") + std::to_string(piece->size());
            }
            res.end(std::string(req.streamed() ? "true " : "false ") + sizes + " " +
                    std::to_string(req.read_all().size()));
        });
        worker.on("head", [](const cocaine::request&, cocaine::response& res) {
            res.head(202, {{"A", "1"}, {"B", "2"}});
            res.write("x");
        });
        worker.on("bad-head", [](const cocaine::request& req, cocaine::response& res) {
            if (req.body == "crlf") res.head(200, {{"X-Bad", "a\r\nInjected: 1"}});
            if (req.body == "many") {
                std::vector<std::pair<std::string, std::string>> many;
                for (int i = 0; i < 65; ++i) many.emplace_back("h" + std::to_string(i), "v");
                res.head(200, many);
            }
            if (req.body == "name") res.head(200, {{"bad name", "v"}});
            if (req.body == "twice") {
                res.head(200);
                res.head(201);
            }
            res.head(42);
        });
        worker.on("late-head", [](const cocaine::request&, cocaine::response& res) {
            res.write("a");
            res.head(201);
        });
        worker.on("barrier", [](const cocaine::request& req, cocaine::response& res) {
            // Answers "met" once `body` jobs are here at the same time, "alone" after 10 s.
            const int needed = std::stoi(req.body);
            std::unique_lock<std::mutex> lock(barrier_mutex);
            ++barrier_arrived;
            barrier_changed.notify_all();
            const bool met = barrier_changed.wait_for(lock, std::chrono::seconds(10),
                                                      [&] { return barrier_arrived >= needed; });
            res.end(met ? "met" : "alone");
        });
        return worker.run();
    } catch (const std::exception& e) {
        std::cerr << e.what() << "\n";
        return 1;
    }
}
