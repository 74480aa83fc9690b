#include "worker/collectives/dispatcher_store.h"

#include <algorithm>

#include <gt/error.h>

#include "common/wire.h"

namespace gt::worker::collectives {

DispatcherStore::DispatcherStore(std::unique_ptr<StoreTransport> transport)
    : transport_(std::move(transport)) {}

void DispatcherStore::set(const std::string& key, const std::vector<char>& value) {
  if (key.empty() || key.size() > wire::kMaxStoreKeyBytes) {
    throw Error("[store.set] a key of " + std::to_string(key.size()) +
                " bytes: expected 1 to " + std::to_string(wire::kMaxStoreKeyBytes));
  }
  if (value.size() > wire::kMaxStoreValueBytes) {
    throw Error("[store.set] a value of " + std::to_string(value.size()) + " bytes for '" + key +
                "': expected at most " + std::to_string(wire::kMaxStoreValueBytes));
  }
  transport_->send(wire::encode_store_set(key, std::span(value.data(), value.size())));
}

std::optional<std::vector<char>> DispatcherStore::get(const std::string& key,
                                                      std::chrono::milliseconds timeout) {
  Answer a = request({key}, timeout);
  if (!a.missing.empty() || a.values.empty()) return std::nullopt;
  return std::move(a.values[0]);
}

std::vector<std::string> DispatcherStore::wait(const std::vector<std::string>& keys,
                                               std::chrono::milliseconds timeout) {
  if (keys.empty()) return {};
  return request(keys, timeout).missing;
}

DispatcherStore::Answer DispatcherStore::request(const std::vector<std::string>& keys,
                                                 std::chrono::milliseconds timeout) {
  if (keys.size() > wire::kMaxStoreKeysPerGet) {
    throw Error("[store.get] " + std::to_string(keys.size()) + " keys in one request: expected at most " +
                std::to_string(wire::kMaxStoreKeysPerGet));
  }
  const uint64_t id = next_request_++;
  const auto ms = std::clamp<int64_t>(timeout.count(), 0, UINT32_MAX);
  transport_->send(wire::encode_store_get(id, keys, static_cast<uint32_t>(ms)));
  const auto deadline = std::chrono::steady_clock::now() + timeout + kReplyGrace;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    std::optional<zmq::message_t> frame = transport_->receive(left);
    if (!frame) continue;
    const wire::Message* msg = wire::decode(*frame);  // ProtocolError on garbage
    if (msg->body_type() == wire::Body::ErrorReply) {
      const auto* e = msg->body_as_ErrorReply();
      throw Error("[store] the dispatcher refused a store request: " +
                  (e->error() && e->error()->message() ? e->error()->message()->str()
                                                       : std::string("no message")));
    }
    const auto* reply = msg->body_as_StoreReply();
    if (!reply || reply->request() != id) continue;  // a late answer to an earlier request
    Answer a;
    if (reply->missing()) {
      for (const auto* m : *reply->missing()) a.missing.push_back(m ? m->str() : "");
    }
    if (a.missing.empty()) {
      if (!reply->entries() || reply->entries()->size() != keys.size()) {
        throw ProtocolError("[store] the dispatcher answered " +
                            std::to_string(reply->entries() ? reply->entries()->size() : 0) +
                            " entries for " + std::to_string(keys.size()) + " keys");
      }
      for (const auto* entry : *reply->entries()) {
        const auto* v = entry->value();
        a.values.emplace_back(reinterpret_cast<const char*>(v ? v->data() : nullptr),
                              reinterpret_cast<const char*>(v ? v->data() + v->size() : nullptr));
      }
    }
    return a;
  }
  throw TransportError("[store] the dispatcher did not answer a store request for '" + keys[0] +
                       "'" + (keys.size() > 1 ? " and " + std::to_string(keys.size() - 1) + " more" : "") +
                       " within " + std::to_string((timeout + kReplyGrace).count()) + " ms");
}

}  // namespace gt::worker::collectives
