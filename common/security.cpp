#include "common/security.h"

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>
#include <unordered_map>

#include <spdlog/spdlog.h>

#include <gt/error.h>

#include "common/check.h"
#include "common/env.h"
#include "common/transport.h"

namespace gt {
namespace {

using detail::cat;

constexpr std::string_view kZ85Alphabet =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
constexpr size_t kKeyBytes = 32;
// Key files are a few lines; an authorized keys file is a line per peer.
constexpr int64_t kMaxKeyFileBytes = 64 << 10;
constexpr int64_t kMaxAuthorizedKeysBytes = 16 << 20;
constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";
constexpr const char* kZapDomain = "gt";
// A peer's refused key is logged at most this often (Note [zap handler]).
constexpr int64_t kRefusalLogIntervalMs = 1000;
constexpr size_t kMaxRefusalsTracked = 4096;
// The authorized keys file is looked at no more often than this.
constexpr int64_t kReloadCheckMs = 1000;

std::string_view trim(std::string_view s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  const size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::string_view first_token(std::string_view line) {
  return line.substr(0, line.find_first_of(" \t"));
}

// Calls f(line_number, line) for each line (without its '\n').
template <typename F>
void for_each_line(std::string_view text, F&& f) {
  int n = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    f(++n, text.substr(pos, nl - pos));
    pos = nl + 1;
  }
}

// "[security] GT_X=FILE: " (the parts that are known).
std::string where(const std::string& file, const std::string& variable) {
  std::string w = "[security] ";
  if (!variable.empty()) w += variable + (file.empty() ? "" : "=");
  w += file;
  return w + ": ";
}

[[noreturn]] void fail(const std::string& file, const std::string& variable,
                       const std::string& what) {
  throw ConfigError(where(file, variable) + what, file, variable);
}

// Why `value` is not a key, without quoting it (it may be a secret key);
// empty when it is one.
std::string key_problem(std::string_view value) {
  if (value.size() != kZ85KeyChars) {
    return cat("expected ", kZ85KeyChars, " Z85 characters, got ", value.size());
  }
  for (size_t i = 0; i < value.size(); ++i) {
    if (kZ85Alphabet.find(value[i]) == std::string_view::npos) {
      return cat("character ", i + 1, " is outside the Z85 alphabet (0-9 a-z A-Z .-:+=^!/*?&<>()[]{}@%$#)");
    }
  }
  // Each group of 5 characters encodes 32 bits, so a group's first character
  // is at most '%'. (Hence no key starts with '#', and a line that does is a
  // comment in every key format.) Checked here because libzmq's decoder only
  // checks it in recent versions.
  for (size_t g = 0; g < value.size(); g += 5) {
    uint64_t v = 0;
    for (size_t i = g; i < g + 5; ++i) v = v * 85 + kZ85Alphabet.find(value[i]);
    if (v > 0xffffffffu) {
      return cat("characters ", g + 1, "-", g + 5, " exceed 32 bits: not a Z85 key");
    }
  }
  uint8_t bytes[kKeyBytes];
  const std::string z(value);
  if (!zmq_z85_decode(bytes, z.c_str())) return "not a valid Z85 value";
  return {};
}

bool decode_key(const std::string& z85, uint8_t (&out)[kKeyBytes]) {
  return z85.size() == kZ85KeyChars && zmq_z85_decode(out, z85.c_str()) != nullptr;
}

// Reads a small regular file whole. `expected` says what the file should
// be, for the messages. Its permission bits go to `mode`.
std::string read_small_file(const std::string& path, const std::string& variable,
                            int64_t max_bytes, std::string_view expected,
                            mode_t* mode = nullptr) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    fail(path, variable, cat("cannot open it (", std::strerror(errno), "): expected ", expected));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    fail(path, variable, cat("not a regular file: expected ", expected));
  }
  if (st.st_size > max_bytes) {
    fail(path, variable,
         cat("the file has ", st.st_size, " bytes, more than ", max_bytes, ": expected ", expected));
  }
  if (mode) *mode = st.st_mode & 07777;
  std::string text(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::read(fd, text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail(path, variable, cat("read failed (", std::strerror(errno), ")"));
    got += static_cast<size_t>(n);
  }
  return text;
}

constexpr std::string_view kSecretExpected =
    "a key file written by gt keygen (PREFIX.key: `public-key = KEY` and `secret-key = KEY`, "
    "KEY being 40 Z85 characters)";
constexpr std::string_view kPublicExpected =
    "a public key file written by gt keygen (PREFIX.pub: one line `KEY [NAME]`, KEY being 40 "
    "Z85 characters), or the Z85 key itself";
constexpr std::string_view kAuthorizedExpected =
    "an authorized keys file: one public key per line (40 Z85 characters, optionally followed "
    "by a name), blank lines and # comments";

bool looks_like_secret_file_line(std::string_view line) {
  const std::string_view t = trim(line);
  return t.rfind("public-key", 0) == 0 || t.rfind("secret-key", 0) == 0;
}

void write_file(const std::string& path, const std::string& text, mode_t mode, bool overwrite) {
  // Replacing goes through a temporary and a rename, so a reader never sees
  // half a file; creating uses O_EXCL, so an existing key is never lost.
  std::string target = path;
  int fd = -1;
  if (overwrite) {
    target = path + ".tmp-XXXXXX";
    fd = ::mkstemp(target.data());
  } else {
    fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  }
  if (fd < 0) {
    const int err = errno;
    throw Error(cat("[security.keygen] cannot create ", path, ": ", std::strerror(err),
                    err == EEXIST ? " (pass --force to replace it)" : ""));
  }
  bool ok = ::fchmod(fd, mode) == 0;  // the mode is exact, whatever the umask
  for (size_t done = 0; ok && done < text.size();) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<size_t>(n);
  }
  ok = ok && ::fsync(fd) == 0;
  const int err = errno;
  ok = ::close(fd) == 0 && ok;
  if (ok && overwrite) ok = ::rename(target.c_str(), path.c_str()) == 0;
  if (!ok) {
    ::unlink(target.c_str());
    throw Error(cat("[security.keygen] cannot write ", path, ": ", std::strerror(err)));
  }
}

}  // namespace

bool is_z85_key(std::string_view text) { return key_problem(text).empty(); }

void require_curve(std::string_view who) {
  if (zmq_has("curve")) return;
  int major = 0, minor = 0, patch = 0;
  zmq_version(&major, &minor, &patch);
  throw Error(cat("[security] ", who, " asks for CURVE encryption, but this libzmq (", major, ".",
                  minor, ".", patch,
                  ") was built without CURVE (libsodium): install a libzmq with CURVE support "
                  "(Debian's libzmq5 has it)"));
}

CurveKeyPair generate_curve_key_pair() {
  require_curve("gt keygen");
  char pub[kZ85KeyChars + 1] = {};
  char sec[kZ85KeyChars + 1] = {};
  if (zmq_curve_keypair(pub, sec) != 0) {
    throw Error(cat("[security.keygen] zmq_curve_keypair failed: ", zmq_strerror(zmq_errno())));
  }
  CurveKeyPair keys{pub, sec};
  ::explicit_bzero(sec, sizeof sec);
  return keys;
}

std::string format_secret_key_file(const CurveKeyPair& keys) {
  return "# gt CURVE key pair, written by gt keygen (docs/security.md).\n"
         "# The secret key must stay private: keep this file mode 0600 and give peers\n"
         "# the .pub file instead.\n"
         "public-key = " +
         keys.public_key + "\nsecret-key = " + keys.secret_key + "\n";
}

std::string format_public_key_file(const std::string& public_key, std::string_view name) {
  std::string line = public_key;
  if (!name.empty()) line += " " + std::string(name);
  return line + "\n";
}

CurveKeyPair parse_secret_key_file(std::string_view text, const std::string& file,
                                   const std::string& variable) {
  std::optional<std::string> pub, sec;
  for_each_line(text, [&](int n, std::string_view raw) {
    const std::string_view line = trim(raw);
    if (line.empty() || line[0] == '#') return;
    const size_t eq = line.find('=');
    const std::string_view name = eq == std::string_view::npos ? "" : trim(line.substr(0, eq));
    if (name != "public-key" && name != "secret-key") {
      if (is_z85_key(first_token(line))) {
        fail(file, variable,
             cat("line ", n, " is a public key line (`KEY NAME`, a .pub file): expected ",
                 kSecretExpected, "; use the .key file written next to the .pub"));
      }
      // The line is not quoted: it may hold secret material.
      fail(file, variable,
           cat("line ", n, " is neither `public-key = KEY` nor `secret-key = KEY`: expected ",
               kSecretExpected));
    }
    const std::string_view value = trim(line.substr(eq + 1));
    auto& slot = name == "public-key" ? pub : sec;
    if (slot) fail(file, variable, cat("line ", n, ": a second `", name, "` line"));
    if (const std::string why = key_problem(value); !why.empty()) {
      fail(file, variable, cat("line ", n, ": the ", name == "public-key" ? "public" : "secret",
                               " key is malformed: ", why));
    }
    slot = std::string(value);
  });
  if (!pub && !sec) fail(file, variable, cat("no keys in the file: expected ", kSecretExpected));
  if (!sec) fail(file, variable, cat("no `secret-key = KEY` line: expected ", kSecretExpected));
  if (!pub) fail(file, variable, cat("no `public-key = KEY` line: expected ", kSecretExpected));
  char derived[kZ85KeyChars + 1] = {};
  if (zmq_curve_public(derived, sec->c_str()) != 0 || *pub != derived) {
    fail(file, variable,
         "the public key does not belong to the secret key (was the file edited?): expected "
         "the pair gt keygen wrote");
  }
  return CurveKeyPair{std::move(*pub), std::move(*sec)};
}

std::string parse_public_key_file(std::string_view text, const std::string& file,
                                  const std::string& variable) {
  std::optional<std::string> key;
  for_each_line(text, [&](int n, std::string_view raw) {
    const std::string_view line = trim(raw);
    if (line.empty() || line[0] == '#') return;  // no key starts with '#' (key_problem)
    const std::string_view token = first_token(line);
    if (is_z85_key(token)) {
      if (key) {
        fail(file, variable,
             cat("line ", n, " holds a second key: expected ", kPublicExpected));
      }
      key = std::string(token);
      return;
    }
    if (looks_like_secret_file_line(line)) {
      fail(file, variable,
           cat("this is a secret key file (.key): expected ", kPublicExpected,
               "; give peers the .pub file written next to it, never the .key"));
    }
    fail(file, variable,
         cat("line ", n, ": the first word is not a key (", key_problem(token), "): expected ",
             kPublicExpected));
  });
  if (!key) fail(file, variable, cat("no key in the file: expected ", kPublicExpected));
  return *key;
}

std::vector<AuthorizedKey> parse_authorized_keys(std::string_view text, const std::string& file,
                                                 const std::string& variable) {
  std::vector<AuthorizedKey> keys;
  for_each_line(text, [&](int n, std::string_view raw) {
    const std::string_view line = trim(raw);
    if (line.empty() || line[0] == '#') return;  // no key starts with '#' (key_problem)
    const std::string_view token = first_token(line);
    if (is_z85_key(token)) {
      std::string_view name = trim(line.substr(token.size()));
      while (!name.empty() && name[0] == '#') name = trim(name.substr(1));
      keys.push_back(AuthorizedKey{std::string(token), std::string(name), n});
      return;
    }
    if (looks_like_secret_file_line(line)) {
      fail(file, variable,
           cat("line ", n, " looks like a line of a secret key file: expected ",
               kAuthorizedExpected, " (append the peers' .pub files, never their .key files)"));
    }
    const std::string shown(token.substr(0, 16));
    fail(file, variable,
         cat("line ", n, ": `", shown, token.size() > 16 ? "...`" : "`", " is not a public key (",
             key_problem(token), "): expected ", kAuthorizedExpected));
  });
  return keys;
}

CurveKeyPair read_secret_key_file(const std::string& path, const std::string& variable) {
  mode_t mode = 0;
  CurveKeyPair keys = parse_secret_key_file(
      read_small_file(path, variable, kMaxKeyFileBytes, kSecretExpected, &mode), path, variable);
  // Checked after parsing, so that a wrong file (a .pub) gets that message.
  if ((mode & 077) != 0) {
    char shown[16];
    std::snprintf(shown, sizeof shown, "%04o", static_cast<unsigned>(mode));
    fail(path, variable,
         cat("the secret key file is open to other users (mode ", shown,
             "): expected mode 0600 (chmod 600 ", path, ")"));
  }
  return keys;
}

std::vector<AuthorizedKey> read_authorized_keys(const std::string& path,
                                                const std::string& variable) {
  return parse_authorized_keys(
      read_small_file(path, variable, kMaxAuthorizedKeysBytes, kAuthorizedExpected), path,
      variable);
}

std::string read_public_key(const std::string& value, const std::string& variable) {
  struct stat st {};
  if (is_z85_key(value) && ::stat(value.c_str(), &st) != 0) return value;
  return parse_public_key_file(
      read_small_file(value, variable, kMaxKeyFileBytes, kPublicExpected), value, variable);
}

std::pair<std::string, std::string> write_key_files(const std::string& prefix,
                                                    const CurveKeyPair& keys, bool overwrite) {
  GT_CHECK(!prefix.empty(), "[security.keygen] the output prefix is empty");
  const std::string secret_path = prefix + ".key";
  const std::string public_path = prefix + ".pub";
  if (!overwrite) {
    // Both are checked first, so a refusal leaves no half-written pair.
    for (const std::string& p : {secret_path, public_path}) {
      struct stat st {};
      if (::lstat(p.c_str(), &st) == 0) {
        throw Error(cat("[security.keygen] ", p, " already exists (pass --force to replace it)"));
      }
    }
  }
  std::string name = prefix;
  if (const size_t slash = name.rfind('/'); slash != std::string::npos) name.erase(0, slash + 1);
  write_file(secret_path, format_secret_key_file(keys), 0600, overwrite);
  write_file(public_path, format_public_key_file(keys.public_key, name), 0644, overwrite);
  return {secret_path, public_path};
}

std::optional<CurveClientKeys> curve_client_keys(const Env& env) {
  if (!env.curve_server_key && !env.curve_client_key) return std::nullopt;
  if (!env.curve_server_key) {
    throw ConfigError(
        "[security] GT_CURVE_CLIENT_KEY is set but GT_CURVE_SERVER_KEY is not: expected the "
        "dispatcher's public key (the path of its .pub file, or the 40-character Z85 key) to "
        "connect with CURVE; unset GT_CURVE_CLIENT_KEY to connect in plaintext",
        "", "GT_CURVE_SERVER_KEY");
  }
  if (!env.curve_client_key) {
    throw ConfigError(
        "[security] GT_CURVE_SERVER_KEY is set but GT_CURVE_CLIENT_KEY is not: expected the path "
        "of this peer's key file (gt keygen --out NAME writes NAME.key; list NAME.pub in the "
        "dispatcher's GT_CURVE_AUTHORIZED_KEYS)",
        "", "GT_CURVE_CLIENT_KEY");
  }
  require_curve("GT_CURVE_SERVER_KEY");
  CurveClientKeys keys;
  keys.server_key = read_public_key(*env.curve_server_key, "GT_CURVE_SERVER_KEY");
  keys.own = read_secret_key_file(*env.curve_client_key, "GT_CURVE_CLIENT_KEY");
  return keys;
}

std::optional<CurveServerKeys> curve_server_keys(const Env& env) {
  if (!env.curve_secret_key && !env.curve_authorized_keys) return std::nullopt;
  if (!env.curve_secret_key) {
    throw ConfigError(
        "[security] GT_CURVE_AUTHORIZED_KEYS is set but GT_CURVE_SECRET_KEY is not: expected the "
        "path of the dispatcher's key file (gt keygen --out NAME writes NAME.key); unset "
        "GT_CURVE_AUTHORIZED_KEYS to run without CURVE",
        "", "GT_CURVE_SECRET_KEY");
  }
  if (!env.curve_authorized_keys) {
    throw ConfigError(
        "[security] GT_CURVE_SECRET_KEY is set but GT_CURVE_AUTHORIZED_KEYS is not: expected the "
        "path of a file listing the public keys of the clients, workers and tools allowed in "
        "(one per line; without it nobody could connect)",
        "", "GT_CURVE_AUTHORIZED_KEYS");
  }
  require_curve("GT_CURVE_SECRET_KEY");
  CurveServerKeys keys;
  keys.own = read_secret_key_file(*env.curve_secret_key, "GT_CURVE_SECRET_KEY");
  keys.authorized_keys_file = *env.curve_authorized_keys;
  keys.authorized = read_authorized_keys(keys.authorized_keys_file, "GT_CURVE_AUTHORIZED_KEYS");
  return keys;
}

// Note [curve socket options]
// Every gt socket that crosses a process boundary is set up through
// apply_curve: the dispatcher's ROUTER and event XPUB as servers, the DEALERs
// of clients, workers and tools and the tools' SUB as clients. Keys go in as
// 32 raw bytes (decoded here, so a bad key fails before any socket call), and
// the decoded secret is wiped after use. The server also names a ZAP domain:
// libzmq then asks the ZapHandler about every peer.
void apply_curve(zmq::socket_t& socket, const CurveClientKeys* keys) {
  if (!keys) return;
  uint8_t server[kKeyBytes], pub[kKeyBytes], sec[kKeyBytes];
  const bool ok = decode_key(keys->server_key, server) && decode_key(keys->own.public_key, pub) &&
                  decode_key(keys->own.secret_key, sec);
  if (ok) {
    socket.set(zmq::sockopt::curve_serverkey, zmq::const_buffer(server, kKeyBytes));
    socket.set(zmq::sockopt::curve_publickey, zmq::const_buffer(pub, kKeyBytes));
    socket.set(zmq::sockopt::curve_secretkey, zmq::const_buffer(sec, kKeyBytes));
  }
  ::explicit_bzero(sec, sizeof sec);
  GT_ASSERT(ok, "[security.apply_curve] keys were not checked when read");
}

void apply_curve(zmq::socket_t& socket, const CurveServerKeys& keys) {
  uint8_t sec[kKeyBytes];
  const bool ok = decode_key(keys.own.secret_key, sec);
  if (ok) {
    socket.set(zmq::sockopt::zap_domain, kZapDomain);
    socket.set(zmq::sockopt::curve_server, true);
    socket.set(zmq::sockopt::curve_secretkey, zmq::const_buffer(sec, kKeyBytes));
  }
  ::explicit_bzero(sec, sizeof sec);
  GT_ASSERT(ok, "[security.apply_curve] keys were not checked when read");
}

bool is_local_endpoint(const std::string& endpoint) {
  if (endpoint.rfind("ipc://", 0) == 0 || endpoint.rfind("inproc://", 0) == 0) return true;
  if (endpoint.rfind("tcp://", 0) != 0) return false;
  std::string_view rest = std::string_view(endpoint).substr(6);
  if (const size_t semi = rest.find(';'); semi != std::string_view::npos) {
    rest = rest.substr(semi + 1);  // "source;destination": the destination
  }
  std::string_view host = rest.substr(0, rest.rfind(':'));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host == "localhost" || host == "::1") return true;
  // 127.0.0.0/8: four decimal octets, the first 127.
  int octets = 0, value = -1, first = -1;
  for (const char c : std::string(host) + ".") {
    if (c >= '0' && c <= '9') {
      value = (value < 0 ? 0 : value * 10) + (c - '0');
      if (value > 255) return false;
    } else if (c == '.' && value >= 0) {
      if (octets++ == 0) first = value;
      value = -1;
    } else {
      return false;
    }
  }
  return octets == 4 && first == 127;
}

bool check_plaintext_bind(const std::string& endpoint, bool curve, bool allow_plaintext,
                          std::string_view what) {
  if (curve || is_local_endpoint(endpoint)) return false;
  if (allow_plaintext) return true;
  throw ConfigError(
      cat("[security] refusing to bind the dispatcher's ", what, " to ", endpoint,
          " without encryption: it is not a loopback address, so anyone who reaches it could "
          "run work on the workers and read every tensor. Either give the dispatcher a CURVE key "
          "pair (GT_CURVE_SECRET_KEY and GT_CURVE_AUTHORIZED_KEYS; see docs/security.md), or "
          "allow plaintext on a trusted network with GT_ALLOW_PLAINTEXT=1"),
      "", "GT_CURVE_SECRET_KEY");
}

// ---- ZAP ---------------------------------------------------------------------

// Note [zap handler]
// libzmq authenticates CURVE peers through ZAP (RFC 27): when a peer's
// handshake reaches the INITIATE command, the server socket sends a request
// to whatever socket is bound at inproc://zeromq.zap.01 in its context and
// waits for the reply. The request is [version "1.0", request id, domain,
// peer address, routing id, mechanism, credentials...]; for CURVE the one
// credential is the peer's 32-byte public key. The reply is [version,
// request id, status code ("200" accept, "400" refuse, "500" internal
// error), status text, user id, metadata]. A REP socket strips and restores
// the envelope.
// libzmq 4.3 *accepts* every peer when nothing is bound there (ZAP is
// optional unless ZMQ_ZAP_ENFORCE_DOMAIN, a draft option Debian's build
// lacks), so the handler binds before any CURVE server socket of the context
// binds, and outlives them: the dispatcher declares it after its context and
// before its sockets. A request the handler cannot read is answered 500, so
// the REP socket's request/reply cycle never breaks and the thread never
// stops early. Each refusal is logged with the peer's address and key, but a
// peer that retries with the same key (a foreign ZeroMQ program reconnecting
// every 100 ms; gt's own peers give up at the first refusal) is logged at
// most once per kRefusalLogIntervalMs, with a count of the refusals in
// between, so it cannot flood the log.
struct ZapHandler::Impl {
  struct Stamp {
    bool exists = false;
    int64_t mtime_ns = 0;
    int64_t size = 0;
    uint64_t inode = 0;
    bool operator==(const Stamp&) const = default;
  };
  struct Refusals {
    int64_t last_logged_ms = 0;
    uint64_t unlogged = 0;
  };

  Impl(zmq::context_t& c, const CurveServerKeys& keys, std::shared_ptr<spdlog::logger> l)
      : context(c),
        rep(c, zmq::socket_type::rep),
        wake(c, zmq::socket_type::pair),
        log(std::move(l)),
        file(keys.authorized_keys_file) {
    wake_endpoint = cat("inproc://gt-zap-wake-", reinterpret_cast<uintptr_t>(this));
    rep.set(zmq::sockopt::linger, 0);
    wake.set(zmq::sockopt::linger, 0);
    try {
      rep.bind(kZapEndpoint);
    } catch (const zmq::error_t& e) {
      throw Error(cat("[security.zap] cannot serve ZAP: ", kZapEndpoint, ": ", e.what(),
                      " (another ZAP handler in this process' context?)"));
    }
    wake.bind(wake_endpoint);
    stamp = stat_file();
    set_keys(keys.authorized);
    next_check_ms = now_ms() + kReloadCheckMs;
  }

  Stamp stat_file() const {
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0) return {};
    return Stamp{true, int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec, st.st_size,
                 static_cast<uint64_t>(st.st_ino)};
  }

  void set_keys(const std::vector<AuthorizedKey>& list) {
    keys.clear();
    for (const AuthorizedKey& k : list) keys.emplace(k.key, k.name);  // the first name wins
    if (keys.empty()) {
      log->warn("[security.zap] {} lists no keys: every peer is refused", file);
    }
  }

  void maybe_reload() {
    const int64_t now = now_ms();
    if (now < next_check_ms) return;
    next_check_ms = now + kReloadCheckMs;
    const Stamp s = stat_file();
    if (s == stamp) return;
    stamp = s;
    try {
      const auto list = read_authorized_keys(file, "GT_CURVE_AUTHORIZED_KEYS");
      set_keys(list);
      log->info("[security.zap] reloaded {}: {} authorized key(s)", file, keys.size());
    } catch (const std::exception& e) {
      // Failing closed would lock out every worker over a typo; failing open
      // is out of the question: the previous list stays.
      log->error("[security.zap] {}; keeping the {} key(s) read before", e.what(), keys.size());
    }
  }

  void note_refusal(const std::string& address, const std::string& key, std::string_view why) {
    refused.fetch_add(1, std::memory_order_relaxed);
    const std::string peer = address + " " + key;
    if (refusals.size() >= kMaxRefusalsTracked && !refusals.count(peer)) refusals.clear();
    Refusals& r = refusals[peer];
    const int64_t now = now_ms();
    if (r.last_logged_ms != 0 && now - r.last_logged_ms < kRefusalLogIntervalMs) {
      ++r.unlogged;
      return;
    }
    if (r.unlogged > 0) {
      log->warn("[security.zap] refused a connection from {}: {} {} (and {} more time(s) in "
                "the last {} ms)",
                address, why, key, r.unlogged, now - r.last_logged_ms);
    } else {
      log->warn("[security.zap] refused a connection from {}: {} {}", address, why, key);
    }
    r.last_logged_ms = now;
    r.unlogged = 0;
  }

  // The reply's status code, text and user id for one request.
  Frames answer(const Frames& request) {
    auto text = [&](size_t i) {
      return std::string(static_cast<const char*>(request[i].data()), request[i].size());
    };
    auto reply = [&](const char* code, std::string status, std::string user) {
      Frames out;
      out.emplace_back(std::string_view("1.0"));
      out.emplace_back(request.size() > 1 ? text(1) : std::string());
      out.emplace_back(std::string_view(code));
      out.emplace_back(status);
      out.emplace_back(user);
      out.emplace_back();  // no metadata
      return out;
    };
    if (request.size() < 6 || text(0) != "1.0") {
      log->error("[security.zap] malformed ZAP request ({} frames)", request.size());
      return reply("500", "malformed ZAP request", "");
    }
    const std::string address = text(3);
    const std::string mechanism = text(5);
    if (mechanism != "CURVE") {
      note_refusal(address, mechanism, "security mechanism");
      return reply("400", "gt accepts CURVE peers only", "");
    }
    if (request.size() != 7 || request[6].size() != kKeyBytes) {
      note_refusal(address, cat(request.size() == 7 ? request[6].size() : 0, " bytes"),
                   "a CURVE key of");
      return reply("400", "malformed CURVE key", "");
    }
    char z85[kZ85KeyChars + 1] = {};
    zmq_z85_encode(z85, static_cast<const uint8_t*>(request[6].data()), kKeyBytes);
    maybe_reload();
    const auto it = keys.find(z85);
    if (it == keys.end()) {
      note_refusal(address, z85,
                   cat("its CURVE public key is not in GT_CURVE_AUTHORIZED_KEYS (", file, "):"));
      return reply("400", "key not authorized", "");
    }
    accepted.fetch_add(1, std::memory_order_relaxed);
    SPDLOG_LOGGER_DEBUG(log, "[security.zap] accepted {} ({}) from {}", z85, it->second, address);
    return reply("200", "OK", it->second.empty() ? std::string(z85) : it->second);
  }

  void run() {
    while (!stopping.load(std::memory_order_acquire)) {
      try {
        zmq::pollitem_t items[] = {{rep.handle(), 0, ZMQ_POLLIN, 0},
                                   {wake.handle(), 0, ZMQ_POLLIN, 0}};
        // The timeout only backs up the wake-up message.
        zmq::poll(items, 2, std::chrono::milliseconds(1000));
        if (items[1].revents & ZMQ_POLLIN) break;
        if (!(items[0].revents & ZMQ_POLLIN)) continue;
        auto request = recv_frames(rep);
        if (!request) continue;
        Frames reply;
        try {
          reply = answer(*request);
        } catch (const std::exception& e) {
          log->error("[security.zap] internal error: {}", e.what());
          const std::string id =
              request->size() > 1 ? (*request)[1].to_string() : std::string();
          reply.clear();
          for (const std::string& s : {std::string("1.0"), id, std::string("500"),
                                       std::string("internal error"), std::string(),
                                       std::string()}) {
            reply.emplace_back(s);
          }
        }
        send_frames(rep, reply);
      } catch (const zmq::error_t& e) {
        if (e.num() == ETERM) break;
        if (e.num() != EINTR) log->error("[security.zap] {}", e.what());
      }
    }
  }

  zmq::context_t& context;
  zmq::socket_t rep;   // handler thread only, once started
  zmq::socket_t wake;  // handler thread only, once started
  std::string wake_endpoint;
  std::shared_ptr<spdlog::logger> log;
  std::string file;
  // Handler thread only, once started:
  std::unordered_map<std::string, std::string> keys;  // Z85 key -> name
  Stamp stamp;
  int64_t next_check_ms = 0;
  std::unordered_map<std::string, Refusals> refusals;
  // Anyone:
  std::atomic<bool> stopping{false};
  std::atomic<uint64_t> accepted{0};
  std::atomic<uint64_t> refused{0};
  std::thread thread;
};

ZapHandler::ZapHandler(zmq::context_t& context, const CurveServerKeys& keys,
                       std::shared_ptr<spdlog::logger> log)
    : impl_(std::make_unique<Impl>(context, keys, std::move(log))) {
  impl_->log->info("[security.zap] CURVE authentication on: {} authorized key(s) in {}",
                   impl_->keys.size(), impl_->file);
  // The sockets were bound on this thread; the thread start is the full
  // memory barrier ZeroMQ asks for when a socket changes threads.
  impl_->thread = std::thread([impl = impl_.get()] { impl->run(); });
}

ZapHandler::~ZapHandler() {
  impl_->stopping.store(true, std::memory_order_release);
  try {
    zmq::socket_t poke(impl_->context, zmq::socket_type::pair);
    poke.set(zmq::sockopt::linger, 0);
    poke.connect(impl_->wake_endpoint);
    (void)poke.send(zmq::str_buffer("stop"), zmq::send_flags::dontwait);
  } catch (const zmq::error_t&) {
    // The flag still ends the loop within its poll timeout.
  }
  if (impl_->thread.joinable()) impl_->thread.join();
}

uint64_t ZapHandler::accepted() const { return impl_->accepted.load(); }
uint64_t ZapHandler::refused() const { return impl_->refused.load(); }

// ---- the handshake monitor -----------------------------------------------------

HandshakeMonitor::HandshakeMonitor(zmq::context_t& context, zmq::socket_t& socket, bool curve)
    : socket_(&socket), events_(context, zmq::socket_type::pair), curve_(curve) {
  static std::atomic<uint64_t> counter{0};
  const std::string endpoint = cat("inproc://gt-handshake-", ::getpid(), "-", counter.fetch_add(1));
  constexpr int kEvents = ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
  if (zmq_socket_monitor(socket.handle(), endpoint.c_str(), kEvents) != 0) throw zmq::error_t();
  events_.set(zmq::sockopt::linger, 0);
  events_.connect(endpoint);
}

HandshakeMonitor::~HandshakeMonitor() {
  (void)zmq_socket_monitor(socket_->handle(), nullptr, 0);
}

std::optional<std::string> HandshakeMonitor::failure() {
  for (;;) {
    std::optional<Frames> frames;
    try {
      frames = recv_frames(events_);
    } catch (const zmq::error_t&) {
      break;  // EINTR: look again at the next call
    }
    if (!frames) break;
    // An event is [6 bytes: uint16 event, uint32 value (host order)] [endpoint].
    if (frames->empty() || (*frames)[0].size() != 6) continue;
    uint16_t event = 0;
    uint32_t value = 0;
    std::memcpy(&event, (*frames)[0].data(), 2);
    std::memcpy(&value, static_cast<const char*>((*frames)[0].data()) + 2, 4);
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
      failure_ = cat(
          "authentication failed: the dispatcher refused this peer's CURVE key (ZAP status ",
          value, "); add its public key (the .pub file next to GT_CURVE_CLIENT_KEY's .key) to "
          "the dispatcher's GT_CURVE_AUTHORIZED_KEYS");
    } else if (value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) {
      failure_ =
          curve_ ? std::string(
                       "the dispatcher does not use CURVE (security mechanism mismatch): it runs "
                       "without GT_CURVE_SECRET_KEY; give it a key pair, or unset "
                       "GT_CURVE_SERVER_KEY and GT_CURVE_CLIENT_KEY here")
                 : std::string(
                       "the dispatcher requires CURVE encryption (security mechanism mismatch): "
                       "set GT_CURVE_SERVER_KEY (the dispatcher's public key) and "
                       "GT_CURVE_CLIENT_KEY (this peer's key file, whose public key the "
                       "dispatcher lists); see docs/security.md");
    } else if (value == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC) {
      failure_ =
          "the CURVE handshake failed (cryptographic error): is GT_CURVE_SERVER_KEY the "
          "dispatcher's public key?";
    } else {
      char code[16];
      std::snprintf(code, sizeof code, "0x%08x", value);
      failure_ = cat("the security handshake with the dispatcher failed (ZMTP protocol error ",
                     code, ")");
    }
  }
  return failure_;
}

}  // namespace gt
