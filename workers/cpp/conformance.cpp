// The conformance app: what `cocaine conformance -- workers/cpp/build/conformance` drives.
// echo answers the body unchanged (a streamed one whole); stream answers n chunks "0".."n-1";
// sleep waits n ms (its thread only: heartbeats and other jobs go on) and answers "slept"; fail
// fails with the body as its message (502); sizes answers, per piece of the body as it reads
// it, the piece's size in decimal; status n answers with HEADERS status n and X-Conformance:
// yes, then "status n" (n outside 100..599: the library refuses, 502). Any other event gets
// the library's 404.
#include <cocaine/worker.hpp>

#include <chrono>
#include <iostream>
#include <string>
#include <thread>

namespace {

// The body as a decimal number in [0, most]; a 400 naming the problem otherwise.
long parse_number(const std::string& body, long most, const char* what) {
    if (body.empty() || body.size() > 12 || body.find_first_not_of("0123456789") != std::string::npos ||
        std::stol(body) > most) {
        throw cocaine::error(400, std::string(what) + ": the body must be a decimal number from 0 to " +
                                      std::to_string(most) + ", not '" + body.substr(0, 40) + "'");
    }
    return std::stol(body);
}

}  // namespace

int main() {
    try {
        cocaine::worker worker;
        worker.on("echo", [](const cocaine::request& req, cocaine::response& res) {
            if (req.streamed()) {
                res.end(req.read_all());
            } else {
                res.end(req.body);  // the answer and its end in one message
            }
        });
        worker.on("sizes", [](const cocaine::request& req, cocaine::response& res) {
            while (auto piece = req.read_piece()) res.write(std::to_string(piece->size()));
        });
        worker.on("status", [](const cocaine::request& req, cocaine::response& res) {
            const long n = parse_number(req.body, 999, "status");
            res.head(static_cast<int>(n), {{"X-Conformance", "yes"}});
            res.end("status " + std::to_string(n));
        });
        worker.on("stream", [](const cocaine::request& req, cocaine::response& res) {
            const long n = parse_number(req.body, 100000, "stream");
            for (long i = 0; i < n; ++i) res.write(std::to_string(i));
        });
        worker.on("sleep", [](const cocaine::request& req, cocaine::response& res) {
            const long ms = parse_number(req.body, 3600000, "sleep");
            std::this_thread::sleep_for(std::chrono::milliseconds(ms));
            res.end("slept");
        });
        worker.on("fail", [](const cocaine::request& req, cocaine::response&) {
            throw std::runtime_error(req.body);
        });
        return worker.run();
    } catch (const std::exception& e) {
        std::cerr << e.what() << "\n";
        return 1;
    }
}
