#pragma once
// CurveZMQ encryption and authentication of gt's connections (docs/security.md):
// key files, the CURVE socket options (set here and nowhere else), the rule
// for plaintext endpoints, the dispatcher's ZAP handler and the handshake
// monitor that tells a refused peer why. No LibTorch.
//
// Errors: a bad key file or variable throws gt::ConfigError whose file() is
// the file and key() the variable; its message names both and what was
// expected. Messages never contain secret key material.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <zmq.hpp>

namespace spdlog {
class logger;
}

namespace gt {

struct Env;

/// Characters of a 32-byte CURVE key in Z85 text.
inline constexpr size_t kZ85KeyChars = 40;

/// A CURVE key pair as Z85 text. secret_key is secret material: never log it.
struct CurveKeyPair {
  std::string public_key;
  std::string secret_key;
};

/// True for exactly 40 characters of the Z85 alphabet.
bool is_z85_key(std::string_view text);

/// Throws gt::Error naming `who` when this libzmq was built without CURVE.
void require_curve(std::string_view who);

/// A fresh key pair (zmq_curve_keypair); throws gt::Error without CURVE.
CurveKeyPair generate_curve_key_pair();

/// The text of a secret key file (PREFIX.key): comments, then
/// `public-key = Z85` and `secret-key = Z85`.
std::string format_secret_key_file(const CurveKeyPair& keys);
/// The text of a public key file (PREFIX.pub): one line `Z85 NAME`, the form
/// of an authorized keys line.
std::string format_public_key_file(const std::string& public_key, std::string_view name);

/// Parsers of the three formats. `file` and `variable` only name the input
/// in messages (either may be empty).
CurveKeyPair parse_secret_key_file(std::string_view text, const std::string& file,
                                   const std::string& variable = {});
std::string parse_public_key_file(std::string_view text, const std::string& file,
                                  const std::string& variable = {});

/// One line of an authorized keys file.
struct AuthorizedKey {
  std::string key;   // Z85 public key
  std::string name;  // the text after the key, "" if none
  int line = 0;
};
std::vector<AuthorizedKey> parse_authorized_keys(std::string_view text, const std::string& file,
                                                 const std::string& variable = {});

/// Readers: the file must exist and be a small regular file; a secret key
/// file must also be closed to group and others (mode 0600 or 0400).
CurveKeyPair read_secret_key_file(const std::string& path, const std::string& variable = {});
std::vector<AuthorizedKey> read_authorized_keys(const std::string& path,
                                                const std::string& variable = {});
/// A public key given as the Z85 key itself or as the path of a .pub file.
std::string read_public_key(const std::string& value, const std::string& variable = {});

/// Writes PREFIX.key (mode 0600) and PREFIX.pub (mode 0644), each whole or
/// not at all. Refuses to replace existing files unless `overwrite`. Returns
/// the two paths. Throws gt::Error naming the file.
std::pair<std::string, std::string> write_key_files(const std::string& prefix,
                                                    const CurveKeyPair& keys, bool overwrite);

/// What a connecting peer (client, worker, tool) needs to use CURVE.
struct CurveClientKeys {
  std::string server_key;  // the dispatcher's public key (Z85)
  CurveKeyPair own;
};

/// What the dispatcher needs to be a CURVE server.
struct CurveServerKeys {
  CurveKeyPair own;
  std::string authorized_keys_file;
  std::vector<AuthorizedKey> authorized;  // as read at start-up
};

/// GT_CURVE_SERVER_KEY and GT_CURVE_CLIENT_KEY, loaded and checked; nullopt
/// when neither is set. One without the other is a ConfigError.
std::optional<CurveClientKeys> curve_client_keys(const Env& env);
/// GT_CURVE_SECRET_KEY and GT_CURVE_AUTHORIZED_KEYS, likewise.
std::optional<CurveServerKeys> curve_server_keys(const Env& env);

/// Note [curve socket options]: the only code that sets CURVE options.
/// Client side, before connect: `keys` nullptr leaves the socket plain.
void apply_curve(zmq::socket_t& socket, const CurveClientKeys* keys);
/// Server side, before bind. A ZapHandler must already serve the socket's
/// context (Note [zap handler]).
void apply_curve(zmq::socket_t& socket, const CurveServerKeys& keys);

/// tcp:// on 127.0.0.0/8, localhost or ::1; ipc:// and inproc:// count as
/// local too. tcp://*, 0.0.0.0 and every other host do not.
bool is_local_endpoint(const std::string& endpoint);

/// The dispatcher's rule for binding `endpoint`: throws gt::ConfigError when
/// it is not local, `curve` is false and `allow_plaintext`
/// (GT_ALLOW_PLAINTEXT) is false. `what` names the socket in the message.
/// Returns true when plaintext on a non-local endpoint was allowed (the
/// caller warns).
bool check_plaintext_bind(const std::string& endpoint, bool curve, bool allow_plaintext,
                          std::string_view what);

/// Note [zap handler]: answers libzmq's ZAP requests (RFC 27) for every
/// CURVE server socket of one context, accepting the public keys listed in
/// the authorized keys file. The file is read again when it changes (its
/// mtime, size or inode, checked at most once a second when a peer
/// connects); a version that does not parse is logged and the previous list
/// kept.
///
/// Threads: the constructor binds inproc://zeromq.zap.01 on the calling
/// thread, then starts the handler thread, which owns that socket from then
/// on. The destructor (the owner) wakes it through an inproc pair and joins
/// it. Destroy it after every CURVE server socket of the context is closed
/// and before the context. Pinned.
class ZapHandler {
 public:
  /// Throws gt::Error when the endpoint is taken (one handler per context).
  ZapHandler(zmq::context_t& context, const CurveServerKeys& keys,
             std::shared_ptr<spdlog::logger> log);
  ~ZapHandler();
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  uint64_t accepted() const;
  uint64_t refused() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Watches a connecting socket's handshakes (zmq_socket_monitor) so that a
/// peer the dispatcher refuses says why instead of timing out. Create it
/// before connect and destroy it before the socket. One thread: the
/// socket's.
class HandshakeMonitor {
 public:
  /// `curve`: whether this side uses CURVE (worded into the messages).
  HandshakeMonitor(zmq::context_t& context, zmq::socket_t& socket, bool curve);
  ~HandshakeMonitor();
  HandshakeMonitor(const HandshakeMonitor&) = delete;
  HandshakeMonitor& operator=(const HandshakeMonitor&) = delete;

  /// Reads the events queued so far, without waiting. A sentence on why the
  /// dispatcher refused this peer (authentication failed, or it speaks
  /// another security mechanism), or nullopt while none of that happened.
  [[nodiscard]] std::optional<std::string> failure();

 private:
  zmq::socket_t* socket_;
  zmq::socket_t events_;
  bool curve_;
  std::optional<std::string> failure_;
};

}  // namespace gt
