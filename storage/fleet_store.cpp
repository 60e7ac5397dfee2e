// The fleet store's layout, sealing and keywayctl's units over etcd (see fleet_store.hpp).
#include "storage/fleet_store.hpp"

#include <sodium.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <thread>

#include "storage/core_names.hpp"
#include "storage/credential_rules.hpp"
#include "storage/master_key.hpp"
#include "storage/record_codec.hpp"

namespace keyway::storage {

namespace {

// Associated data of the sealed meta record and of each record: the key under the prefix, so a
// value copied to another key (or another record's name) does not open.
constexpr std::string_view kHashKeysAd = "keyway fleet\0meta/hash_keys";
std::string recordAd(std::string_view relative_key) {
  std::string ad = "keyway fleet";
  ad.push_back('\0');
  ad.append(relative_key);
  return ad;
}

void appendU32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

}  // namespace

std::string FleetCodec::recordKey(RecordTable table, std::string_view key) const {
  const std::string_view name = recordTableName(table);
  std::string named = "keyway fleet record";
  named.push_back('\0');
  named.append(name);
  named.push_back('\0');
  named.append(key);
  std::string out = prefix_;
  out.append(kFleetRecords);
  out.append(name);
  out.push_back('/');
  out.append(keyring_->fingerprint(named));
  return out;
}

std::string FleetCodec::seal(RecordTable table, std::string_view key, std::string_view value) const {
  std::string plain;
  plain.reserve(4 + key.size() + value.size());
  appendU32(plain, static_cast<uint32_t>(key.size()));
  plain.append(key);
  plain.append(value);
  const std::string etcd_key = recordKey(table, key);
  std::string sealed = keyring_->seal(plain, recordAd(std::string_view(etcd_key).substr(prefix_.size())));
  sodium_memzero(plain.data(), plain.size());
  return sealed;
}

Result<std::optional<FleetCodec::Record>> FleetCodec::open(std::string_view etcd_key,
                                                          std::string_view value) const {
  if (etcd_key.substr(0, prefix_.size()) != prefix_) return std::optional<Record>();
  const std::string_view relative = etcd_key.substr(prefix_.size());
  if (relative.substr(0, kFleetRecords.size()) != kFleetRecords) return std::optional<Record>();
  const std::string_view rest = relative.substr(kFleetRecords.size());
  const size_t slash = rest.find('/');
  const auto table = slash == std::string_view::npos ? std::nullopt : recordTableNamed(rest.substr(0, slash));
  const auto damaged = [&](const char* what) {
    return Error::make(ErrorCode::kInternal,
                       std::string("fleet record ") + std::string(relative) + " " + what +
                           " (sealed under another master key, or changed in etcd by someone without it)");
  };
  if (!table) return damaged("has an unknown table");
  auto plain = keyring_->open(value, recordAd(relative));
  if (!plain) return damaged("does not open");
  const std::string_view p = plain->view();
  if (p.size() < 4) return damaged("is too short");
  const uint32_t key_size = static_cast<uint32_t>(static_cast<unsigned char>(p[0])) |
                            static_cast<uint32_t>(static_cast<unsigned char>(p[1])) << 8 |
                            static_cast<uint32_t>(static_cast<unsigned char>(p[2])) << 16 |
                            static_cast<uint32_t>(static_cast<unsigned char>(p[3])) << 24;
  if (key_size > p.size() - 4) return damaged("is malformed");
  Record record{*table, std::string(p.substr(4, key_size)), std::string(p.substr(4 + key_size))};
  // The name inside must be the one the key was derived from: a record cannot be moved.
  if (recordKey(record.table, record.key) != etcd_key) return damaged("names another record");
  return std::optional<Record>(std::move(record));
}

const FleetEntry* findFleetEntry(const FleetRange& range, const std::string& key) {
  for (const auto& e : range.entries) {
    if (e.key == key) return &e;
  }
  return nullptr;
}

bool fleetInitialised(const FleetRange& range, const std::string& prefix) {
  return findFleetEntry(range, prefix + std::string(kFleetKeyId)) != nullptr;
}

Result<std::shared_ptr<const Keyring>> fleetKeyring(const FleetRange& range, const std::string& prefix,
                                                    const MasterKey& key) {
  const FleetEntry* key_id = findFleetEntry(range, prefix + std::string(kFleetKeyId));
  const FleetEntry* hash_keys = findFleetEntry(range, prefix + std::string(kFleetHashKeys));
  if (key_id == nullptr || hash_keys == nullptr) {
    return Error::make(ErrorCode::kInternal, "the fleet prefix " + prefix +
                                                 " has no complete meta records (meta/key_id, meta/hash_keys)");
  }
  auto plain = Keyring::create(key);
  if (!plain) return plain.takeError();
  const std::string ours = hexEncode(plain->keyId());
  if (key_id->value != ours) {
    return Error::make(ErrorCode::kInternal,
                       "the fleet under " + prefix + " is sealed under master key id " +
                           key_id->value.substr(0, 16) + ", this host's master key has key id " +
                           ours.substr(0, 16) + ": give this host the fleet's master key (docs/fleet.md)");
  }
  auto keyring = Keyring::create(key, hash_keys->value, kHashKeysAd);
  if (!keyring) {
    return Error::make(ErrorCode::kInternal, "the fleet's meta/hash_keys under " + prefix +
                                                 " does not open with this host's master key; it is damaged");
  }
  return std::shared_ptr<const Keyring>(std::make_shared<Keyring>(std::move(keyring).value()));
}

std::string newFleetHeadValue() {
  unsigned char bytes[16];
  randombytes_buf(bytes, sizeof bytes);
  return hexEncode(std::string_view(reinterpret_cast<const char*>(bytes), sizeof bytes));
}

std::vector<FleetWrite> fleetMetaWrites(const std::string& prefix, const Keyring& keyring) {
  return {FleetWrite{prefix + std::string(kFleetKeyId), hexEncode(keyring.keyId())},
          FleetWrite{prefix + std::string(kFleetHashKeys), keyring.sealHashKeys(kHashKeysAd)}};
}

namespace {

// Full jitter over a window that doubles from 10 ms up to 400 ms: writers that keep colliding
// spread out until one read-and-commit fits between the others'.
void backoff(int attempt) {
  const uint32_t window = 10u << std::min(attempt, 5);
  std::this_thread::sleep_for(std::chrono::milliseconds(randombytes_uniform(window) + 1));
}


// keywayctl's view of a fleet: each unit on a copy of the records read from etcd.
class FleetCredentialRecords final : public CredentialRecords {
 public:
  FleetCredentialRecords(std::shared_ptr<FleetKv> kv, std::string prefix, MasterKey key)
      : kv_(std::move(kv)), prefix_(std::move(prefix)), key_(std::move(key)) {}

  Status view(const Unit& fn) override {
    auto loaded = load();
    if (!loaded) return loaded.takeError();
    auto records = tableRecordsTxn(loaded->tables, *loaded->codec.sharedKeyring());
    return fn(*records);
  }

  Status update(const Unit& fn) override {
    // The head value this command wrote last: seeing it in etcd means that commit landed, even
    // if its answer was lost (a timeout, or a member that failed after applying it and before
    // answering, whose request the client then sent to another member, which found its own
    // head and said "conflict").
    std::string written_head;
    const auto deadline = std::chrono::steady_clock::now() + kFleetWriteBudget;
    for (int attempt = 0;; ++attempt) {
      auto loaded = load();
      if (!loaded) return loaded.takeError();
      if (!written_head.empty() && loaded->head_value == written_head) {
        generation_.fetch_add(1);
        return core::okStatus();
      }
      auto records = tableRecordsTxn(loaded->tables, loaded->codec.keyring());
      auto status = fn(*records);
      if (!status) return status;
      std::vector<FleetWrite> writes;
      for (const auto& [where, value] : loaded->tables.changes()) {
        // Minted user tokens belong to the host that minted them (fleet_store.hpp).
        if (where.first == RecordTable::kUserTokens) continue;
        FleetWrite w;
        w.key = loaded->codec.recordKey(where.first, where.second);
        if (value) w.value = loaded->codec.seal(where.first, where.second, *value);
        writes.push_back(std::move(w));
      }
      if (writes.empty()) return core::okStatus();
      if (writes.size() > kFleetMaxWritesPerTxn) {
        return Error::make(ErrorCode::kBadRequest,
                           "this change writes " + std::to_string(writes.size()) +
                               " fleet records, more than one etcd transaction carries (" +
                               std::to_string(kFleetMaxWritesPerTxn) + "); make it in smaller steps");
      }
      std::vector<FleetGuard> guards{{prefix_ + std::string(kFleetHead), loaded->head_revision}};
      if (!loaded->initialised) {
        guards.push_back({prefix_ + std::string(kFleetKeyId), 0});
        for (auto& w : fleetMetaWrites(prefix_, loaded->codec.keyring())) writes.push_back(std::move(w));
      }
      written_head = newFleetHeadValue();
      writes.push_back({prefix_ + std::string(kFleetHead), written_head});
      auto committed = kv_->commit(guards, writes);
      if (!committed) {
        // Unknown outcome: look once more for our head before saying what happened.
        auto again = load();
        if (again && again->head_value == written_head) {
          generation_.fetch_add(1);
          return core::okStatus();
        }
        if (again) return committed.takeError();  // etcd answers now and the change is not there
        return Error::make(committed.error().code,
                           committed.error().message +
                               "; whether this change was made is unknown until etcd answers again: check with "
                               "the list commands then");
      }
      if (*committed) {
        generation_.fetch_add(1);
        return core::okStatus();
      }
      // Another writer committed since our read: run the unit again on what is there now,
      // after a random pause that grows, so that writers racing in a loop spread out.
      if (std::chrono::steady_clock::now() >= deadline) {
        return Error::make(ErrorCode::kUnavailable,
                           "the fleet store kept changing under this command (" + std::to_string(attempt + 1) +
                               " attempts in " + std::to_string(kFleetWriteBudget.count()) + " s); run it again");
      }
      backoff(attempt);
    }
  }

  uint64_t generation() override { return generation_.load(); }
  std::shared_ptr<const Keyring> keyring() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return keyring_;
  }

 private:
  struct Loaded {
    MapTables tables;
    FleetCodec codec;
    int64_t head_revision = 0;
    bool initialised = false;
    std::string head_value;
  };

  Result<Loaded> load() {
    auto range = kv_->range(prefix_);
    if (!range) return range.takeError();
    const bool initialised = fleetInitialised(*range, prefix_);
    std::shared_ptr<const Keyring> keyring;
    if (initialised) {
      auto k = fleetKeyring(*range, prefix_, key_);
      if (!k) return k.takeError();
      keyring = std::move(k).value();
    } else {
      auto k = Keyring::create(key_);
      if (!k) return k.takeError();
      keyring = std::make_shared<Keyring>(std::move(k).value());
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      keyring_ = keyring;
    }
    Loaded loaded{MapTables(), FleetCodec(prefix_, keyring), 0, initialised, {}};
    if (const FleetEntry* head = findFleetEntry(*range, prefix_ + std::string(kFleetHead))) {
      loaded.head_revision = head->mod_revision;
      loaded.head_value = head->value;
    }
    for (const auto& e : range->entries) {
      auto record = loaded.codec.open(e.key, e.value);
      if (!record) return record.takeError();
      if (*record) loaded.tables.load((*record)->table, std::move((*record)->key), std::move((*record)->value));
    }
    return loaded;
  }

  std::shared_ptr<FleetKv> kv_;
  std::string prefix_;
  MasterKey key_;
  std::atomic<uint64_t> generation_{0};
  mutable std::mutex mu_;
  std::shared_ptr<const Keyring> keyring_;
};

}  // namespace

Result<std::unique_ptr<core::CredentialStore>> openFleetCredentialStore(
    std::shared_ptr<FleetKv> kv, std::string prefix, const std::string& master_key_file,
    std::shared_ptr<const core::Clock> clock) {
  auto key = loadMasterKeyFile(master_key_file);
  if (!key) return key.takeError();
  auto records = std::make_unique<FleetCredentialRecords>(std::move(kv), std::move(prefix),
                                                          std::move(key).value());
  return std::unique_ptr<core::CredentialStore>(
      std::make_unique<CredentialRules>(std::move(records), std::move(clock)));
}

}  // namespace keyway::storage
