// libsodium-based record encryption, token hashing and token generation.
#include "storage/crypto.hpp"
#include "storage/core_names.hpp"

#include <sodium.h>

#include <cstring>

namespace keyway::storage {

namespace {

constexpr unsigned char kSealFormat = 0x01;
constexpr size_t kNonceBytes = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
constexpr size_t kTagBytes = crypto_aead_xchacha20poly1305_ietf_ABYTES;
// crypto_kdf contexts are exactly 8 bytes; subkey ids separate the purposes.
constexpr char kKdfContext[crypto_kdf_CONTEXTBYTES + 1] = "keywayv1";
constexpr uint64_t kSealSubkeyId = 1;
constexpr uint64_t kTokenSubkeyId = 2;
constexpr uint64_t kFingerprintSubkeyId = 3;
constexpr uint64_t kKeyIdSubkeyId = 4;
constexpr uint64_t kMacSubkeyId = 5;
constexpr size_t kHashKeysBytes = 2 * kKeyBytes;  // token key, then fingerprint key

static_assert(kKeyBytes == crypto_aead_xchacha20poly1305_ietf_KEYBYTES);
static_assert(kKeyBytes == crypto_kdf_KEYBYTES);
static_assert(kTokenHashBytes == crypto_generichash_BYTES);
static_assert(kMacBytes == crypto_generichash_BYTES);
static_assert(kKeyIdBytes >= crypto_kdf_BYTES_MIN);

// The authenticated data covers the format byte too, so it cannot be swapped.
std::string fullAssociatedData(unsigned char format, std::string_view associated_data) {
  std::string ad;
  ad.reserve(1 + associated_data.size());
  ad.push_back(static_cast<char>(format));
  ad.append(associated_data);
  return ad;
}

}  // namespace

core::Status initSodium() {
  static const int rc = sodium_init();  // thread-safe static init; < 0 means unusable
  if (rc < 0) {
    return Error::make(ErrorCode::kInternal, "libsodium could not be initialised");
  }
  return core::okStatus();
}

void SecureKey::Free::operator()(unsigned char* p) const { sodium_free(p); }

Result<SecureKey> SecureKey::allocate() {
  auto init = initSodium();
  if (!init) return init.takeError();
  auto* p = static_cast<unsigned char*>(sodium_malloc(kKeyBytes));
  if (p == nullptr) return Error::make(ErrorCode::kInternal, "cannot allocate key memory");
  SecureKey key;
  key.bytes_.reset(p);
  return key;
}

Result<SecureKey> SecureKey::fromBytes(std::string_view bytes) {
  if (bytes.size() != kKeyBytes) {
    return Error::make(ErrorCode::kBadRequest, "a key must be exactly 32 bytes");
  }
  auto key = allocate();
  if (!key) return key;
  memcpy(key->bytes_.get(), bytes.data(), kKeyBytes);
  return key;
}

Result<SecureKey> SecureKey::random() {
  auto key = allocate();
  if (!key) return key;
  randombytes_buf(key->bytes_.get(), kKeyBytes);
  return key;
}

std::string base64UrlEncode(std::string_view bytes) {
  const int variant = sodium_base64_VARIANT_URLSAFE_NO_PADDING;
  std::string out(sodium_base64_ENCODED_LEN(bytes.size(), variant), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()),
                    bytes.size(), variant);
  out.resize(strlen(out.c_str()));
  return out;
}

core::SecretString generateClientToken() {
  // Not reported: every caller holds a Keyring, whose creation already needed it to succeed.
  (void)initSodium();
  unsigned char raw[32];
  randombytes_buf(raw, sizeof raw);
  std::string token(kClientTokenPrefix);
  std::string encoded = base64UrlEncode(std::string_view(reinterpret_cast<char*>(raw), sizeof raw));
  token += encoded;
  sodium_memzero(raw, sizeof raw);
  sodium_memzero(encoded.data(), encoded.size());
  return core::SecretString(std::move(token));
}

std::string hexEncode(std::string_view bytes) {
  std::string out(2 * bytes.size() + 1, '\0');
  sodium_bin2hex(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()),
                 bytes.size());
  out.pop_back();
  return out;
}

namespace {

// BLAKE2b-256 of `data` keyed with `key` (tokenHash, mac).
std::string keyedHash(std::string_view data, const SecureKey& key) {
  std::string out(crypto_generichash_BYTES, '\0');
  crypto_generichash(reinterpret_cast<unsigned char*>(out.data()), out.size(),
                     reinterpret_cast<const unsigned char*>(data.data()), data.size(), key.data(),
                     SecureKey::size());
  return out;
}

}  // namespace

struct Keyring::Sealing {
  SecureKey seal;
  SecureKey mac;
  std::string key_id;
};

Result<SecureKey> Keyring::derive(const MasterKey& master, uint64_t subkey_id) {
  auto key = SecureKey::allocate();
  if (!key) return key;
  if (crypto_kdf_derive_from_key(key->bytes_.get(), kKeyBytes, subkey_id, kKdfContext,
                                 master.data()) != 0) {
    return Error::make(ErrorCode::kInternal, "key derivation failed");
  }
  return key;
}

Result<Keyring::Sealing> Keyring::sealingOf(const MasterKey& master) {
  auto seal_key = derive(master, kSealSubkeyId);
  if (!seal_key) return seal_key.takeError();
  auto mac_key = derive(master, kMacSubkeyId);
  if (!mac_key) return mac_key.takeError();
  std::string key_id(kKeyIdBytes, '\0');
  if (crypto_kdf_derive_from_key(reinterpret_cast<unsigned char*>(key_id.data()), key_id.size(),
                                 kKeyIdSubkeyId, kKdfContext, master.data()) != 0) {
    return Error::make(ErrorCode::kInternal, "key derivation failed");
  }
  return Sealing{std::move(seal_key).value(), std::move(mac_key).value(), std::move(key_id)};
}

Keyring Keyring::assemble(Sealing sealing, SecureKey token_key, SecureKey fingerprint_key) {
  return Keyring(std::move(sealing.seal), std::move(sealing.mac), std::move(sealing.key_id),
                 std::move(token_key), std::move(fingerprint_key));
}

Result<Keyring> Keyring::create(const MasterKey& master) {
  auto sealing = sealingOf(master);
  if (!sealing) return sealing.takeError();
  auto token_key = derive(master, kTokenSubkeyId);
  if (!token_key) return token_key.takeError();
  auto fingerprint_key = derive(master, kFingerprintSubkeyId);
  if (!fingerprint_key) return fingerprint_key.takeError();
  return assemble(std::move(sealing).value(), std::move(token_key).value(),
                  std::move(fingerprint_key).value());
}

Result<Keyring> Keyring::create(const MasterKey& master, const Keyring& hashing) {
  auto sealing = sealingOf(master);
  if (!sealing) return sealing.takeError();
  auto token_key = SecureKey::fromBytes(
      std::string_view(reinterpret_cast<const char*>(hashing.token_key_.data()), kKeyBytes));
  if (!token_key) return token_key.takeError();
  auto fingerprint_key = SecureKey::fromBytes(
      std::string_view(reinterpret_cast<const char*>(hashing.fingerprint_key_.data()), kKeyBytes));
  if (!fingerprint_key) return fingerprint_key.takeError();
  return assemble(std::move(sealing).value(), std::move(token_key).value(),
                  std::move(fingerprint_key).value());
}

Result<Keyring> Keyring::create(const MasterKey& master, std::string_view sealed_hash_keys,
                                std::string_view associated_data) {
  // The keyring of `master` alone opens the record; its sealing subkeys are then ours.
  auto opener = create(master);
  if (!opener) return opener.takeError();
  auto plain = opener->open(sealed_hash_keys, associated_data);
  if (!plain) return plain.takeError();
  if (plain->size() != kHashKeysBytes) {
    return Error::make(ErrorCode::kInternal, "the sealed hashing keys have the wrong size");
  }
  auto token_key = SecureKey::fromBytes(plain->view().substr(0, kKeyBytes));
  if (!token_key) return token_key.takeError();
  auto fingerprint_key = SecureKey::fromBytes(plain->view().substr(kKeyBytes));
  if (!fingerprint_key) return fingerprint_key.takeError();
  return Keyring(std::move(opener->seal_key_), std::move(opener->mac_key_),
                 std::move(opener->key_id_), std::move(token_key).value(),
                 std::move(fingerprint_key).value());
}

std::string Keyring::sealHashKeys(std::string_view associated_data) const {
  unsigned char both[kHashKeysBytes];
  memcpy(both, token_key_.data(), kKeyBytes);
  memcpy(both + kKeyBytes, fingerprint_key_.data(), kKeyBytes);
  std::string sealed = seal(std::string_view(reinterpret_cast<char*>(both), sizeof both),
                            associated_data);
  sodium_memzero(both, sizeof both);
  return sealed;
}

std::string Keyring::mac(std::string_view data) const { return keyedHash(data, mac_key_); }

std::string Keyring::seal(std::string_view plaintext, std::string_view associated_data) const {
  const std::string ad = fullAssociatedData(kSealFormat, associated_data);
  std::string out(1 + kNonceBytes + plaintext.size() + kTagBytes, '\0');
  auto* p = reinterpret_cast<unsigned char*>(out.data());
  p[0] = kSealFormat;
  // 24-byte random nonces: collisions are negligible even for billions of records, which is
  // why XChaCha rather than the 12-byte IETF ChaCha20-Poly1305 nonce.
  randombytes_buf(p + 1, kNonceBytes);
  unsigned long long written = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(
      p + 1 + kNonceBytes, &written, reinterpret_cast<const unsigned char*>(plaintext.data()),
      plaintext.size(), reinterpret_cast<const unsigned char*>(ad.data()), ad.size(), nullptr,
      p + 1, seal_key_.data());
  out.resize(1 + kNonceBytes + static_cast<size_t>(written));
  return out;
}

Result<core::SecretString> Keyring::open(std::string_view sealed,
                                         std::string_view associated_data) const {
  if (sealed.size() < 1 + kNonceBytes + kTagBytes) {
    return Error::make(ErrorCode::kInternal, "encrypted record is truncated");
  }
  const auto* p = reinterpret_cast<const unsigned char*>(sealed.data());
  if (p[0] != kSealFormat) {
    return Error::make(ErrorCode::kInternal, "encrypted record has an unknown format");
  }
  const std::string ad = fullAssociatedData(p[0], associated_data);
  const size_t ct_size = sealed.size() - 1 - kNonceBytes;
  std::string plain(ct_size - kTagBytes, '\0');
  unsigned long long written = 0;
  const int rc = crypto_aead_xchacha20poly1305_ietf_decrypt(
      reinterpret_cast<unsigned char*>(plain.data()), &written, nullptr, p + 1 + kNonceBytes,
      ct_size, reinterpret_cast<const unsigned char*>(ad.data()), ad.size(), p + 1,
      seal_key_.data());
  if (rc != 0) {
    sodium_memzero(plain.data(), plain.size());
    return Error::make(ErrorCode::kInternal,
                       "encrypted record failed authentication (tampered with, moved to another "
                       "key, or written under another master key)");
  }
  // Copy then wipe: moving a short (SSO) std::string would leave its bytes in `plain`.
  core::SecretString value{std::string_view(plain.data(), static_cast<size_t>(written))};
  sodium_memzero(plain.data(), plain.size());
  return value;
}

std::string Keyring::tokenHash(std::string_view token) const {
  return keyedHash(token, token_key_);
}

std::string Keyring::fingerprint(std::string_view value) const {
  unsigned char raw[kFingerprintBytes];
  crypto_generichash(raw, sizeof raw, reinterpret_cast<const unsigned char*>(value.data()), value.size(),
                     fingerprint_key_.data(), kKeyBytes);
  return base64UrlEncode(std::string_view(reinterpret_cast<const char*>(raw), sizeof raw));
}

}  // namespace keyway::storage
