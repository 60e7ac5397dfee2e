// Input layout of the record fuzz target, shared by the target and the corpus generator, and the
// public fuzz key (also the backup target's).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "storage/crypto.hpp"
#include "storage/record_codec.hpp"

namespace keyway::fuzz::record {

// The master key the seeds are sealed under and the target opens with. Public test data: it
// protects nothing.
inline constexpr std::string_view kFuzzMasterKey = "keyway fuzz corpus key, public!!";

// The keyring of kFuzzMasterKey, made once: SecureKey lives in sodium_malloc'd pages, too slow to
// make per input. Aborts if it cannot be made (then no input can be checked).
inline const storage::Keyring& fuzzKeyring() {
  static const std::unique_ptr<storage::Keyring> ring = [] {
    auto master = storage::MasterKey::fromBytes(kFuzzMasterKey);
    auto created = master ? storage::Keyring::create(*master)
                          : core::Result<storage::Keyring>(master.error());
    if (!created) {
      std::fprintf(stderr, "fuzz keyring: %s\n", created.error().message.c_str());
      std::abort();
    }
    return std::make_unique<storage::Keyring>(std::move(created).value());
  }();
  return *ring;
}

// Input: [selector: 1 byte][key length: 2 bytes little-endian][key][value: the rest].
// selector % kSelectors picks the table: the seven real ones, then an unknown table name, then
// "the key is the table name" (to reach the unknown-table message with arbitrary bytes).
// A key length past the end of the input takes what is there (every input is usable).
inline constexpr size_t kSelectors = 9;
inline constexpr std::string_view kTables[] = {
    storage::table::kTeams,     storage::table::kClients,  storage::table::kClientTokens,
    storage::table::kSecrets,   storage::table::kBosaUsers, storage::table::kUserTokens,
    storage::table::kMeta,      "no_such_table",
};
inline constexpr uint8_t kSelectorKeyIsTable = 8;

struct Input {
  std::string_view table;
  std::string_view key;
  std::string_view value;
};

inline Input split(std::string_view data) {
  Input in;
  if (data.empty()) {
    in.table = kTables[0];
    return in;
  }
  const auto selector = static_cast<uint8_t>(static_cast<uint8_t>(data[0]) % kSelectors);
  size_t key_len = 0;
  if (data.size() >= 3) {
    key_len = static_cast<uint8_t>(data[1]) | (static_cast<size_t>(static_cast<uint8_t>(data[2])) << 8);
  }
  const std::string_view rest = data.substr(data.size() >= 3 ? 3 : data.size());
  if (key_len > rest.size()) key_len = rest.size();
  in.key = rest.substr(0, key_len);
  in.value = rest.substr(key_len);
  in.table = selector == kSelectorKeyIsTable ? in.key : kTables[selector];
  return in;
}

// The inverse of split() for selectors 0..7 (the generator's side).
inline std::string join(uint8_t selector, std::string_view key, std::string_view value) {
  std::string out;
  out.push_back(static_cast<char>(selector));
  out.push_back(static_cast<char>(key.size() & 0xff));
  out.push_back(static_cast<char>((key.size() >> 8) & 0xff));
  out.append(key);
  out.append(value);
  return out;
}

}  // namespace keyway::fuzz::record
