// The C++ hello app: echo answers the request's body; count streams the numbers 1 to N (N is
// the body, default 3), one chunk each. Built on workers/cpp's header-only library.
#include <cocaine/worker.hpp>

#include <iostream>
#include <string>

int main() {
    try {
        cocaine::worker worker;  // the node says where to connect, in the environment
        worker.on("echo", [](const cocaine::request& req, cocaine::response& res) {
            // read_all(): the body whole, also when it streams in pieces (a large HTTP upload)
            res.end(req.read_all());  // the chunk and the end in one message
        });
        worker.on("count", [](const cocaine::request& req, cocaine::response& res) {
            const std::string& body = req.body;
            if (body.size() > 6 || body.find_first_not_of("0123456789") != std::string::npos) {
                throw cocaine::error(400, "count: the body must be a number from 0 to 100000, "
                                          "not '" + body.substr(0, 40) + "'");
            }
            const long n = body.empty() ? 3 : std::stol(body);
            if (n > 100000) throw cocaine::error(400, "count: at most 100000");
            for (long i = 1; i <= n; ++i) res.write(std::to_string(i) + "\n");
        });
        return worker.run();  // until the node says terminate
    } catch (const std::exception& e) {
        std::cerr << e.what() << "\n";
        return 1;
    }
}
