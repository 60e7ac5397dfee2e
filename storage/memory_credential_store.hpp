// MemoryCredentialStore: the credential rules (storage/credential_rules.hpp) over records kept in
// process memory, for gateway tests. Nothing is persisted.
#pragma once

#include <memory>

#include "core/clock.hpp"
#include "storage/credential_rules.hpp"

namespace keyway::storage {

// Same rules and errors as the LMDB store, because they are the same code. Secret values are
// held as SecretStrings (wiped on removal); client tokens only as keyed hashes under a random
// per-instance key, as in the LMDB store. Thread-safe (one mutex).
class MemoryCredentialStore final : public CredentialRules {
 public:
  // Aborts only if libsodium cannot initialise (then nothing in storage/ works).
  explicit MemoryCredentialStore(std::shared_ptr<const core::Clock> clock = nullptr);
};

}  // namespace keyway::storage
