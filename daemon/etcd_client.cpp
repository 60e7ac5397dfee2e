// etcd's v3 JSON gateway over libcurl (see etcd_client.hpp).
#include "daemon/etcd_client.hpp"

#include <curl/curl.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <random>
#include <thread>

#include "core/text.hpp"
#include "daemon/curl_internal.hpp"
#include "daemon/password_file.hpp"

namespace keyway::daemon {

using core::Error;
using core::ErrorCode;
using core::Result;
using core::Status;
using curl::EasyPtr;
using curl::SlistPtr;

namespace {

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
// The largest gateway reply keywayctl or keywayd reads (a whole fleet's records in one range).
constexpr size_t kMaxReplyBytes = size_t{256} << 20;
// gRPC codes the gateway reports that mean "this member cannot serve now, ask another".
constexpr int kGrpcDeadlineExceeded = 4;
constexpr int kGrpcUnavailable = 14;
constexpr int kGrpcUnauthenticated = 16;

int64_t int64Of(const rapidjson::Value& v, const char* name) {
  if (!v.IsObject()) return 0;
  auto it = v.FindMember(name);
  if (it == v.MemberEnd()) return 0;
  if (it->value.IsString()) {
    try {
      return std::stoll(it->value.GetString());
    } catch (...) {
      return 0;  // not a number: treated as absent, which every caller handles
    }
  }
  if (it->value.IsInt64()) return it->value.GetInt64();
  return 0;
}

std::string stringOf(const rapidjson::Value& v, const char* name) {
  if (!v.IsObject()) return {};
  auto it = v.FindMember(name);
  if (it == v.MemberEnd() || !it->value.IsString()) return {};
  return std::string(it->value.GetString(), it->value.GetStringLength());
}

bool boolOf(const rapidjson::Value& v, const char* name) {
  if (!v.IsObject()) return false;
  auto it = v.FindMember(name);
  return it != v.MemberEnd() && it->value.IsBool() && it->value.GetBool();
}

// A gateway error body: {"error": ..., "code": N, "message": ...}.
struct GatewayError {
  int code = 0;
  std::string message;
};
std::optional<GatewayError> gatewayError(const rapidjson::Document& doc) {
  if (!doc.IsObject() || !doc.HasMember("code") || !doc["code"].IsInt()) return std::nullopt;
  GatewayError e;
  e.code = doc["code"].GetInt();
  e.message = stringOf(doc, "message");
  if (e.message.empty()) e.message = stringOf(doc, "error");
  return e;
}

size_t collect(char* data, size_t size, size_t n, void* user) {
  auto* out = static_cast<std::string*>(user);
  if (out->size() + size * n > kMaxReplyBytes) return 0;
  out->append(data, size * n);
  return size * n;
}

SlistPtr jsonHeaders(const std::string& auth_line) {
  SlistPtr headers(curl_slist_append(nullptr, "Content-Type: application/json"));
  if (!auth_line.empty()) headers.reset(curl_slist_append(headers.release(), auth_line.c_str()));
  return headers;
}

int stopWhenCancelled(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<std::atomic<bool>*>(user)->load() ? 1 : 0;
}


std::string jsonString(const std::string& s) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
  return std::string(buf.GetString(), buf.GetSize());
}

// Applies the connection settings every request shares.
void setCommon(CURL* easy, const core::FleetConfig& config) {
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(easy, CURLOPT_PROXY, "");
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(config.dial_timeout.count()));
  if (!config.tls.ca_file.empty()) curl_easy_setopt(easy, CURLOPT_CAINFO, config.tls.ca_file.c_str());
  if (!config.tls.client_cert.empty()) curl_easy_setopt(easy, CURLOPT_SSLCERT, config.tls.client_cert.c_str());
  if (!config.tls.client_key.empty()) curl_easy_setopt(easy, CURLOPT_SSLKEY, config.tls.client_key.c_str());
}


}  // namespace

std::chrono::milliseconds jittered(std::chrono::milliseconds base) {
  thread_local std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int64_t> d(base.count() / 2, base.count() * 3 / 2);
  return std::chrono::milliseconds(d(rng));
}

std::string base64Encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = static_cast<uint8_t>(bytes[i]) << 16 | static_cast<uint8_t>(bytes[i + 1]) << 8 |
                       static_cast<uint8_t>(bytes[i + 2]);
    out.push_back(kB64[v >> 18]);
    out.push_back(kB64[(v >> 12) & 63]);
    out.push_back(kB64[(v >> 6) & 63]);
    out.push_back(kB64[v & 63]);
  }
  if (i < bytes.size()) {
    uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    out.push_back(kB64[v >> 18]);
    out.push_back(kB64[(v >> 12) & 63]);
    out.push_back(i + 1 < bytes.size() ? kB64[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

std::optional<std::string> base64Decode(std::string_view text) {
  while (!text.empty() && text.back() == '=') text.remove_suffix(1);
  if (text.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(text.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    const int v = core::base64Value(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

std::string prefixRangeEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

Result<std::shared_ptr<EtcdClient>> EtcdClient::create(const core::FleetConfig& config) {
  std::optional<core::SecretString> password;
  if (!config.username.empty()) {
    auto read = readPasswordFile("fleet.etcd.password_file", config.password_file);
    if (!read) return read.takeError();
    password = std::move(read).value();
  }
  return std::shared_ptr<EtcdClient>(new EtcdClient(config, std::move(password)));
}

Result<std::string> EtcdClient::authLine(const std::string& endpoint) {
  if (!password_) return std::string();
  auto token = authToken(endpoint);
  if (!token) return token.takeError();
  std::string line = "Authorization: " + *token;
  core::secureWipe(token->data(), token->size());
  return line;
}

Result<EtcdClient::Reply> EtcdClient::post(const std::string& endpoint, const std::string& path,
                                           const std::string& body, std::chrono::milliseconds timeout) {
  EasyPtr easy(curl_easy_init());
  if (!easy) return Error::make(ErrorCode::kInternal, "libcurl could not start a transfer");
  const std::string url = endpoint + path;
  Reply reply;
  curl_easy_setopt(easy.get(), CURLOPT_URL, url.c_str());
  setCommon(easy.get(), config_);
  curl_easy_setopt(easy.get(), CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_easy_setopt(easy.get(), CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(easy.get(), CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  curl_easy_setopt(easy.get(), CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(easy.get(), CURLOPT_WRITEDATA, &reply.body);
  curl_easy_setopt(easy.get(), CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(easy.get(), CURLOPT_XFERINFOFUNCTION, stopWhenCancelled);
  curl_easy_setopt(easy.get(), CURLOPT_XFERINFODATA, &cancelled_);
  auto auth = path == "/v3/auth/authenticate" ? Result<std::string>(std::string()) : authLine(endpoint);
  if (!auth) return auth.takeError();
  SlistPtr headers = jsonHeaders(*auth);
  curl_easy_setopt(easy.get(), CURLOPT_HTTPHEADER, headers.get());
  const CURLcode rc = curl_easy_perform(easy.get());
  core::secureWipe(auth->data(), auth->size());
  if (rc != CURLE_OK) {
    return Error::make(rc == CURLE_OPERATION_TIMEDOUT ? ErrorCode::kUpstreamTimeout : ErrorCode::kUpstreamUnreachable,
                       endpoint + ": " + curl_easy_strerror(rc));
  }
  curl_easy_getinfo(easy.get(), CURLINFO_RESPONSE_CODE, &reply.status);
  return reply;
}

Result<std::string> EtcdClient::authToken(const std::string& endpoint) {
  std::lock_guard<std::mutex> lock(token_mu_);
  if (token_ && token_endpoint_ == endpoint) return std::string(token_->view());
  std::string body = "{\"name\":" + jsonString(config_.username) + ",\"password\":" +
                     jsonString(std::string(password_->view())) + "}";
  auto reply = post(endpoint, "/v3/auth/authenticate", body, config_.request_timeout);
  core::secureWipe(body.data(), body.size());
  if (!reply) return reply.takeError();
  rapidjson::Document doc;
  doc.Parse(reply->body.c_str());
  if (reply->status != 200 || doc.HasParseError()) {
    const auto e = doc.HasParseError() ? std::nullopt : gatewayError(doc);
    // Exit 2 in keywayctl, like any other failure to reach the store: the command was right.
    return Error::make(ErrorCode::kInternal,
                       endpoint + ": etcd refused user " + config_.username +
                           (e ? " (" + e->message + ")" : "") + "; check fleet.etcd.username and its password_file");
  }
  std::string token = stringOf(doc, "token");
  token_ = core::SecretString(token);
  core::secureWipe(token.data(), token.size());
  token_endpoint_ = endpoint;
  return std::string(token_->view());
}

Result<std::string> EtcdClient::call(const std::string& path, const std::string& body) {
  std::string failures;
  const size_t n = config_.endpoints.size();
  for (int round = 0; round < 2 && !cancelled_.load(); ++round) {
    if (round > 0) std::this_thread::sleep_for(jittered(std::chrono::milliseconds(200)));
    failures.clear();
    const size_t first = preferred_.load();
    for (size_t k = 0; k < n && !cancelled_.load(); ++k) {
      const size_t i = (first + k) % n;
      const std::string& endpoint = config_.endpoints[i];
      auto reply = post(endpoint, path, body, config_.request_timeout);
      if (!reply) {
        if (reply.error().message.find("etcd refused user") != std::string::npos) return reply.takeError();
        failures += (failures.empty() ? "" : "; ") + reply.error().message;
        continue;
      }
      rapidjson::Document doc;
      doc.Parse(reply->body.c_str());
      if (doc.HasParseError() || !doc.IsObject()) {
        failures += (failures.empty() ? "" : "; ") + endpoint + ": not an etcd v3 JSON reply (HTTP " +
                    std::to_string(reply->status) + ")";
        continue;
      }
      if (auto e = gatewayError(doc)) {
        if (e->code == kGrpcUnauthenticated && password_) {
          std::lock_guard<std::mutex> lock(token_mu_);
          token_.reset();  // expired or from another member: authenticate again on the next try
        }
        if (e->code == kGrpcUnavailable || e->code == kGrpcDeadlineExceeded || e->code == kGrpcUnauthenticated) {
          failures += (failures.empty() ? "" : "; ") + endpoint + ": " + e->message;
          continue;
        }
        return Error::make(ErrorCode::kInternal, "etcd at " + endpoint + " refused " + path + ": " + e->message);
      }
      preferred_.store(i);
      return std::move(reply->body);
    }
  }
  return Error::make(ErrorCode::kUnavailable, "etcd is unreachable (" + failures + ")");
}

void EtcdClient::avoid(const std::string& endpoint) {
  const size_t n = config_.endpoints.size();
  size_t cur = preferred_.load();
  if (config_.endpoints[cur % n] == endpoint) preferred_.compare_exchange_strong(cur, (cur + 1) % n);
}

Result<storage::FleetRange> EtcdClient::range(const std::string& prefix) {
  const std::string body = "{\"key\":\"" + base64Encode(prefix) + "\",\"range_end\":\"" +
                           base64Encode(prefixRangeEnd(prefix)) + "\"}";
  auto reply = call("/v3/kv/range", body);
  if (!reply) return reply.takeError();
  rapidjson::Document doc;
  doc.Parse(reply->c_str());
  storage::FleetRange out;
  out.revision = int64Of(doc.HasMember("header") ? doc["header"] : doc, "revision");
  if (doc.HasMember("kvs") && doc["kvs"].IsArray()) {
    for (const auto& kv : doc["kvs"].GetArray()) {
      auto key = base64Decode(stringOf(kv, "key"));
      auto value = base64Decode(stringOf(kv, "value"));
      if (!key || !value) return Error::make(ErrorCode::kInternal, "etcd sent a key or value that is not base64");
      out.entries.push_back({std::move(*key), std::move(*value), int64Of(kv, "mod_revision")});
    }
  }
  return out;
}

Result<std::optional<std::string>> EtcdClient::valueAt(const std::string& key, int64_t revision) {
  const std::string body = "{\"key\":\"" + base64Encode(key) + "\",\"revision\":\"" + std::to_string(revision) + "\"}";
  auto reply = call("/v3/kv/range", body);
  if (!reply) {
    // etcd: "mvcc: required revision has been compacted" / "... is a future revision".
    if (reply.error().message.find("required revision") != std::string::npos) {
      return Error::make(ErrorCode::kNotFound, reply.error().message);
    }
    return reply.takeError();
  }
  rapidjson::Document doc;
  doc.Parse(reply->c_str());
  if (doc.HasMember("kvs") && doc["kvs"].IsArray() && !doc["kvs"].Empty()) {
    auto value = base64Decode(stringOf(doc["kvs"][0], "value"));
    if (!value) return Error::make(ErrorCode::kInternal, "etcd sent a value that is not base64");
    return std::optional<std::string>(std::move(*value));
  }
  return std::optional<std::string>();
}

Result<bool> EtcdClient::commit(const std::vector<storage::FleetGuard>& guards,
                                const std::vector<storage::FleetWrite>& writes) {
  std::string body = "{\"compare\":[";
  for (size_t i = 0; i < guards.size(); ++i) {
    if (i > 0) body += ",";
    body += "{\"key\":\"" + base64Encode(guards[i].key) + "\",\"target\":\"MOD\",\"result\":\"EQUAL\",\"mod_revision\":\"" +
            std::to_string(guards[i].mod_revision) + "\"}";
  }
  body += "],\"success\":[";
  for (size_t i = 0; i < writes.size(); ++i) {
    if (i > 0) body += ",";
    if (writes[i].value) {
      body += "{\"request_put\":{\"key\":\"" + base64Encode(writes[i].key) + "\",\"value\":\"" +
              base64Encode(*writes[i].value) + "\"}}";
    } else {
      body += "{\"request_delete_range\":{\"key\":\"" + base64Encode(writes[i].key) + "\"}}";
    }
  }
  body += "]}";
  auto reply = call("/v3/kv/txn", body);
  if (!reply) return reply.takeError();
  rapidjson::Document doc;
  doc.Parse(reply->c_str());
  return boolOf(doc, "succeeded");
}

EtcdEndpointStatus EtcdClient::status(const std::string& endpoint, std::chrono::milliseconds timeout) {
  EtcdEndpointStatus st;
  st.endpoint = endpoint;
  auto reply = post(endpoint, "/v3/maintenance/status", "{}", timeout);
  if (!reply) {
    st.error = reply.error().message;
    return st;
  }
  rapidjson::Document doc;
  doc.Parse(reply->body.c_str());
  if (doc.HasParseError() || !doc.IsObject()) {
    st.error = endpoint + ": not an etcd v3 JSON reply (HTTP " + std::to_string(reply->status) + ")";
    return st;
  }
  if (auto e = gatewayError(doc)) {
    st.error = endpoint + ": " + e->message;
    return st;
  }
  st.ok = true;
  st.version = stringOf(doc, "version");
  if (doc.HasMember("header")) {
    st.revision = int64Of(doc["header"], "revision");
    // member_id and leader are uint64 printed as strings; equal strings are enough.
    st.leader = !stringOf(doc["header"], "member_id").empty() &&
                stringOf(doc["header"], "member_id") == stringOf(doc, "leader");
  }
  return st;
}

std::vector<EtcdEndpointStatus> EtcdClient::statusAll() {
  std::vector<EtcdEndpointStatus> out;
  for (const auto& e : config_.endpoints) out.push_back(status(e, config_.request_timeout));
  return out;
}

namespace {

// Splits a watch stream into its JSON objects (the gateway writes one per response).
struct WatchStream {
  std::string buffer;
  const std::function<bool(const EtcdWatchBatch&)>* on_batch = nullptr;
  const std::function<bool()>* keep_going = nullptr;
  bool stopped = false;  // on_batch or keep_going said stop
  std::optional<std::string> error;

  // Consumes every complete object at the front of the buffer.
  bool drain() {
    size_t start = 0;
    while (true) {
      while (start < buffer.size() && buffer[start] != '{') ++start;
      if (start >= buffer.size()) break;
      int depth = 0;
      bool in_string = false, escaped = false;
      size_t end = std::string::npos;
      for (size_t i = start; i < buffer.size(); ++i) {
        const char c = buffer[i];
        if (in_string) {
          if (escaped) escaped = false;
          else if (c == '\\') escaped = true;
          else if (c == '"') in_string = false;
        } else if (c == '"') {
          in_string = true;
        } else if (c == '{') {
          ++depth;
        } else if (c == '}' && --depth == 0) {
          end = i + 1;
          break;
        }
      }
      if (end == std::string::npos) break;
      if (!handle(std::string_view(buffer).substr(start, end - start))) {
        buffer.erase(0, end);
        return false;
      }
      start = end;
    }
    buffer.erase(0, start);
    return true;
  }

  bool handle(std::string_view object) {
    rapidjson::Document doc;
    doc.Parse(object.data(), object.size());
    if (doc.HasParseError() || !doc.IsObject()) {
      error = "the watch stream sent something that is not JSON";
      return false;
    }
    if (doc.HasMember("error")) {
      const rapidjson::Value& e = doc["error"];
      error = "the watch failed: " + (e.IsObject() ? stringOf(e, "message") : stringOf(doc, "error"));
      return false;
    }
    if (!doc.HasMember("result") || !doc["result"].IsObject()) return true;
    const rapidjson::Value& r = doc["result"];
    EtcdWatchBatch batch;
    batch.created = boolOf(r, "created");
    batch.canceled = boolOf(r, "canceled");
    batch.compact_revision = int64Of(r, "compact_revision");
    if (r.HasMember("header")) batch.revision = int64Of(r["header"], "revision");
    if (r.HasMember("events") && r["events"].IsArray()) {
      for (const auto& ev : r["events"].GetArray()) {
        if (!ev.HasMember("kv")) continue;
        const rapidjson::Value& kv = ev["kv"];
        storage::FleetEvent out;
        auto key = base64Decode(stringOf(kv, "key"));
        if (!key) {
          error = "the watch stream sent a key that is not base64";
          return false;
        }
        out.key = std::move(*key);
        out.mod_revision = int64Of(kv, "mod_revision");
        if (stringOf(ev, "type") != "DELETE") {
          auto value = base64Decode(stringOf(kv, "value"));
          if (!value) {
            error = "the watch stream sent a value that is not base64";
            return false;
          }
          out.value = std::move(*value);
        }
        batch.events.push_back(std::move(out));
      }
    }
    if (!(*on_batch)(batch)) {
      stopped = true;
      return false;
    }
    return true;
  }
};

size_t watchWrite(char* data, size_t size, size_t n, void* user) {
  auto* s = static_cast<WatchStream*>(user);
  s->buffer.append(data, size * n);
  if (s->buffer.size() > kMaxReplyBytes) {
    s->error = "a watch response larger than 256 MiB";
    return 0;
  }
  return s->drain() ? size * n : 0;
}

int watchProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* s = static_cast<WatchStream*>(user);
  if (!(*s->keep_going)()) {
    s->stopped = true;
    return 1;
  }
  return 0;
}

}  // namespace

Status EtcdClient::watch(const std::string& prefix, int64_t from_revision,
                         const std::function<bool(const EtcdWatchBatch&)>& on_batch,
                         const std::function<bool()>& keep_going, std::string* endpoint_used) {
  const size_t n = config_.endpoints.size();
  const std::string& endpoint = config_.endpoints[preferred_.load() % n];
  if (endpoint_used != nullptr) *endpoint_used = endpoint;
  EasyPtr easy(curl_easy_init());
  if (!easy) return Error::make(ErrorCode::kInternal, "libcurl could not start a transfer");
  const std::string url = endpoint + "/v3/watch";
  const std::string body = "{\"create_request\":{\"key\":\"" + base64Encode(prefix) + "\",\"range_end\":\"" +
                           base64Encode(prefixRangeEnd(prefix)) + "\",\"start_revision\":\"" +
                           std::to_string(from_revision) + "\"}}";
  WatchStream stream;
  stream.on_batch = &on_batch;
  stream.keep_going = &keep_going;
  curl_easy_setopt(easy.get(), CURLOPT_URL, url.c_str());
  setCommon(easy.get(), config_);
  curl_easy_setopt(easy.get(), CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(easy.get(), CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  curl_easy_setopt(easy.get(), CURLOPT_WRITEFUNCTION, watchWrite);
  curl_easy_setopt(easy.get(), CURLOPT_WRITEDATA, &stream);
  curl_easy_setopt(easy.get(), CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(easy.get(), CURLOPT_XFERINFOFUNCTION, watchProgress);
  curl_easy_setopt(easy.get(), CURLOPT_XFERINFODATA, &stream);
  curl_easy_setopt(easy.get(), CURLOPT_TCP_KEEPALIVE, 1L);
  if (password_) {
    // A fresh token per watch: an expired one shows only inside the stream, as an error.
    std::lock_guard<std::mutex> lock(token_mu_);
    token_.reset();
  }
  auto auth = authLine(endpoint);
  if (!auth) return auth.takeError();
  SlistPtr headers = jsonHeaders(*auth);
  curl_easy_setopt(easy.get(), CURLOPT_HTTPHEADER, headers.get());
  const CURLcode rc = curl_easy_perform(easy.get());
  core::secureWipe(auth->data(), auth->size());
  if (stream.stopped) return core::okStatus();
  if (stream.error) return Error::make(ErrorCode::kUpstreamUnreachable, endpoint + ": " + *stream.error);
  if (rc != CURLE_OK) return Error::make(ErrorCode::kUpstreamUnreachable, endpoint + ": " + curl_easy_strerror(rc));
  long status = 0;
  curl_easy_getinfo(easy.get(), CURLINFO_RESPONSE_CODE, &status);
  return Error::make(ErrorCode::kUpstreamUnreachable,
                     endpoint + ": the watch stream ended (HTTP " + std::to_string(status) + ")");
}

}  // namespace keyway::daemon
