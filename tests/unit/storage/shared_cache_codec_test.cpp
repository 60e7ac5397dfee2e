// What the shared cache writes to Redis: names that say nothing and are equal on every host with
// the same master key, values and messages that open only unaltered and under that key.
#include "storage/shared_cache_codec.hpp"

#include <doctest/doctest.h>

#include "storage/crypto.hpp"

namespace keyway::storage {
namespace {

core::CachedResponse sample() {
  core::CachedResponse r;
  r.status = 200;
  r.reason = "OK";
  r.headers = {{"Content-Type", "application/json"}};
  r.body = R"({"viewer":"alice","items":["customer-data"]})";
  r.stored_unix_ms = 1'700'000'000'000;
  r.fresh_until_unix_ms = 1'700'000'060'000;
  r.stale_until_unix_ms = 1'700'003'600'000;
  return r;
}

SharedCacheCodec codecWith(const MasterKey& key, const std::string& prefix = "keyway:") {
  auto c = SharedCacheCodec::create(key, prefix);
  REQUIRE(c.ok());
  return std::move(c).value();
}

bool contains(std::string_view haystack, std::string_view needle) { return haystack.find(needle) != std::string_view::npos; }

TEST_CASE("shared cache codec: names are keyed hashes, equal for equal master keys") {
  auto k1 = SecureKey::random();
  auto k2 = SecureKey::random();
  REQUIRE(k1.ok());
  REQUIRE(k2.ok());
  auto copy = SecureKey::fromBytes(std::string_view(reinterpret_cast<const char*>(k1->data()), SecureKey::size()));
  REQUIRE(copy.ok());
  const std::string key = "bundleup-api\nGET\n/v1/connections/alice-private\nlimit=5";
  const SharedCacheCodec a = codecWith(*k1), same = codecWith(*copy), other = codecWith(*k2);
  CHECK(a.entryBase(key) == same.entryBase(key));
  CHECK(a.entryBase(key) != other.entryBase(key));
  CHECK(a.entryBase(key) != a.entryBase(key + "6"));
  CHECK(a.entryBase(key).rfind("keyway:c:", 0) == 0);
  CHECK_FALSE(contains(a.entryBase(key), "alice"));
  CHECK_FALSE(contains(a.entryBase(key), "connections"));
  CHECK(a.identityEpochKey("bundleup-api", "tag1") == same.identityEpochKey("bundleup-api", "tag1"));
  CHECK(a.identityEpochKey("bundleup-api", "tag1") != a.identityEpochKey("bundleup-api", "tag2"));
  // Length-prefixed parts: moving a byte from one part to the next names another counter.
  CHECK(a.identityEpochKey("ab", "c") != a.identityEpochKey("a", "bc"));
  CHECK(a.upstreamEpochKey("bosa") != a.upstreamEpochKey("bundleiq"));
  CHECK_FALSE(contains(a.upstreamEpochKey("bosa"), "bosa"));
  CHECK(codecWith(*k1, "other:").entryBase(key).rfind("other:c:", 0) == 0);
}

TEST_CASE("shared cache codec: a value opens only unaltered, under its name and key, with the same master key") {
  auto k1 = SecureKey::random();
  auto k2 = SecureKey::random();
  REQUIRE(k1.ok());
  REQUIRE(k2.ok());
  const SharedCacheCodec codec = codecWith(*k1);
  const std::string key = "bundleup-api\nGET\n/v1/connections\n";
  const std::string name = codec.entryBase(key);
  const std::string value = codec.sealEntry(name, key, sample());
  CHECK(value.rfind("1700000060000:1700003600000:", 0) == 0);  // the times, in clear, for Redis
  CHECK_FALSE(contains(value, "alice"));
  CHECK_FALSE(contains(value, "customer-data"));
  CHECK_FALSE(contains(value, "application/json"));

  auto opened = codec.openEntry(name, key, value);
  REQUIRE(opened.ok());
  CHECK(opened->body == sample().body);
  CHECK(opened->stored_unix_ms == sample().stored_unix_ms);
  CHECK(opened->headers.size() == 1);

  // Every byte of the sealed part matters.
  for (size_t i = 28; i < value.size(); i += 7) {
    std::string bad = value;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    CHECK_FALSE(codec.openEntry(name, key, bad).ok());
  }
  // A fresh-until moved forward in clear (to keep a stale entry fresh) is caught.
  std::string later = value;
  later.replace(0, 13, "1800000060000");
  CHECK_FALSE(codec.openEntry(name, key, later).ok());
  CHECK_FALSE(codec.openEntry(name, key, "garbage").ok());
  CHECK_FALSE(codec.openEntry(name, key, "1:2:").ok());
  CHECK_FALSE(codec.openEntry(name, key, "").ok());
  // Copied under another name, asked for with another key, or read with another master key.
  CHECK_FALSE(codec.openEntry(codec.entryBase(key + "x"), key, value).ok());
  CHECK_FALSE(codec.openEntry(name, key + "x", value).ok());
  CHECK_FALSE(codecWith(*k2).openEntry(name, key, value).ok());
}

TEST_CASE("shared cache codec: messages are sealed and open only with the same master key and prefix") {
  auto k1 = SecureKey::random();
  auto k2 = SecureKey::random();
  REQUIRE(k1.ok());
  REQUIRE(k2.ok());
  const SharedCacheCodec codec = codecWith(*k1);
  SharedCacheCodec::Message m;
  m.kind = SharedCacheCodec::Message::Kind::kInvalidate;
  m.origin = "host-a";
  m.upstream = "bundleup-api";
  m.identity_tag = "tag-of-alice";
  m.paths = {"/v1/connections/alice-private", "/v1/connections"};
  m.prefix = true;
  const std::string sealed = codec.sealMessage(m);
  CHECK_FALSE(contains(sealed, "alice"));
  CHECK_FALSE(contains(sealed, "bundleup"));
  auto back = codec.openMessage(sealed);
  REQUIRE(back.ok());
  CHECK(back->kind == m.kind);
  CHECK(back->origin == "host-a");
  CHECK(back->upstream == m.upstream);
  CHECK(back->identity_tag == m.identity_tag);
  CHECK(back->paths == m.paths);
  CHECK(back->prefix);
  CHECK_FALSE(codecWith(*k2).openMessage(sealed).ok());
  CHECK_FALSE(codecWith(*k1, "other:").openMessage(sealed).ok());
  std::string bad = sealed;
  bad[bad.size() / 2] = static_cast<char>(bad[bad.size() / 2] ^ 0x40);
  CHECK_FALSE(codec.openMessage(bad).ok());
  CHECK_FALSE(codec.openMessage("").ok());
}

}  // namespace
}  // namespace keyway::storage
