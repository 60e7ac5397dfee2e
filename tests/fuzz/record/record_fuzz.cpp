// Fuzz target for the credential store's record decoding (storage/record_codec and
// Keyring::open on the sealed fields): any bytes a damaged or hostile database file could hold.
// Checks that decoders reject cleanly, that what they accept is canonical (re-encodes to the
// same bytes), and that opening a sealed field never crashes and only succeeds for what seal()
// made under the same key and record. Input layout: see kLayout below; corpus/ seeds come from
// make_record_corpus.cpp (the codec's own encoders). Built as a libFuzzer binary with
// -Dfuzzing=true, and always as a replay executable over corpus/.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "storage/crypto.hpp"
#include "storage/record_codec.hpp"
#include "tests/fuzz/record/record_fuzz_input.hpp"

namespace {

using keyway::core::ErrorCode;
using keyway::core::Status;
namespace st = keyway::storage;
namespace fi = keyway::fuzz::record;

[[noreturn]] void violated(const char* what, int line) {
  std::fprintf(stderr, "record fuzz invariant violated (record_fuzz.cpp:%d): %s\n", line, what);
  std::abort();
}

#define FUZZ_CHECK(cond)                   \
  do {                                     \
    if (!(cond)) violated(#cond, __LINE__); \
  } while (0)

const st::Keyring& keyring() { return fi::fuzzKeyring(); }

// Messages end up in logs and on terminals: printable ASCII, bounded, whatever the input.
void checkMessage(const std::string& message) {
  FUZZ_CHECK(!message.empty());
  FUZZ_CHECK(message.size() <= 512);
  for (char c : message) FUZZ_CHECK(c >= 0x20 && c < 0x7f);
}

// A sealed field: open() must not crash; whatever opens must re-seal and open again to the same
// plaintext, and must not open under another record's associated data.
void checkSealed(std::string_view sealed, std::string_view table, std::string_view key) {
  const std::string ad = st::associatedData(table, key);
  auto opened = keyring().open(sealed, ad);
  if (!opened) {
    FUZZ_CHECK(opened.error().code == ErrorCode::kInternal);
    checkMessage(opened.error().message);
    return;
  }
  FUZZ_CHECK(!keyring().open(sealed, ad + "x").ok());
  const std::string resealed = keyring().seal(opened->view(), ad);
  auto again = keyring().open(resealed, ad);
  FUZZ_CHECK(again.ok() && again->view() == opened->view());
}

template <typename R>
void checkDecoded(const R& result, const Status& via_table) {
  FUZZ_CHECK(result.ok() == via_table.ok());
  if (!result.ok()) {
    FUZZ_CHECK(result.error().code == ErrorCode::kInternal);
    checkMessage(result.error().message);
  }
}

void checkTable(std::string_view table, std::string_view key, std::string_view value) {
  const Status via_table = st::decodeRecord(table, key, value);
  if (table == st::table::kTeams) {
    auto r = st::decodeTeam(key, value);
    checkDecoded(r, via_table);
    if (!r) return;
    FUZZ_CHECK(r->name == key && st::isValidName(key));
    FUZZ_CHECK(st::encodeTeam(*r) == value);
  } else if (table == st::table::kClients) {
    auto r = st::decodeClient(key, value);
    checkDecoded(r, via_table);
    if (!r) return;
    FUZZ_CHECK(r->client.name == key && st::isValidName(r->client.team));
    FUZZ_CHECK(r->token_hash.size() == st::kTokenHashBytes);
    FUZZ_CHECK(st::encodeClient(*r) == value);
  } else if (table == st::table::kClientTokens) {
    auto r = st::decodeClientTokenRef(key, value);
    checkDecoded(r, via_table);
    if (!r) return;
    FUZZ_CHECK(key.size() == st::kTokenHashBytes && st::isValidName(*r));
    FUZZ_CHECK(st::encodeClientTokenRef(*r) == value);
  } else if (table == st::table::kSecrets) {
    auto r = st::decodeSecret(key, value);
    checkDecoded(r, via_table);
    auto k = st::decodeSecretKey(key);
    if (k) FUZZ_CHECK(st::secretKey(k->first, k->second) == key);
    if (!r) return;
    FUZZ_CHECK(k.ok() && k->first == r->team && k->second == r->name);
    FUZZ_CHECK(st::encodeSecret(r->updated_unix, r->sealed) == value);
    checkSealed(r->sealed, table, key);
  } else if (table == st::table::kBosaUsers) {
    auto r = st::decodeBosaUser(key, value);
    checkDecoded(r, via_table);
    if (!r) return;
    FUZZ_CHECK(r->user.identifier == key);
    FUZZ_CHECK(st::encodeBosaUser(*r) == value);
    checkSealed(r->sealed_secret, table, key);
  } else if (table == st::table::kUserTokens) {
    auto r = st::decodeUserToken(key, value);
    checkDecoded(r, via_table);
    if (!r) return;
    FUZZ_CHECK(st::encodeUserToken(*r) == value);
    checkSealed(r->sealed_token, table, key);
  } else if (table == st::table::kMeta) {
    if (key == st::kMetaSchemaVersion) {
      auto r = st::decodeSchemaVersion(value);
      checkDecoded(r, via_table);
      if (r) FUZZ_CHECK(st::encodeSchemaVersion(*r) == value);
    } else if (key == st::kMetaKeyCheck) {
      auto r = st::decodeKeyCheck(value);
      checkDecoded(r, via_table);
      if (!r) return;
      FUZZ_CHECK(st::encodeKeyCheck(*r) == value);
      checkSealed(*r, table, key);
    } else if (key == st::kMetaKeyId) {
      auto r = st::decodeKeyId(value);
      checkDecoded(r, via_table);
      if (!r) return;
      FUZZ_CHECK(r->size() == st::kKeyIdSize);
      FUZZ_CHECK(st::encodeKeyId(*r) == value);
    } else if (key == st::kMetaHashKeys) {
      auto r = st::decodeHashKeys(value);
      checkDecoded(r, via_table);
      if (!r) return;
      FUZZ_CHECK(st::encodeHashKeys(*r) == value);
      checkSealed(*r, table, key);
    } else {
      FUZZ_CHECK(!via_table.ok() && via_table.error().code == ErrorCode::kInternal);
      checkMessage(via_table.error().message);
    }
  } else {
    FUZZ_CHECK(!via_table.ok() && via_table.error().code == ErrorCode::kBadRequest);
    checkMessage(via_table.error().message);
  }
}

// Name validation, against an independent reference.
void checkName(std::string_view name) {
  bool ok = !name.empty() && name.size() <= st::kMaxNameLength && name[0] != '-';
  for (char c : name) {
    const bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                         c == '.' || c == '_' || c == '@' || c == '+' || c == '-';
    ok = ok && allowed;
  }
  FUZZ_CHECK(st::isValidName(name) == ok);
  const Status status = st::validateName("team", name);
  FUZZ_CHECK(status.ok() == ok);
  if (!status.ok()) {
    FUZZ_CHECK(status.error().code == ErrorCode::kBadRequest);
    checkMessage(status.error().message);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fi::Input in = fi::split(std::string_view(reinterpret_cast<const char*>(data), size));
  checkTable(in.table, in.key, in.value);
  checkName(in.key);
  return 0;
}
