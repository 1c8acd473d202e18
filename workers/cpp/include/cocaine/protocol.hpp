// cocaine/protocol.hpp: the engine <-> slave protocol's messages (docs/protocol.md,
// "Engine <-> slave"): header frames encoded with msgpack, the engine's messages decoded and
// checked, and error texts made valid UTF-8 and bounded. No sockets here.
#pragma once

#ifndef MSGPACK_NO_BOOST
#define MSGPACK_NO_BOOST 1  // msgpack-cxx without Boost: nothing here needs it
#endif

#include <msgpack.hpp>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cocaine::protocol {

/// Message codes (the first element of every header).
enum class code : int {
    handshake = 1,  // slave -> engine: [1, slave_id, pid, features]
    configure = 2,  // engine -> slave: [2, settings]
    heartbeat = 3,  // slave -> engine: [3, slave_id]
    invoke = 4,     // engine -> slave: [4, job_id, event, meta, options] + body
    chunk = 5,      // slave -> engine: [5, job_id] + data; engine -> slave: a body's piece
    choke = 6,      // slave -> engine: [6, job_id] (+ last chunk); engine -> slave: body's end
    error = 7,      // slave -> engine: [7, job_id or nil, code, message, traceback]
    terminate = 8,  // engine -> slave: [8, reason]
    cancel = 11,    // engine -> slave: [11, job_id]
    credit = 12,    // engine -> slave: [12, job_id, n] (answer); slave -> engine (body)
    headers = 13,   // slave -> engine: [13, job_id, {"status": s, "headers": [[n, v], ...]}]
};

/// Error codes carried by ERROR messages.
namespace status {
inline constexpr int not_found = 404;     // no handler for the event
inline constexpr int server_error = 500;  // the slave could not start
inline constexpr int app_error = 502;     // the handler threw
inline constexpr int unavailable = 503;   // the slave's own queue is full
}  // namespace status

/// Most UTF-8 bytes of an error message the engine passes on to a client.
inline constexpr std::size_t message_limit = 4096;
/// Most UTF-8 bytes of a traceback the engine logs.
inline constexpr std::size_t traceback_limit = 16384;

/// A message from the engine that does not follow the protocol (reported, then ignored).
class protocol_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// What CONFIGURE says; a key that is missing (or of the wrong type) keeps its default.
struct settings {
    std::string app;                        // the app's name
    int concurrency = 1;                    // jobs in flight the engine may send (1..1024)
    double heartbeat_interval = 1.0;        // seconds between heartbeats (0.01..60)
    std::optional<std::int64_t> credit;     // chunks each job may send ahead (flow)
    std::optional<std::int64_t> max_message;  // the largest message the engine takes
};

/// One decoded message from the engine. Which fields are set depends on `kind`.
struct incoming {
    int kind = 0;                 // a `code`, or another number (an unknown message)
    std::uint64_t job_id = 0;     // INVOKE, CREDIT, CANCEL, CHUNK, CHOKE
    std::string event;            // INVOKE
    bool stream = false;          // INVOKE: its options say {"stream": true} (pieces follow)
    msgpack::object meta;         // INVOKE: a map (nil when absent), lives in `zone`
    std::shared_ptr<msgpack::zone> zone;
    std::int64_t credit = 0;      // CREDIT: more chunks the job may send
    protocol::settings settings;  // CONFIGURE
    std::string reason;           // TERMINATE
};

namespace detail {

using buffer_packer = msgpack::packer<msgpack::sbuffer>;

inline std::string to_string(const msgpack::sbuffer& buffer) {
    return std::string(buffer.data(), buffer.size());
}

inline bool is_integer(const msgpack::object& o) {
    return o.type == msgpack::type::POSITIVE_INTEGER || o.type == msgpack::type::NEGATIVE_INTEGER;
}

inline std::int64_t as_int64(const msgpack::object& o) {
    if (o.type == msgpack::type::POSITIVE_INTEGER) {
        return o.via.u64 > static_cast<std::uint64_t>(INT64_MAX) ? INT64_MAX
                                                                 : static_cast<std::int64_t>(o.via.u64);
    }
    return o.via.i64;
}

inline std::uint64_t job_id(const msgpack::object& o, const char* what) {
    if (o.type != msgpack::type::POSITIVE_INTEGER) {
        throw protocol_error(std::string(what) + ": the job id is not a non-negative integer");
    }
    return o.via.u64;
}

inline std::string as_string(const msgpack::object& o) {
    return std::string(o.via.str.ptr, o.via.str.size);
}

inline std::optional<double> as_number(const msgpack::object& o) {
    if (is_integer(o)) return static_cast<double>(as_int64(o));
    if (o.type == msgpack::type::FLOAT32 || o.type == msgpack::type::FLOAT64) return o.via.f64;
    return std::nullopt;
}

inline protocol::settings read_settings(const msgpack::object& map) {
    protocol::settings s;
    if (map.type != msgpack::type::MAP) {
        throw protocol_error("configure: the settings are not a map");
    }
    for (std::uint32_t i = 0; i < map.via.map.size; ++i) {
        const auto& key = map.via.map.ptr[i].key;
        const auto& value = map.via.map.ptr[i].val;
        if (key.type != msgpack::type::STR) continue;  // unknown keys are tolerated
        const std::string name = as_string(key);
        const auto number = as_number(value);
        if (name == "app" && value.type == msgpack::type::STR) {
            s.app = as_string(value);
        } else if (name == "concurrency" && number) {
            s.concurrency = static_cast<int>(std::clamp(*number, 1.0, 1024.0));
        } else if (name == "heartbeat_interval" && number) {
            s.heartbeat_interval = std::clamp(*number, 0.01, 60.0);
        } else if (name == "credit" && is_integer(value) && as_int64(value) > 0) {
            s.credit = as_int64(value);
        } else if (name == "max_message" && is_integer(value) && as_int64(value) > 0) {
            s.max_message = as_int64(value);
        }
    }
    return s;
}

/// Append `text`'s longest valid UTF-8 decoding, each invalid byte written as `\xNN`.
inline std::string escape(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    const std::size_t n = text.size();
    std::size_t i = 0;
    while (i < n) {
        const unsigned char c = p[i];
        std::size_t len = 0;
        std::uint32_t cp = 0;
        if (c < 0x80) {
            len = 1;
            cp = c;
        } else if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
            cp = c & 0x1Fu;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            cp = c & 0x0Fu;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            cp = c & 0x07u;
        }
        bool ok = len > 0 && i + len <= n;
        for (std::size_t k = 1; ok && k < len; ++k) {
            ok = (p[i + k] & 0xC0u) == 0x80u;
            cp = (cp << 6) | (p[i + k] & 0x3Fu);
        }
        // No overlong forms, no surrogates, nothing past U+10FFFF.
        ok = ok && !(len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF)))
             && !(len == 4 && (cp < 0x10000 || cp > 0x10FFFF));
        if (ok) {
            out.append(text.substr(i, len));
            i += len;
        } else {
            static const char hex[] = "0123456789abcdef";
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 0xF];
            ++i;
        }
    }
    return out;
}

/// The longest start of valid UTF-8 `text` of at most `size` bytes (never half a character).
inline std::string_view utf8_head(std::string_view text, std::size_t size) {
    if (size >= text.size()) return text;
    while (size > 0 && (static_cast<unsigned char>(text[size]) & 0xC0u) == 0x80u) --size;
    return text.substr(0, size);
}

/// The longest end of valid UTF-8 `text` of at most `size` bytes.
inline std::string_view utf8_tail(std::string_view text, std::size_t size) {
    if (size >= text.size()) return text;
    std::size_t start = text.size() - size;
    while (start < text.size() && (static_cast<unsigned char>(text[start]) & 0xC0u) == 0x80u) {
        ++start;
    }
    return text.substr(start);
}

}  // namespace detail

/// `text` as valid UTF-8 and, if longer than `limit` bytes, cut to at most `limit` bytes with
/// a note "… [N bytes cut]" (as cocaine-python cuts). By default the start is kept (a message);
/// with `keep_end`, a quarter from the start and the rest from the end (a traceback).
inline std::string cut(std::string_view text, std::size_t limit, bool keep_end = false) {
    const std::string clean = detail::escape(text);
    const std::size_t total = clean.size();
    if (total <= limit) return clean;
    const std::string note_room = " \xE2\x80\xA6 [" + std::to_string(total) + " bytes cut] ";
    const std::size_t room = limit > note_room.size() ? limit - note_room.size() : 0;
    if (keep_end) {
        const auto head = detail::utf8_head(clean, room / 4);
        const auto tail = detail::utf8_tail(clean, room - head.size());
        const std::size_t gone = total - head.size() - tail.size();
        return std::string(head) + " \xE2\x80\xA6 [" + std::to_string(gone) + " bytes cut] " +
               std::string(tail);
    }
    const auto head = detail::utf8_head(clean, room);
    return std::string(head) + " \xE2\x80\xA6 [" + std::to_string(total - head.size()) +
           " bytes cut]";
}

// -- headers the slave sends ------------------------------------------------------------------

/// HANDSHAKE: [1, slave_id, pid, {"flow": true, "stream": true}] (the features map only when
/// `flow`: the slave follows CREDIT and CANCEL, and reads streamed bodies).
inline std::string handshake(const std::string& slave_id, std::int64_t pid, bool flow) {
    msgpack::sbuffer buffer;
    detail::buffer_packer pk(buffer);
    pk.pack_array(flow ? 4 : 3);
    pk.pack(static_cast<int>(code::handshake));
    pk.pack(slave_id);
    pk.pack(pid);
    if (flow) {
        pk.pack_map(2);
        pk.pack(std::string("flow"));
        pk.pack_true();
        pk.pack(std::string("stream"));
        pk.pack_true();
    }
    return detail::to_string(buffer);
}

/// CREDIT (slave -> engine): [12, job_id, n], the handler has read `n` more pieces of the
/// job's streamed body.
inline std::string credit(std::uint64_t job_id, std::int64_t n) {
    msgpack::sbuffer buffer;
    detail::buffer_packer pk(buffer);
    pk.pack_array(3);
    pk.pack(static_cast<int>(code::credit));
    pk.pack(job_id);
    pk.pack(n);
    return detail::to_string(buffer);
}

/// HEADERS: [13, job_id, {"status": status, "headers": [[name, value], ...]}] (checked by
/// the caller).
inline std::string headers(std::uint64_t job_id, int status,
                           const std::vector<std::pair<std::string, std::string>>& fields) {
    msgpack::sbuffer buffer;
    detail::buffer_packer pk(buffer);
    pk.pack_array(3);
    pk.pack(static_cast<int>(code::headers));
    pk.pack(job_id);
    pk.pack_map(2);
    pk.pack(std::string("status"));
    pk.pack(status);
    pk.pack(std::string("headers"));
    pk.pack_array(static_cast<std::uint32_t>(fields.size()));
    for (const auto& [name, value] : fields) {
        pk.pack_array(2);
        pk.pack(name);
        pk.pack(value);
    }
    return detail::to_string(buffer);
}

/// HEARTBEAT: [3, slave_id].
inline std::string heartbeat(const std::string& slave_id) {
    msgpack::sbuffer buffer;
    detail::buffer_packer pk(buffer);
    pk.pack_array(2);
    pk.pack(static_cast<int>(code::heartbeat));
    pk.pack(slave_id);
    return detail::to_string(buffer);
}

/// CHUNK [5, job_id] or CHOKE [6, job_id]: the header of a piece (or the end) of an answer.
inline std::string answer(code kind, std::uint64_t job_id) {
    msgpack::sbuffer buffer;
    detail::buffer_packer pk(buffer);
    pk.pack_array(2);
    pk.pack(static_cast<int>(kind));
    pk.pack(job_id);
    return detail::to_string(buffer);
}

/// ERROR: [7, job_id or nil, code, message, traceback]; message and traceback are made valid
/// UTF-8 and cut to `message_limit` and `traceback_limit` bytes.
inline std::string error(std::optional<std::uint64_t> job_id, int status, std::string_view message,
                         std::string_view traceback) {
    msgpack::sbuffer buffer;
    detail::buffer_packer pk(buffer);
    pk.pack_array(5);
    pk.pack(static_cast<int>(code::error));
    if (job_id) {
        pk.pack(*job_id);
    } else {
        pk.pack_nil();
    }
    pk.pack(status);
    pk.pack(cut(message, message_limit));
    pk.pack(cut(traceback, traceback_limit, true));
    return detail::to_string(buffer);
}

// -- messages the engine sends ----------------------------------------------------------------

/// Decode one header frame from the engine; throws `protocol_error` saying what is wrong.
/// Messages with a code this library does not know come back with only `kind` set.
inline incoming decode(const void* data, std::size_t size) {
    incoming msg;
    msg.zone = std::make_shared<msgpack::zone>();
    msgpack::object header;
    try {
        // Copy strings into the zone: the frame's bytes do not outlive this call.
        const auto copy = [](msgpack::type::object_type, std::size_t, void*) { return false; };
        header = msgpack::unpack(*msg.zone, static_cast<const char*>(data), size, copy);
    } catch (const std::exception& e) {
        throw protocol_error(std::string("the header frame is not msgpack (") + e.what() + ")");
    }
    if (header.type != msgpack::type::ARRAY || header.via.array.size == 0 ||
        !detail::is_integer(header.via.array.ptr[0])) {
        throw protocol_error("the header frame is not a msgpack array starting with a code");
    }
    const msgpack::object* f = header.via.array.ptr;
    const std::uint32_t n = header.via.array.size;
    msg.kind = static_cast<int>(detail::as_int64(f[0]));
    switch (static_cast<code>(msg.kind)) {
        case code::configure:
            if (n < 2) throw protocol_error("configure: no settings map");
            msg.settings = detail::read_settings(f[1]);
            break;
        case code::invoke:
            if (n < 3 || f[2].type != msgpack::type::STR) {
                throw protocol_error("invoke: expected [4, job_id, event, meta]");
            }
            msg.job_id = detail::job_id(f[1], "invoke");
            msg.event = detail::as_string(f[2]);
            if (n > 3) msg.meta = f[3];
            if (n > 4 && f[4].type == msgpack::type::MAP) {
                for (std::uint32_t i = 0; i < f[4].via.map.size; ++i) {
                    const auto& key = f[4].via.map.ptr[i].key;
                    const auto& value = f[4].via.map.ptr[i].val;
                    if (key.type == msgpack::type::STR && detail::as_string(key) == "stream" &&
                        value.type == msgpack::type::BOOLEAN && value.via.boolean) {
                        msg.stream = true;
                    }
                }
            }
            break;
        case code::chunk:
        case code::choke:
            if (n < 2) throw protocol_error("a body's chunk or choke: expected [5 or 6, job_id]");
            msg.job_id = detail::job_id(f[1], msg.kind == 5 ? "chunk" : "choke");
            break;
        case code::credit:
            if (n < 3 || !detail::is_integer(f[2])) {
                throw protocol_error("credit: expected [12, job_id, n]");
            }
            msg.job_id = detail::job_id(f[1], "credit");
            msg.credit = detail::as_int64(f[2]);
            break;
        case code::cancel:
            if (n < 2) throw protocol_error("cancel: expected [11, job_id]");
            msg.job_id = detail::job_id(f[1], "cancel");
            break;
        case code::terminate:
            if (n > 1 && f[1].type == msgpack::type::STR) msg.reason = detail::as_string(f[1]);
            break;
        default:
            break;
    }
    return msg;
}

}  // namespace cocaine::protocol
