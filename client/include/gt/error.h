#pragma once
// gt's exception family. Bad arguments throw std::invalid_argument at the call
// site; everything that fails at run time is a gt::Error.

#include <cstdint>
#include <stdexcept>
#include <string>

#include <gt/export.h>

namespace gt {

/// Base of all run-time failures reported by gt.
class GT_API Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The connection to the dispatcher failed or a peer went away.
class GT_API TransportError : public Error {
 public:
  using Error::Error;
};

/// A reply did not arrive in time.
class GT_API TimeoutError : public Error {
 public:
  using Error::Error;
};

/// A peer sent something that does not follow the protocol (bad version,
/// malformed message).
class GT_API ProtocolError : public Error {
 public:
  using Error::Error;
};

/// An instruction failed on a worker (or was rejected by the dispatcher).
/// Carries the worker index (-1 for the dispatcher), the op and the status code
/// listed in docs/errors.md.
class GT_API RemoteError : public Error {
 public:
  RemoteError(std::string message, int worker, std::string op, int code)
      : Error(std::move(message)), worker_(worker), op_(std::move(op)), code_(code) {}
  int worker() const { return worker_; }
  const std::string& op() const { return op_; }
  int code() const { return code_; }

 private:
  int worker_;
  std::string op_;
  int code_;
};

/// A configuration file or value is invalid; names the file and key path.
class GT_API ConfigError : public Error {
 public:
  ConfigError(std::string message, std::string file, std::string key)
      : Error(std::move(message)), file_(std::move(file)), key_(std::move(key)) {}
  const std::string& file() const { return file_; }
  const std::string& key() const { return key_; }

 private:
  std::string file_;
  std::string key_;
};

}  // namespace gt
