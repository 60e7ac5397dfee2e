// Tests of storage/crypto (record sealing, token hashing and generation) and storage/master_key.
#include "storage/crypto.hpp"

#include <doctest/doctest.h>

#include <set>

#include "storage/master_key.hpp"
#include "tests/unit/storage/test_util.hpp"

namespace keyway::storage {
namespace {

using keyway::testing::contains;
using keyway::testing::fileMode;
using keyway::testing::readFile;
using keyway::testing::TempDir;
using keyway::testing::writeFile;

MasterKey keyOf(char fill) { return MasterKey::fromBytes(std::string(32, fill)).value(); }

Keyring keyringOf(char fill) { return Keyring::create(keyOf(fill)).value(); }

TEST_CASE("seal/open round trip, with fresh nonces") {
  const Keyring kr = keyringOf('a');
  const std::string plain = "sk-live-0123456789abcdef";
  const std::string ad = std::string("secrets\0team\0name", 17);
  const std::string s1 = kr.seal(plain, ad);
  const std::string s2 = kr.seal(plain, ad);
  CHECK(s1 != s2);  // random nonce per record
  CHECK(s1.size() == 1 + 24 + plain.size() + 16);
  CHECK_FALSE(contains(s1, plain));
  auto opened = kr.open(s1, ad);
  REQUIRE(opened.ok());
  CHECK(opened->view() == plain);
  auto empty = kr.open(kr.seal("", ad), ad);
  REQUIRE(empty.ok());
  CHECK(empty->empty());
}

TEST_CASE("tampering is detected: every flipped byte fails authentication") {
  const Keyring kr = keyringOf('b');
  const std::string ad("secrets\0x", 9);
  const std::string sealed = kr.seal("value", ad);
  for (size_t i = 0; i < sealed.size(); ++i) {
    std::string bad = sealed;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    auto opened = kr.open(bad, ad);
    CHECK_FALSE(opened.ok());
    if (!opened.ok()) CHECK_FALSE(contains(opened.error().message, "value"));
  }
  // Truncations of every length are rejected without crashing.
  for (size_t n = 0; n < sealed.size(); ++n) CHECK_FALSE(kr.open(sealed.substr(0, n), ad).ok());
}

TEST_CASE("a ciphertext moved to another record key fails; so does another master key") {
  const Keyring kr = keyringOf('c');
  const std::string sealed = kr.seal("the-api-key", std::string("secrets\0\0bosa.api_key", 21));
  CHECK_FALSE(kr.open(sealed, std::string("secrets\0\0bundleup.api_key", 25)).ok());
  CHECK_FALSE(kr.open(sealed, std::string("secrets\0teamA\0bosa.api_key", 26)).ok());
  auto wrong = keyringOf('d').open(sealed, std::string("secrets\0\0bosa.api_key", 21));
  REQUIRE_FALSE(wrong.ok());
  CHECK(contains(wrong.error().message, "failed authentication"));
  CHECK(kr.open(sealed, std::string("secrets\0\0bosa.api_key", 21)).ok());
}

TEST_CASE("client tokens: shape, uniqueness, well-formedness check") {
  std::set<std::string> seen;
  for (int i = 0; i < 200; ++i) {
    core::SecretString t = generateClientToken();
    CHECK(t.size() == kClientTokenLength);
    CHECK(t.view().substr(0, 3) == "kw_");
    CHECK(isWellFormedClientToken(t.view()));
    seen.insert(std::string(t.view()));
  }
  CHECK(seen.size() == 200);
  const std::string good(*seen.begin());
  CHECK_FALSE(isWellFormedClientToken(""));
  CHECK_FALSE(isWellFormedClientToken("kw_"));
  CHECK_FALSE(isWellFormedClientToken(good.substr(0, good.size() - 1)));
  CHECK_FALSE(isWellFormedClientToken(good + "A"));
  CHECK_FALSE(isWellFormedClientToken("kx_" + good.substr(3)));
  std::string bad_char = good;
  bad_char[10] = '+';  // standard base64, not base64url
  CHECK_FALSE(isWellFormedClientToken(bad_char));
  CHECK(base64UrlEncode(std::string("\xfb\xff", 2)) == "-_8");
}

TEST_CASE("token hashes are keyed, deterministic and 32 bytes") {
  const Keyring a = keyringOf('e');
  const Keyring b = keyringOf('f');
  const std::string token(generateClientToken().view());
  CHECK(a.tokenHash(token).size() == kTokenHashBytes);
  CHECK(a.tokenHash(token) == a.tokenHash(token));
  CHECK(a.tokenHash(token) != b.tokenHash(token));  // a stolen DB alone cannot test guesses
  CHECK(a.tokenHash(token) != a.tokenHash(token + "x"));
  CHECK_FALSE(contains(a.tokenHash(token), token));
}

TEST_CASE("SecureKey refuses other sizes") {
  CHECK_FALSE(SecureKey::fromBytes("short").ok());
  CHECK_FALSE(SecureKey::fromBytes(std::string(33, 'x')).ok());
  auto k1 = SecureKey::random();
  auto k2 = SecureKey::random();
  REQUIRE(k1.ok());
  REQUIRE(k2.ok());
  CHECK(std::string_view(reinterpret_cast<const char*>(k1->data()), 32) !=
        std::string_view(reinterpret_cast<const char*>(k2->data()), 32));
}

TEST_CASE("master key file: raw, hex and hex+newline load to the same key") {
  TempDir dir;
  std::string raw(32, '\0');
  for (int i = 0; i < 32; ++i) raw[i] = static_cast<char>(i * 7 + 1);
  const std::string hex =
      "01080f161d242b323940474e555c636a71787f868d949ba2a9b0b7bec5ccd3da";
  writeFile(dir / "raw.key", raw, 0600);
  writeFile(dir / "hex.key", hex, 0600);
  writeFile(dir / "hexnl.key", hex + "\n", 0400);
  const std::string probe = "probe";
  const Keyring reference = Keyring::create(MasterKey::fromBytes(raw).value()).value();
  for (const char* name : {"raw.key", "hex.key", "hexnl.key"}) {
    auto key = loadMasterKeyFile(dir / name);
    REQUIRE_MESSAGE(key.ok(), name);
    CHECK(Keyring::create(*key)->tokenHash(probe) == reference.tokenHash(probe));
  }
}

TEST_CASE("master key file: group-read is accepted only inside $CREDENTIALS_DIRECTORY (systemd ACL)") {
  TempDir creds;
  TempDir elsewhere;
  const std::string hex = "01080f161d242b323940474e555c636a71787f868d949ba2a9b0b7bec5ccd3da";
  writeFile(creds / "master.key", hex, 0440);
  writeFile(creds / "open.key", hex, 0444);
  writeFile(elsewhere / "master.key", hex, 0440);
  ::setenv("CREDENTIALS_DIRECTORY", creds.path().c_str(), 1);
  CHECK(loadMasterKeyFile(creds / "master.key").ok());
  CHECK_FALSE(loadMasterKeyFile(creds / "open.key").ok());       // other-read: never
  CHECK_FALSE(loadMasterKeyFile(elsewhere / "master.key").ok());  // not systemd's directory
  ::unsetenv("CREDENTIALS_DIRECTORY");
  CHECK_FALSE(loadMasterKeyFile(creds / "master.key").ok());
}

TEST_CASE("master key file: bad files are refused naming the path, never the content") {
  TempDir dir;
  const std::string hex(64, 'a');
  struct Case {
    std::string name;
    std::string content;
    mode_t mode;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"group.key", hex, 0640, "chmod 600"},
      {"world.key", hex, 0604, "chmod 600"},
      {"gwrite.key", hex, 0620, "chmod 600"},
      {"short.key", std::string(31, 'z'), 0600, "expected 32 raw bytes"},
      {"long.key", hex + "\n\n", 0600, "expected 32 raw bytes"},
      {"nothex.key", std::string(63, 'a') + "g", 0600, "not 64 hexadecimal"},
      {"crlf.key", std::string(64, 'b') + "x", 0600, "does not end with a newline"},
      {"empty.key", "", 0600, "has 0 bytes"},
  };
  for (const auto& c : cases) {
    writeFile(dir / c.name, c.content, c.mode);
    auto key = loadMasterKeyFile(dir / c.name);
    REQUIRE_FALSE_MESSAGE(key.ok(), c.name);
    CHECK_MESSAGE(contains(key.error().message, dir / c.name), key.error().message);
    CHECK_MESSAGE(contains(key.error().message, c.expect), key.error().message);
    if (c.content.size() >= 16) CHECK_FALSE(contains(key.error().message, c.content));
  }
  auto missing = loadMasterKeyFile(dir / "missing.key");
  REQUIRE_FALSE(missing.ok());
  CHECK(contains(missing.error().message, "keywayctl init"));
  auto directory = loadMasterKeyFile(dir.path());
  REQUIRE_FALSE(directory.ok());
  CHECK(contains(directory.error().message, "not a regular file"));
}

TEST_CASE("createMasterKeyFile: 0600, exclusive, 32 random bytes, parent made 0700") {
  TempDir dir;
  const std::string path = dir / "sub/dir/master.key";
  REQUIRE(createMasterKeyFile(path).ok());
  CHECK(fileMode(path) == 0600);
  CHECK(fileMode(dir / "sub") == 0700);
  CHECK(fileMode(dir / "sub/dir") == 0700);
  const std::string first = readFile(path);
  CHECK(first.size() == 32);
  CHECK(loadMasterKeyFile(path).ok());
  auto again = createMasterKeyFile(path);
  REQUIRE_FALSE(again.ok());
  CHECK(again.error().code == core::ErrorCode::kBadRequest);
  CHECK(readFile(path) == first);  // O_EXCL: never overwritten
  const std::string other = dir / "other.key";
  REQUIRE(createMasterKeyFile(other).ok());
  CHECK(readFile(other) != first);
  const mode_t old_umask = ::umask(0);  // a permissive umask must not loosen the mode
  REQUIRE(createMasterKeyFile(dir / "umask.key").ok());
  ::umask(old_umask);
  CHECK(fileMode(dir / "umask.key") == 0600);
}

}  // namespace
}  // namespace keyway::storage
