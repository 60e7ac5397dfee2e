// Writes the seed corpus of the record fuzz target: real records made by the codec's encoders
// (sealed fields sealed by Keyring under the public fuzz key), plus damaged variants.
// Usage: fuzz_record_make_corpus DIR   (files are named after what they hold; existing ones
// are overwritten). Seals use random nonces, so a rerun gives different bytes, same shapes.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "storage/crypto.hpp"
#include "storage/record_codec.hpp"
#include "tests/fuzz/record/record_fuzz_input.hpp"

namespace {

namespace st = keyway::storage;
namespace fi = keyway::fuzz::record;

enum Selector : uint8_t { kTeams, kClients, kClientTokens, kSecrets, kBosaUsers, kUserTokens, kMeta, kUnknown };

class Writer {
 public:
  explicit Writer(std::filesystem::path dir) : dir_(std::move(dir)) {}
  bool add(const std::string& name, uint8_t selector, std::string_view key, std::string_view value) {
    return addRaw(name, fi::join(selector, key, value));
  }
  bool addRaw(const std::string& name, const std::string& bytes) {
    std::ofstream out(dir_ / name, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) {
      std::fprintf(stderr, "cannot write %s\n", (dir_ / name).c_str());
      ok_ = false;
    }
    ++count_;
    return ok_;
  }
  bool ok() const { return ok_; }
  size_t count() const { return count_; }

 private:
  std::filesystem::path dir_;
  bool ok_ = true;
  size_t count_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 1;
  }
  std::error_code ec;
  std::filesystem::create_directories(argv[1], ec);
  if (ec) {
    std::fprintf(stderr, "cannot create %s: %s\n", argv[1], ec.message().c_str());
    return 1;
  }
  auto master = st::MasterKey::fromBytes(fi::kFuzzMasterKey);
  if (!master) return 1;
  auto ring = st::Keyring::create(*master);
  if (!ring) {
    std::fprintf(stderr, "%s\n", ring.error().message.c_str());
    return 1;
  }
  Writer w(argv[1]);
  const int64_t t = 1764000000;  // a fixed time: seeds do not depend on the clock

  // teams
  keyway::core::TeamRecord all{"alpha", true, {}, t};
  w.add("team_all_upstreams", kTeams, "alpha", st::encodeTeam(all));
  keyway::core::TeamRecord some{"beta", false, {"bosa", "bundleiq", "bundleup-api"}, t};
  w.add("team_some_upstreams", kTeams, "beta", st::encodeTeam(some));
  keyway::core::TeamRecord none{"gamma", false, {}, t};
  w.add("team_no_upstreams", kTeams, "gamma", st::encodeTeam(none));
  const std::string long_name(st::kMaxNameLength, 'n');
  w.add("team_max_name", kTeams, long_name, st::encodeTeam(all));
  w.add("team_bad_name", kTeams, "-alpha", st::encodeTeam(all));
  std::string dup = st::encodeTeam({"d", false, {"bosa", "bosa"}, t});
  w.add("team_duplicate_upstream", kTeams, "d", dup);
  std::string huge_count = st::encodeTeam(some);
  huge_count[2 + 8 + 1] = '\xff';  // list count's low byte: more entries than the bytes hold
  w.add("team_list_count_too_big", kTeams, "beta", huge_count);
  std::string wrong_version = st::encodeTeam(all);
  wrong_version[1] = 2;
  w.add("team_wrong_version", kTeams, "alpha", wrong_version);

  // clients and their token index
  const std::string token_hash = ring->tokenHash("kw_fuzzseedtokenfuzzseedtokenfuzzseedtokenAAA");
  st::StoredClient client{{"app-alpha", "alpha", false, t}, token_hash};
  w.add("client", kClients, "app-alpha", st::encodeClient(client));
  st::StoredClient revoked{{"app-old", "alpha", true, t - 86400}, token_hash};
  w.add("client_revoked", kClients, "app-old", st::encodeClient(revoked));
  const std::string client_bytes = st::encodeClient(client);
  w.add("client_truncated", kClients, "app-alpha", client_bytes.substr(0, client_bytes.size() - 5));
  w.add("client_trailing_byte", kClients, "app-alpha", client_bytes + "!");
  w.add("client_token_ref", kClientTokens, token_hash, st::encodeClientTokenRef("app-alpha"));
  w.add("client_token_ref_short_key", kClientTokens, token_hash.substr(1),
        st::encodeClientTokenRef("app-alpha"));

  // secrets: shared and team-scoped, sealed bound to their record
  const std::string shared_key = st::secretKey("", "bundleup.api_key");
  w.add("secret_shared", kSecrets, shared_key,
        st::encodeSecret(t, ring->seal("seed-bundleup-api-key", st::associatedData(st::table::kSecrets, shared_key))));
  const std::string team_key = st::secretKey("beta", "bundleup.api_key");
  const std::string team_sealed = ring->seal("seed-beta-key", st::associatedData(st::table::kSecrets, team_key));
  w.add("secret_team", kSecrets, team_key, st::encodeSecret(t, team_sealed));
  // The same ciphertext moved under another record: decodes, must not open.
  w.add("secret_moved", kSecrets, st::secretKey("alpha", "bundleup.api_key"), st::encodeSecret(t, team_sealed));
  std::string tampered = team_sealed;
  tampered[tampered.size() / 2] ^= 0x01;
  w.add("secret_tampered", kSecrets, team_key, st::encodeSecret(t, tampered));
  const std::string big_key = st::secretKey("", "bosa.api_key");
  w.add("secret_large_value", kSecrets, big_key,
        st::encodeSecret(t, ring->seal(std::string(4096, 'v'), st::associatedData(st::table::kSecrets, big_key))));
  w.add("secret_key_without_nul", kSecrets, "bundleup.api_key", st::encodeSecret(t, team_sealed));
  w.add("secret_empty_sealed", kSecrets, shared_key, st::encodeSecret(t, ""));

  // BOSA users and their minted tokens
  st::StoredBosaUser user{{"alice", {"alpha", "beta"}, t},
                          ring->seal("sk-user-seed", st::associatedData(st::table::kBosaUsers, "alice"))};
  w.add("bosa_user", kBosaUsers, "alice", st::encodeBosaUser(user));
  st::StoredBosaUser loner{{"bob@example.com", {}, t},
                           ring->seal("sk-user-seed-2", st::associatedData(st::table::kBosaUsers, "bob@example.com"))};
  w.add("bosa_user_no_teams", kBosaUsers, "bob@example.com", st::encodeBosaUser(loner));
  st::StoredUserToken token{t + 3600,
                            ring->seal("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2VlZA",
                                       st::associatedData(st::table::kUserTokens, "alice"))};
  w.add("user_token", kUserTokens, "alice", st::encodeUserToken(token));

  // meta
  w.add("meta_schema_version", kMeta, st::kMetaSchemaVersion, st::encodeSchemaVersion(st::kSchemaVersion));
  w.add("meta_key_check", kMeta, st::kMetaKeyCheck,
        st::encodeKeyCheck(ring->seal(st::kKeyCheckPlaintext, st::associatedData(st::table::kMeta, st::kMetaKeyCheck))));
  w.add("meta_unknown_key", kMeta, "favourite_colour", st::encodeSchemaVersion(1));
  w.add("meta_key_id", kMeta, st::kMetaKeyId, st::encodeKeyId(ring->keyId()));
  w.add("meta_key_id_short", kMeta, st::kMetaKeyId, st::encodeKeyId(ring->keyId().substr(1)));
  w.add("meta_hash_keys", kMeta, st::kMetaHashKeys,
        st::encodeHashKeys(ring->sealHashKeys(st::associatedData(st::table::kMeta, st::kMetaHashKeys))));

  // unknown tables
  w.add("unknown_table", kUnknown, "alpha", st::encodeTeam(all));
  w.add("key_is_table_binary", fi::kSelectorKeyIsTable, std::string("t\0\x01\xff\n", 5), "");
  w.add("key_is_table_teams", fi::kSelectorKeyIsTable, "teams", st::encodeTeam(all));
  w.addRaw("empty", "");
  w.addRaw("selector_only", std::string(1, '\x03'));

  if (!w.ok()) return 1;
  std::printf("wrote %zu seeds to %s\n", w.count(), argv[1]);
  return 0;
}
