// The response cache's byte formats (records, per-entry info, index and time keys) and its key
// hash. Pure functions, no I/O. Its own codec rather than storage/record_codec's: integers here
// are big-endian so that time keys sort by time, and the format is already on disk in every
// existing cache (kFormatVersion).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/cache_store.hpp"

namespace keyway::storage::cache {

// Stored in the meta database; an environment with another marker is emptied on open.
inline constexpr std::string_view kFormatVersion = "keyway-cache-1";
inline constexpr size_t kHashSize = 32;
// Index keys hold at most this much of the path (LMDB keys are <= 511 bytes); longer paths are
// still found: the full path is the index value and every match is verified against it.
inline constexpr size_t kMaxIndexedPath = 400;

// Records are keyed by BLAKE2b-256 of the full cache key. Call initSodium() once first.
using Hash = std::array<unsigned char, kHashSize>;
struct HashHasher {
  size_t operator()(const Hash& h) const noexcept {
    size_t v = 0;
    std::memcpy(&v, h.data(), sizeof v);
    return v;
  }
};
template <class V>
using HashMap = std::unordered_map<Hash, V, HashHasher>;
Hash hashKey(std::string_view key);
std::string_view hashView(const Hash& h);
// The hash that ends an index or time key.
Hash hashFromSuffix(std::string_view key);

// Big-endian with the sign bit flipped, so signed times sort correctly as bytes.
uint64_t orderedTime(int64_t t);
int64_t fromOrderedTime(uint64_t v);

// 8-byte big-endian counters of the meta database; a malformed value reads as 0.
uint64_t decodeU64(std::string_view v);
std::string u64Value(uint64_t v);

// A 16-byte BLAKE2b digest of length-prefixed fields: the fixed-size head of index keys.
std::string head16(std::initializer_list<std::string_view> fields);
// <head><path, at most kMaxIndexedPath bytes>\0<hash>
std::string indexKey(const std::string& head, std::string_view path, const Hash& h);
// <8-byte big-endian time or tick><hash>: the LRU, expiry and stored-time indexes.
std::string timeKey(uint64_t ordered, const Hash& h);

// The record: the full key (compared on read), then the response.
std::string encodeRecord(std::string_view key, const core::CachedResponse& r);
enum class Decoded { kMatch, kOtherKey, kCorrupt };
// kOtherKey: the record belongs to another key with the same hash, never served.
Decoded decodeRecord(std::string_view value, std::string_view key, core::CachedResponse* out);

// Per-entry bookkeeping (small, so recency updates never rewrite the large record).
struct EntryInfo {
  uint64_t tick = 0;  // LRU order
  int64_t stored = 0;
  int64_t stale_until = 0;
  uint64_t bytes = 0;
  std::string upstream, identity, path;
};
std::string encodeInfo(const EntryInfo& e);
bool decodeInfo(std::string_view value, EntryInfo* e);

}  // namespace keyway::storage::cache
