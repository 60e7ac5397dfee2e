// Fuzz target for the credential store's backup file (storage/backup_format): whatever bytes
// `keywayctl restore` is given. Checks that the decoder never crashes and refuses with a
// kBadRequest whose message is printable and bounded, that it never accepts a file whose
// records overrun it, and that what decodes and authenticates under the fuzz key re-encodes to
// the same bytes (so a restore writes exactly what the MAC covered). Built as a libFuzzer binary
// with -Dfuzzing=true, and always as a replay executable over corpus/ (seeds:
// make_backup_corpus.cpp).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "storage/backup_format.hpp"
#include "tests/fuzz/record/record_fuzz_input.hpp"

namespace {

namespace st = keyway::storage;

[[noreturn]] void violated(const char* what, int line) {
  std::fprintf(stderr, "backup fuzz invariant violated (backup_fuzz.cpp:%d): %s\n", line, what);
  std::abort();
}

#define FUZZ_CHECK(cond)                   \
  do {                                     \
    if (!(cond)) violated(#cond, __LINE__); \
  } while (0)

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto decoded = st::decodeBackup(bytes);
  if (!decoded) {
    FUZZ_CHECK(decoded.error().code == keyway::core::ErrorCode::kBadRequest);
    const std::string& message = decoded.error().message;
    FUZZ_CHECK(!message.empty() && message.size() <= 512);
    for (char c : message) FUZZ_CHECK(c >= 0x20 && c < 0x7f);
    return 0;
  }
  size_t payload = 0;
  for (const auto& r : decoded->records) payload += r.table.size() + r.key.size() + r.value.size();
  FUZZ_CHECK(payload < size);
  FUZZ_CHECK(decoded->key_id.size() == st::kKeyIdBytes);
  if (st::backupAuthentic(bytes, keyway::fuzz::record::fuzzKeyring())) {
    FUZZ_CHECK(st::encodeBackup(*decoded, keyway::fuzz::record::fuzzKeyring()) == bytes);
  }
  return 0;
}
