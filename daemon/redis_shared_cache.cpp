#include "daemon/redis_shared_cache.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <sodium.h>

#include <future>
#include <thread>

#include "storage/crypto.hpp"
#include "daemon/password_file.hpp"

namespace keyway::daemon {

namespace {

using core::SharedLookup;
using Outcome = core::SharedLookup::Outcome;

// Epoch keys hold a number that is part of every entry name; one that expired would start again
// at 0 and could name entries invalidated long ago, so it outlives every entry by far.
constexpr const char* kEpochLifetimeMs = "604800000";  // 7 days
constexpr std::chrono::milliseconds kPollEvery{20};

// The entry's name (base + epochs) when found, the fill lock's token when this host took it.
// KEYS: identity epoch, upstream epoch, global epoch. ARGV: entry base, now (ms), lock token
// ("" = do not lock), lock expiry (ms). Answers {1, epochs, value} for a fresh value, else
// {2 (locked here) | 3 (another host holds the lock, or not asked), epochs, value or nil}.
constexpr const char* kLookupScript = R"(
local e = (redis.call('GET', KEYS[1]) or '0') .. '.' .. (redis.call('GET', KEYS[2]) or '0') .. '.' .. (redis.call('GET', KEYS[3]) or '0')
local name = ARGV[1] .. ':' .. e
local v = redis.call('GET', name)
if v then
  local fresh = tonumber(string.match(v, '^(%d+):'))
  if fresh and fresh > tonumber(ARGV[2]) then return {1, e, v} end
end
if ARGV[3] ~= '' and redis.call('SET', name .. ':l', ARGV[3], 'NX', 'PX', ARGV[4]) then
  return {2, e, v or false}
end
return {3, e, v or false}
)";

// ARGV: name, value, expiry (ms), token. Stores, then drops the lock if it is still this fill's.
constexpr const char* kStoreScript = R"(
redis.call('SET', ARGV[1], ARGV[2], 'PX', ARGV[3])
if ARGV[4] ~= '' and redis.call('GET', ARGV[1] .. ':l') == ARGV[4] then redis.call('DEL', ARGV[1] .. ':l') end
return 1
)";

// KEYS: an epoch. ARGV: its lifetime (ms), the channel, the sealed message. The bump and the
// message in one step: a host told to drop its copy must find the old entries unreachable when
// it looks them up again.
constexpr const char* kBumpScript = R"(
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
)";

// ARGV: name, token.
constexpr const char* kReleaseScript = R"(
if redis.call('GET', ARGV[1] .. ':l') == ARGV[2] then redis.call('DEL', ARGV[1] .. ':l') end
return 1
)";

// ARGV: name. {1, value, 1 if the lock is held} once a value is there; {2} while only the lock
// is held; {3} when neither.
constexpr const char* kAwaitScript = R"(
local v = redis.call('GET', ARGV[1])
local locked = redis.call('EXISTS', ARGV[1] .. ':l')
if v then return {1, v, locked} end
if locked == 1 then return {2} end
return {3}
)";

std::string randomHex(size_t bytes) {
  std::string raw(bytes, '\0');
  randombytes_buf(raw.data(), raw.size());
  return storage::hexEncode(raw);
}

int64_t unixMs(const core::Clock& clock) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock.systemNow().time_since_epoch()).count();
}

struct Ticket {
  std::string name;   // entry base + ":" + epochs
  std::string token;  // "" when this host does not hold the lock
};

std::string encodeTicket(const Ticket& t) { return t.name + "\n" + t.token; }
Ticket decodeTicket(const std::string& s) {
  const size_t nl = s.find('\n');
  if (nl == std::string::npos) return {s, ""};
  return {s.substr(0, nl), s.substr(nl + 1)};
}

}  // namespace

struct AwaitState {
  std::string key;
  std::string name;
  std::chrono::steady_clock::time_point until;
  std::function<void(std::optional<core::CachedResponse>)> done;
};

core::Result<RedisClientOptions> redisOptionsOf(const core::SharedCacheConfig& config) {
  RedisClientOptions o;
  o.address = config.address;
  o.timeout = config.timeout;
  o.max_connections = config.max_connections;
  if (!config.password_file.empty()) {
    auto text = readPasswordFile("cache.shared.redis.password_file", config.password_file);
    if (!text) return text.takeError();
    o.password = std::move(text).value();
  }
  return o;
}

core::Result<std::shared_ptr<RedisSharedCache>> RedisSharedCache::start(
    const core::SharedCacheConfig& config, storage::SharedCacheCodec codec, std::shared_ptr<core::CacheStore> local,
    std::shared_ptr<core::Scheduler> scheduler, std::shared_ptr<core::Clock> clock, Warn warn) {
  auto options = redisOptionsOf(config);
  if (!options) return options.takeError();
  auto client = RedisClient::start(std::move(options).value());
  if (!client) return client.takeError();
  std::shared_ptr<RedisSharedCache> cache(new RedisSharedCache(std::move(client).value(), std::move(codec),
                                                               std::move(local), std::move(scheduler),
                                                               std::move(clock), std::move(warn), config.address));
  // The client outlives no RedisSharedCache: its destructor stops the thread before the
  // members this callback uses go.
  RedisSharedCache* self = cache.get();
  cache->client_->subscribe(cache->codec_.channel(), [self](std::string_view m) { self->onMessage(m); },
                            [self] {
                              self->warn_("shared-cache-gap",
                                          "shared cache: the subscription to other hosts' invalidations was lost "
                                          "and is back; entries they invalidated meanwhile stay here until their ttl");
                            });
  return cache;
}

RedisSharedCache::RedisSharedCache(std::unique_ptr<RedisClient> client, storage::SharedCacheCodec codec,
                                   std::shared_ptr<core::CacheStore> local, std::shared_ptr<core::Scheduler> scheduler,
                                   std::shared_ptr<core::Clock> clock, Warn warn, std::string address)
    : client_(std::move(client)), codec_(std::move(codec)), local_(std::move(local)),
      scheduler_(std::move(scheduler)), clock_(std::move(clock)), warn_(std::move(warn)),
      address_(std::move(address)), origin_(randomHex(8)) {}

RedisSharedCache::~RedisSharedCache() { client_->stop(); }

void RedisSharedCache::failed(const RedisResult& r, const char* during) {
  if (r.failure == RedisFailure::kTimeout) {
    counters_.timeouts.fetch_add(1, std::memory_order_relaxed);
  } else {
    counters_.errors.fetch_add(1, std::memory_order_relaxed);
  }
  warn_(std::string("shared-cache-") + during,
        std::string("shared cache: ") + during + " failed, served without it: " + r.message);
}

void RedisSharedCache::lookup(const std::string& key, const core::CacheEntryMeta& meta,
                              std::chrono::milliseconds lock_for, std::function<void(SharedLookup)> done) {
  std::string base = codec_.entryBase(key);
  std::string token = randomHex(12);
  std::string lock_ms = std::to_string(std::max<int64_t>(1, lock_for.count()));
  std::vector<std::string> argv{"EVAL",
                                kLookupScript,
                                "3",
                                codec_.identityEpochKey(meta.upstream, meta.identity_tag),
                                codec_.upstreamEpochKey(meta.upstream),
                                codec_.globalEpochKey(),
                                base,
                                std::to_string(unixMs(*clock_)),
                                token,
                                lock_ms};
  client_->command(std::move(argv), [this, key, base, token, lock_ms, done = std::move(done)](RedisResult r) mutable {
    SharedLookup out;
    if (!r.ok()) {
      failed(r, "lookup");
      done(std::move(out));
      return;
    }
    const auto& el = r.reply.elements;
    if (r.reply.type != RedisReply::Type::kArray || el.size() != 3 || el[0].type != RedisReply::Type::kInteger ||
        el[1].type != RedisReply::Type::kString || el[0].integer < 1 || el[0].integer > 3) {
      counters_.errors.fetch_add(1, std::memory_order_relaxed);
      warn_("shared-cache-garbage", "shared cache: Redis answered a lookup with something else than expected");
      done(std::move(out));
      return;
    }
    const int code = static_cast<int>(el[0].integer);
    Ticket ticket{base + ":" + el[1].str, code == 2 ? token : ""};
    if (el[2].type == RedisReply::Type::kString) {
      auto entry = codec_.openEntry(base, key, el[2].str);
      if (entry) {
        out.entry = std::move(entry).value();
      } else {
        counters_.rejected.fetch_add(1, std::memory_order_relaxed);
        warn_("shared-cache-rejected", "shared cache: a " + entry.error().message + "; fetched again");
      }
    }
    if (code == 1 && out.entry) {
      counters_.hits.fetch_add(1, std::memory_order_relaxed);
      out.outcome = Outcome::kFresh;
    } else if (code == 1) {
      // A value that looked fresh and did not open: a miss, coalesced like any other, and the
      // fill overwrites it.
      counters_.misses.fetch_add(1, std::memory_order_relaxed);
      const std::string lock_name = ticket.name + ":l";
      client_->command({"SET", lock_name, token, "NX", "PX", lock_ms},
                       [this, ticket, token, done](RedisResult locked) mutable {
                         SharedLookup after;
                         if (!locked.ok()) {
                           failed(locked, "lock");
                           done(std::move(after));
                           return;
                         }
                         const bool mine = locked.reply.type == RedisReply::Type::kStatus;
                         if (!mine) counters_.lock_waits.fetch_add(1, std::memory_order_relaxed);
                         after.outcome = mine ? Outcome::kFill : Outcome::kWait;
                         after.ticket = encodeTicket({ticket.name, mine ? token : ""});
                         done(std::move(after));
                       });
      return;
    } else {
      counters_.misses.fetch_add(1, std::memory_order_relaxed);
      out.outcome = code == 2 ? Outcome::kFill : Outcome::kWait;
      if (code == 3) counters_.lock_waits.fetch_add(1, std::memory_order_relaxed);
    }
    out.ticket = encodeTicket(ticket);
    done(std::move(out));
  });
}

void RedisSharedCache::await(const std::string& key, const std::string& ticket, std::chrono::milliseconds limit,
                             std::function<void(std::optional<core::CachedResponse>)> done) {
  auto state = std::make_shared<AwaitState>();
  state->key = key;
  state->name = decodeTicket(ticket).name;
  state->until = std::chrono::steady_clock::now() + limit;
  state->done = std::move(done);
  schedulePoll(std::move(state));
}

// The timer may outlive this cache (keywayd's shutdown): it holds a weak reference only. A wait
// whose cache is gone ends as "the lock went away": the caller fetches.
void RedisSharedCache::schedulePoll(std::shared_ptr<AwaitState> state) {
  std::weak_ptr<RedisSharedCache> weak = weak_from_this();
  scheduler_->after(kPollEvery, [weak, state] {
    if (auto self = weak.lock()) {
      self->poll(state);
    } else {
      state->done(std::nullopt);
    }
  });
}

void RedisSharedCache::poll(std::shared_ptr<AwaitState> state) {
  client_->command({"EVAL", kAwaitScript, "0", state->name}, [this, state](RedisResult r) {
    if (!r.ok()) {
      failed(r, "wait");
      state->done(std::nullopt);
      return;
    }
    const auto& el = r.reply.elements;
    if (r.reply.type != RedisReply::Type::kArray || el.empty() || el[0].type != RedisReply::Type::kInteger) {
      counters_.errors.fetch_add(1, std::memory_order_relaxed);
      state->done(std::nullopt);
      return;
    }
    if (el[0].integer == 1 && el.size() == 3 && el[1].type == RedisReply::Type::kString) {
      const std::string base = state->name.substr(0, state->name.rfind(':'));
      auto entry = codec_.openEntry(base, state->key, el[1].str);
      if (!entry) {
        // A value that does not open: the lock's holder is about to overwrite it; without a
        // holder, fetch here.
        counters_.rejected.fetch_add(1, std::memory_order_relaxed);
        if (el[2].integer == 1 && std::chrono::steady_clock::now() < state->until) {
          schedulePoll(state);
        } else {
          state->done(std::nullopt);
        }
        return;
      }
      counters_.hits.fetch_add(1, std::memory_order_relaxed);
      state->done(std::move(entry).value());
      return;
    }
    if (el[0].integer == 2 && std::chrono::steady_clock::now() < state->until) {
      schedulePoll(state);
      return;
    }
    state->done(std::nullopt);  // the lock went (or its holder outlived our patience) without an entry
  });
}

void RedisSharedCache::store(const std::string& key, const std::string& ticket, const core::CachedResponse& entry) {
  const Ticket t = decodeTicket(ticket);
  const int64_t ttl = entry.stale_until_unix_ms - unixMs(*clock_);
  if (ttl <= 0) {
    release(key, ticket);
    return;
  }
  const std::string base = t.name.substr(0, t.name.rfind(':'));
  client_->command({"EVAL", kStoreScript, "0", t.name, codec_.sealEntry(base, key, entry), std::to_string(ttl), t.token},
                   [this](RedisResult r) {
                     if (!r.ok()) failed(r, "store");
                   });
}

void RedisSharedCache::release(const std::string& /*key*/, const std::string& ticket) {
  const Ticket t = decodeTicket(ticket);
  if (t.token.empty()) return;
  client_->command({"EVAL", kReleaseScript, "0", t.name, t.token}, [this](RedisResult r) {
    if (!r.ok()) failed(r, "lock release");
  });
}

void RedisSharedCache::invalidate(std::string_view upstream, std::string_view identity_tag,
                                  std::vector<std::string> paths, bool prefix) {
  storage::SharedCacheCodec::Message m;
  m.kind = storage::SharedCacheCodec::Message::Kind::kInvalidate;
  m.origin = origin_;
  m.upstream = std::string(upstream);
  m.identity_tag = std::string(identity_tag);
  m.paths = std::move(paths);
  m.prefix = prefix;
  client_->command({"EVAL", kBumpScript, "1", codec_.identityEpochKey(upstream, identity_tag), kEpochLifetimeMs,
                    codec_.channel(), codec_.sealMessage(m)},
                   [this](RedisResult r) {
                     if (!r.ok()) failed(r, "invalidation");
                   });
}

void RedisSharedCache::onMessage(std::string_view sealed) {
  auto m = codec_.openMessage(sealed);
  if (!m) {
    counters_.rejected.fetch_add(1, std::memory_order_relaxed);
    warn_("shared-cache-message", "shared cache: a " + m.error().message + " (another master key?); ignored");
    return;
  }
  if (m->origin == origin_) return;
  counters_.invalidations_received.fetch_add(1, std::memory_order_relaxed);
  using Kind = storage::SharedCacheCodec::Message::Kind;
  for (const std::string& path : m->paths) {
    if (m->kind == Kind::kPurge) {
      local_->purge(m->upstream, path);
    } else if (m->prefix) {
      local_->invalidatePrefix(m->upstream, m->identity_tag, path);
    } else {
      local_->invalidate(m->upstream, m->identity_tag, path);
    }
  }
}

std::string sharedCacheStatusJson(const RedisSharedCache& shared) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  const RedisClientStats stats = shared.clientStats();
  const SharedCacheCounters& c = shared.counters();
  w.StartObject();
  w.Key("address");
  w.String(shared.address().c_str(), static_cast<rapidjson::SizeType>(shared.address().size()));
  w.Key("up");
  w.Bool(stats.connections_up > 0);
  w.Key("subscribed");
  w.Bool(stats.subscribed);
  w.Key("hits");
  w.Uint64(c.hits.load(std::memory_order_relaxed));
  w.Key("misses");
  w.Uint64(c.misses.load(std::memory_order_relaxed));
  w.Key("errors");
  w.Uint64(c.errors.load(std::memory_order_relaxed));
  w.Key("timeouts");
  w.Uint64(c.timeouts.load(std::memory_order_relaxed));
  w.Key("last_error");
  if (stats.last_error.empty()) {
    w.Null();
  } else {
    w.String(stats.last_error.c_str(), static_cast<rapidjson::SizeType>(stats.last_error.size()));
  }
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

core::Status purgeSharedCache(const core::SharedCacheConfig& config, const storage::SharedCacheCodec& codec,
                              std::string_view upstream, std::string_view path_prefix) {
  auto options = redisOptionsOf(config);
  if (!options) return options.takeError();
  options->timeout = std::max(options->timeout, std::chrono::milliseconds(2000));
  options->max_connections = 1;
  auto client = RedisClient::start(std::move(options).value());
  if (!client) return client.takeError();
  const auto run = [&](std::vector<std::string> argv) {
    // The first command may come before the connection is up: try for a short while.
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    for (;;) {
      auto done = std::make_shared<std::promise<RedisResult>>();
      auto result = done->get_future();
      (*client)->command(argv, [done](RedisResult r) { done->set_value(std::move(r)); });
      RedisResult r = result.get();
      if (r.ok() || r.failure == RedisFailure::kServerError || std::chrono::steady_clock::now() > end) return r;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  };
  storage::SharedCacheCodec::Message m;
  m.kind = storage::SharedCacheCodec::Message::Kind::kPurge;
  m.origin = "keywayctl";
  m.upstream = std::string(upstream);
  m.paths = {std::string(path_prefix)};
  const std::string epoch = upstream.empty() ? codec.globalEpochKey() : codec.upstreamEpochKey(upstream);
  RedisResult bumped = run({"EVAL", kBumpScript, "1", epoch, kEpochLifetimeMs, codec.channel(), codec.sealMessage(m)});
  if (!bumped.ok()) return core::Error::make(core::ErrorCode::kUnavailable, "not purged: " + bumped.message);
  return core::okStatus();
}

}  // namespace keyway::daemon
