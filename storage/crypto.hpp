// Cryptography of the credential store (libsodium): authenticated encryption of records bound
// to their key, keyed hashing of client tokens, client token generation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "core/client_token.hpp"
#include "core/result.hpp"
#include "core/secret.hpp"

namespace keyway::storage {

// Calls sodium_init() once per process (thread-safe, idempotent). kInternal if it fails.
core::Status initSodium();

inline constexpr size_t kKeyBytes = 32;

// 32 bytes of key material in sodium_malloc'd memory (guard pages, mlock'ed when allowed, wiped
// on free). Move-only; never printed.
class SecureKey {
 public:
  // Copies exactly kKeyBytes bytes; kBadRequest for another size.
  static core::Result<SecureKey> fromBytes(std::string_view bytes);
  static core::Result<SecureKey> random();

  const unsigned char* data() const { return bytes_.get(); }
  static constexpr size_t size() { return kKeyBytes; }

 private:
  friend class Keyring;  // derives subkeys straight into fresh secure memory
  struct Free {
    void operator()(unsigned char* p) const;
  };
  static core::Result<SecureKey> allocate();
  std::unique_ptr<unsigned char, Free> bytes_;
};

using MasterKey = SecureKey;

// Client tokens of the shape core/client_token.hpp defines (the gateway's token rule relies on it).
using core::isWellFormedClientToken;
using core::kClientTokenLength;
using core::kClientTokenPrefix;
core::SecretString generateClientToken();

std::string base64UrlEncode(std::string_view bytes);  // URL-safe alphabet, no padding

std::string hexEncode(std::string_view bytes);  // lower case

inline constexpr size_t kTokenHashBytes = 32;
inline constexpr size_t kFingerprintBytes = 16;
inline constexpr size_t kKeyIdBytes = 16;
inline constexpr size_t kMacBytes = 32;

// Subkeys derived from the master key (crypto_kdf) and the operations that use them.
// Immutable after creation; all methods are thread-safe.
//
// Two kinds of subkey: the sealing ones (seal/open, mac, keyId) always come from the master key
// the keyring was made with; the hashing ones (tokenHash, fingerprint) are derived from the
// master key a store was initialised with and carried over, sealed, when the store is re-keyed,
// so that client tokens stay valid and cache identities stay equal across a master key rotation.
class Keyring {
 public:
  // Every subkey derived from `master` (a store never re-keyed).
  static core::Result<Keyring> create(const MasterKey& master);
  // Sealing subkeys from `master`, hashing subkeys those of `hashing` (a re-key).
  static core::Result<Keyring> create(const MasterKey& master, const Keyring& hashing);
  // Sealing subkeys from `master`, hashing subkeys opened from `sealed_hash_keys` (what
  // sealHashKeys() wrote under the same master key and `associated_data`). kInternal when they
  // do not open (another master key, or damaged).
  static core::Result<Keyring> create(const MasterKey& master, std::string_view sealed_hash_keys,
                                      std::string_view associated_data);

  // The hashing subkeys sealed under this keyring's sealing key.
  std::string sealHashKeys(std::string_view associated_data) const;

  // kKeyIdBytes derived from the master key (crypto_kdf, a subkey of its own): names the key in
  // messages, backups and the store's meta records, and reveals nothing about it or the other
  // subkeys. Equal for equal master keys.
  const std::string& keyId() const { return key_id_; }

  // BLAKE2b-256 of `data` keyed with a subkey of the master key: authenticates a backup file.
  std::string mac(std::string_view data) const;

  // XChaCha20-Poly1305 with a random nonce; `associated_data` (the record's table and key) is
  // authenticated, so a ciphertext copied under another key fails to open.
  // Layout: [format 0x01][24-byte nonce][ciphertext][16-byte tag].
  std::string seal(std::string_view plaintext, std::string_view associated_data) const;
  // Decrypts what seal() produced for the same associated data. kInternal, without any secret in
  // the message, when the input is malformed or fails authentication (tampered, moved, or
  // sealed under another master key).
  core::Result<core::SecretString> open(std::string_view sealed,
                                        std::string_view associated_data) const;

  // BLAKE2b-256 of `token` keyed with the token subkey: kTokenHashBytes raw bytes. Without the
  // master key, a stolen database cannot be used to test token guesses.
  std::string tokenHash(std::string_view token) const;

  // BLAKE2b-128 of `value` keyed with the fingerprint subkey, base64url (22 characters): names a
  // credential's value in cache identities without revealing it. Equal for equal values under
  // the same master key (so on every host of a fleet), unguessable without it.
  std::string fingerprint(std::string_view value) const;

 private:
  struct Sealing;
  static core::Result<SecureKey> derive(const MasterKey& master, uint64_t subkey_id);
  static core::Result<Sealing> sealingOf(const MasterKey& master);
  static Keyring assemble(Sealing sealing, SecureKey token_key, SecureKey fingerprint_key);
  Keyring(SecureKey seal_key, SecureKey mac_key, std::string key_id, SecureKey token_key,
          SecureKey fingerprint_key)
      : seal_key_(std::move(seal_key)),
        mac_key_(std::move(mac_key)),
        key_id_(std::move(key_id)),
        token_key_(std::move(token_key)),
        fingerprint_key_(std::move(fingerprint_key)) {}
  SecureKey seal_key_;
  SecureKey mac_key_;
  std::string key_id_;
  SecureKey token_key_;
  SecureKey fingerprint_key_;
};

}  // namespace keyway::storage
