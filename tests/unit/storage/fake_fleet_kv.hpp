// An etcd stand-in for the fleet store's tests: keys with mod revisions, one cluster revision,
// guarded transactions, and hooks to fail or to slip another writer in before a commit.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "storage/fleet_replica.hpp"
#include "storage/fleet_store.hpp"

namespace keyway::testing {

class FakeFleetKv final : public storage::FleetKv {
 public:
  core::Result<storage::FleetRange> range(const std::string& prefix) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++ranges;
    if (down) return core::Error::make(core::ErrorCode::kUnavailable, "etcd is unreachable (fake)");
    storage::FleetRange out;
    out.revision = revision_;
    for (const auto& [k, v] : kv_) {
      if (k.compare(0, prefix.size(), prefix) == 0) out.entries.push_back({k, v.value, v.mod_revision});
    }
    return out;
  }

  core::Result<bool> commit(const std::vector<storage::FleetGuard>& guards,
                            const std::vector<storage::FleetWrite>& writes) override {
    std::function<void()> hook;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++commits;
      if (down) return core::Error::make(core::ErrorCode::kUnavailable, "etcd is unreachable (fake)");
      hook = std::move(before_commit);
      before_commit = nullptr;
    }
    if (hook) hook();  // another writer commits first
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& g : guards) {
      auto it = kv_.find(g.key);
      const int64_t mod = it == kv_.end() ? 0 : it->second.mod_revision;
      if (mod != g.mod_revision) {
        ++conflicts;
        return false;
      }
    }
    ++revision_;
    for (const auto& w : writes) {
      if (w.value) {
        kv_[w.key] = Value{*w.value, revision_};
      } else {
        kv_.erase(w.key);
      }
      log.push_back({w.key, w.value, revision_});
    }
    return true;
  }

  // Every key and value, as someone with access to etcd but not the master key sees them.
  std::vector<std::pair<std::string, std::string>> dump() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& [k, v] : kv_) out.emplace_back(k, v.value);
    return out;
  }
  void set(const std::string& key, const std::string& value) {
    std::lock_guard<std::mutex> lock(mu_);
    kv_[key] = Value{value, ++revision_};
    log.push_back({key, value, revision_});
  }
  int64_t revision() {
    std::lock_guard<std::mutex> lock(mu_);
    return revision_;
  }

  bool down = false;
  std::function<void()> before_commit;  // run once, before the next commit's guards are checked
  int ranges = 0, commits = 0, conflicts = 0;
  std::vector<storage::FleetEvent> log;  // every write in order, as a watch would deliver it

 private:
  struct Value {
    std::string value;
    int64_t mod_revision = 0;
  };
  std::mutex mu_;
  std::map<std::string, Value> kv_;
  int64_t revision_ = 1;
};

}  // namespace keyway::testing
