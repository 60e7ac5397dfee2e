// etcd through its v3 HTTP/JSON gateway (/v3/kv/range, /v3/kv/txn, /v3/watch,
// /v3/maintenance/status, /v3/auth/authenticate) on libcurl easy handles: the fleet's store of
// record (docs/fleet.md). Blocking: keywayctl calls it, and keywayd only from its replicator's
// own threads, never from a reactor thread.
//
// Failover: a call tries the endpoints in turn, starting with the one that answered last; a
// round in which none answered is retried once after a jittered pause; then kUnavailable, whose
// message names every endpoint and what it did.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "core/result.hpp"
#include "core/secret.hpp"
#include "storage/fleet_replica.hpp"
#include "storage/fleet_store.hpp"

namespace keyway::daemon {

struct EtcdEndpointStatus {
  std::string endpoint;
  bool ok = false;
  std::string version;   // etcd's, e.g. 3.4.23
  int64_t revision = 0;  // the cluster's, as this member knows it
  bool leader = false;   // this member leads the cluster
  std::string error;     // when !ok
};

// One response of a watch stream.
struct EtcdWatchBatch {
  bool created = false;          // the watch was set up
  int64_t revision = 0;          // header.revision
  int64_t compact_revision = 0;  // > 0: the start revision was compacted away
  bool canceled = false;
  std::vector<storage::FleetEvent> events;
};

class EtcdClient final : public storage::FleetKv {
 public:
  // The password (when the config names a user) is read from its file now.
  static core::Result<std::shared_ptr<EtcdClient>> create(const core::FleetConfig& config);

  core::Result<storage::FleetRange> range(const std::string& prefix) override;
  core::Result<bool> commit(const std::vector<storage::FleetGuard>& guards,
                            const std::vector<storage::FleetWrite>& writes) override;

  // The value of `key` as of `revision` (nullopt: absent then). kNotFound when etcd no longer has
  // (compacted) or does not yet have (future) that revision.
  core::Result<std::optional<std::string>> valueAt(const std::string& key, int64_t revision);

  // Every endpoint's status (each asked once, within the request timeout).
  std::vector<EtcdEndpointStatus> statusAll();
  // One endpoint's status within `timeout` (the replicator's health probe).
  EtcdEndpointStatus status(const std::string& endpoint, std::chrono::milliseconds timeout);

  // Watches every key under `prefix` from `from_revision` on one endpoint (the preferred one);
  // `on_batch` gets each response in order and returns false to stop. The call returns when
  // the stream ends or fails (an error naming the endpoint), when on_batch returned false (ok),
  // or when `keep_going` returns false (checked a few times a second; ok).
  core::Status watch(const std::string& prefix, int64_t from_revision,
                     const std::function<bool(const EtcdWatchBatch&)>& on_batch,
                     const std::function<bool()>& keep_going, std::string* endpoint_used);

  // The next call starts with another endpoint than `endpoint` (it stopped answering).
  void avoid(const std::string& endpoint);
  // Ends every call in progress and every later one at once (kUnavailable): keywayd's shutdown
  // does not wait for an etcd that does not answer.
  void cancel() { cancelled_.store(true); }
  const std::vector<std::string>& endpoints() const { return config_.endpoints; }

 private:
  explicit EtcdClient(core::FleetConfig config, std::optional<core::SecretString> password)
      : config_(std::move(config)), password_(std::move(password)) {}

  struct Reply {
    long status = 0;
    std::string body;
  };
  // POST `body` to `path` on `endpoint` with the auth token when there is one.
  core::Result<Reply> post(const std::string& endpoint, const std::string& path, const std::string& body,
                           std::chrono::milliseconds timeout);
  // POST to the endpoints in failover order until one answers with a parsable JSON reply.
  core::Result<std::string> call(const std::string& path, const std::string& body);
  core::Result<std::string> authToken(const std::string& endpoint);
  // "Authorization: <token>" when etcd wants one, else "" (the caller wipes it after the transfer).
  core::Result<std::string> authLine(const std::string& endpoint);

  core::FleetConfig config_;
  std::optional<core::SecretString> password_;
  std::atomic<size_t> preferred_{0};
  std::atomic<bool> cancelled_{false};
  std::mutex token_mu_;
  std::optional<core::SecretString> token_;  // etcd's auth token (simple tokens are per member)
  std::string token_endpoint_;
};

// `base` give or take half of it, at random: waits of clients that failed together spread out.
std::chrono::milliseconds jittered(std::chrono::milliseconds base);

// etcd's JSON gateway carries bytes as standard base64 (with padding).
std::string base64Encode(std::string_view bytes);
std::optional<std::string> base64Decode(std::string_view text);
// The end of a prefix range: the prefix with its last byte incremented (etcd's range_end).
std::string prefixRangeEnd(const std::string& prefix);

}  // namespace keyway::daemon
