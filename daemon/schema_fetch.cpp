// Synchronous discovery-document GET on a libcurl easy handle (keywayctl schemas refresh).
#include "daemon/schema_fetch.hpp"

#include <curl/curl.h>
#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>

#include <memory>
#include <mutex>

#include "daemon/curl_tls.hpp"

namespace keyway::daemon {

using core::Error;
using core::ErrorCode;
using core::Result;

namespace {

struct EasyDeleter {
  void operator()(CURL* easy) const { curl_easy_cleanup(easy); }
};
struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using EasyPtr = std::unique_ptr<CURL, EasyDeleter>;
using SlistPtr = std::unique_ptr<curl_slist, SlistDeleter>;

bool globalInit() {
  static std::once_flag once;
  static bool ok = false;
  std::call_once(once, [] { ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK; });
  return ok;
}

struct Sink {
  std::string body;
  size_t limit = 0;
  bool overflow = false;
};

size_t onData(char* data, size_t size, size_t count, void* user) {
  auto* sink = static_cast<Sink*>(user);
  const size_t n = size * count;
  if (sink->body.size() + n > sink->limit) {
    sink->overflow = true;
    return 0;  // CURLE_WRITE_ERROR: stop reading a document we would refuse anyway
  }
  sink->body.append(data, n);
  return n;
}

// Records the byte ranges of the root object's members while RapidJSON's Reader walks the text.
// Positions come from the stream: each callback runs just after its token was consumed.
class SpanHandler : public rapidjson::BaseReaderHandler<rapidjson::UTF8<>, SpanHandler> {
 public:
  explicit SpanHandler(const rapidjson::MemoryStream& stream, std::string_view text)
      : stream_(stream), text_(text) {}

  bool Default() { return endScalar(); }
  bool StartObject() { return start(true); }
  bool StartArray() { return start(false); }
  bool EndObject(rapidjson::SizeType) { return end(); }
  bool EndArray(rapidjson::SizeType) { return end(); }
  bool Key(const char* str, rapidjson::SizeType length, bool) {
    if (depth_ != 1) return true;
    JsonMemberSpan span;
    span.key.assign(str, length);
    span.raw_begin = text_.find('"', after_previous_);
    size_t pos = stream_.Tell();  // just past the key's closing quote
    while (pos < text_.size() && (isSpace(text_[pos]) || text_[pos] == ':')) ++pos;
    span.value_begin = pos;
    members.push_back(std::move(span));
    return true;
  }

  bool root_is_object = false;
  std::vector<JsonMemberSpan> members;

 private:
  static bool isSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
  bool start(bool object) {
    if (depth_ == 0) {
      root_is_object = object;
      if (!object) return false;  // stops the parse: not a discovery document
      after_previous_ = stream_.Tell();
    } else if (depth_ == 1) {
      members.back().value_is_object = object;
    }
    ++depth_;
    return true;
  }
  bool end() {
    --depth_;
    if (depth_ == 1) finishMember(stream_.Tell() + containerEndOffset());
    return true;
  }
  bool endScalar() {
    if (depth_ == 0) return false;  // a bare scalar document
    if (depth_ == 1) finishMember(stream_.Tell());  // scalars are consumed before the callback
    return true;
  }
  void finishMember(size_t end) {
    members.back().value_end = end;
    after_previous_ = end;
  }
  // RapidJSON's iterative reader calls EndObject/EndArray before it consumes the closing bracket
  // (1.1: reader.h, Transit), unlike scalars. Measured once instead of assumed, so another
  // RapidJSON that consumes first cannot make us cut a bracket off.
  static size_t containerEndOffset() {
    static const size_t offset = [] {
      struct Probe : rapidjson::BaseReaderHandler<rapidjson::UTF8<>, Probe> {
        const rapidjson::MemoryStream* stream = nullptr;
        size_t at = 0;
        bool EndArray(rapidjson::SizeType) {
          at = stream->Tell();
          return true;
        }
      };
      rapidjson::MemoryStream stream("[]", 2);
      Probe probe;
      probe.stream = &stream;
      rapidjson::Reader reader;
      reader.Parse<rapidjson::kParseIterativeFlag>(stream, probe);
      return probe.at == 1 ? size_t{1} : size_t{0};
    }();
    return offset;
  }

  const rapidjson::MemoryStream& stream_;
  std::string_view text_;
  size_t depth_ = 0;
  size_t after_previous_ = 0;
};

const JsonMemberSpan* findObjectMember(const std::vector<JsonMemberSpan>& members,
                                       std::string_view key) {
  for (const auto& m : members) {
    if (m.key == key) return m.value_is_object ? &m : nullptr;  // the first one counts
  }
  return nullptr;
}

std::string_view rawMember(std::string_view text, const JsonMemberSpan& m) {
  return text.substr(m.raw_begin, m.value_end - m.raw_begin);
}

}  // namespace

Result<std::vector<JsonMemberSpan>> topLevelMembers(std::string_view json) {
  rapidjson::MemoryStream stream(json.data(), json.size());
  SpanHandler handler(stream, json);
  rapidjson::Reader reader;
  const rapidjson::ParseResult parsed =
      reader.Parse<rapidjson::kParseIterativeFlag | rapidjson::kParseValidateEncodingFlag>(stream,
                                                                                           handler);
  if (!handler.root_is_object && (parsed || parsed.Code() == rapidjson::kParseErrorTermination)) {
    return Error::make(ErrorCode::kBadRequest, "not a JSON object");
  }
  if (!parsed) {
    return Error::make(ErrorCode::kBadRequest,
                       std::string("not JSON: ") + rapidjson::GetParseError_En(parsed.Code()) +
                           " at offset " + std::to_string(parsed.Offset()));
  }
  return std::move(handler.members);
}

Result<std::string> mergeConnector(const std::string* stored, std::string_view module_document,
                                   std::string_view connector) {
  auto answer = topLevelMembers(module_document);
  if (!answer) {
    return Error::make(ErrorCode::kBadRequest,
                       "the upstream's answer is " + answer.error().message);
  }
  const JsonMemberSpan* fresh = findObjectMember(*answer, connector);
  if (fresh == nullptr) {
    return Error::make(ErrorCode::kNotFound,
                       "the upstream's answer has no connector '" + std::string(connector) + "'");
  }
  if (stored == nullptr) {
    if (answer->size() == 1) return std::string(module_document);
    return "{" + std::string(rawMember(module_document, *fresh)) + "}";
  }
  auto old = topLevelMembers(*stored);
  if (!old) {
    return Error::make(ErrorCode::kBadRequest,
                       "the stored document is " + old.error().message +
                           "; replace it with a full `keywayctl schemas refresh`");
  }
  std::string out = "{";
  bool placed = false;
  auto append = [&](std::string_view raw) {
    if (out.size() > 1) out += ',';
    out += raw;
  };
  for (const auto& m : *old) {
    if (m.key == connector) {
      if (!placed) append(rawMember(module_document, *fresh));
      placed = true;
    } else {
      append(rawMember(*stored, m));
    }
  }
  if (!placed) append(rawMember(module_document, *fresh));
  out += "}";
  return out;
}

Result<SchemaFetchResponse> fetchSchemaDocument(const std::string& url,
                                                const SchemaFetchOptions& options) {
  if (url.compare(0, 7, "http://") != 0 && url.compare(0, 8, "https://") != 0) {
    return Error::make(ErrorCode::kBadRequest, "cannot fetch " + url + ": not an http(s) URL");
  }
  if (!globalInit()) {
    return Error::make(ErrorCode::kInternal, "cannot fetch " + url + ": libcurl failed to start");
  }
  EasyPtr easy(curl_easy_init());
  if (!easy) {
    return Error::make(ErrorCode::kInternal, "cannot fetch " + url + ": out of memory");
  }
  SlistPtr headers;
  for (const char* h : {"Accept: application/json", "User-Agent: keywayctl/" KEYWAY_VERSION}) {
    curl_slist* next = curl_slist_append(headers.get(), h);
    if (next == nullptr) {
      return Error::make(ErrorCode::kInternal, "cannot fetch " + url + ": out of memory");
    }
    (void)headers.release();  // now owned through `next`
    headers.reset(next);
  }
  Sink sink;
  sink.limit = options.max_body_bytes;
  char errbuf[CURL_ERROR_SIZE] = {0};
  CURL* h = easy.get();
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  // The environment's proxy settings are for people, not for a gateway talking to its upstream.
  curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(options.connect_timeout.count()));
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(options.total_timeout.count()));
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(options.max_body_bytes));
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, onData);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  if (const CURLcode tls_rc = setUpstreamTls(h, options.tls.get()); tls_rc != CURLE_OK) {
    return Error::make(ErrorCode::kInternal,
                       "cannot fetch " + url + ": cannot set up TLS (" + curl_easy_strerror(tls_rc) + ")");
  }

  const CURLcode rc = curl_easy_perform(h);
  if (rc != CURLE_OK) {
    std::string detail = errbuf[0] != '\0' ? std::string(errbuf) : curl_easy_strerror(rc);
    if (!detail.empty() && detail.back() == '\n') detail.pop_back();
    ErrorCode code = ErrorCode::kUpstreamUnreachable;
    std::string what;
    if (sink.overflow || rc == CURLE_FILESIZE_EXCEEDED) {
      code = ErrorCode::kPayloadTooLarge;
      what = "the document is larger than " + std::to_string(options.max_body_bytes) + " bytes";
    } else if (rc == CURLE_OPERATION_TIMEDOUT) {
      code = ErrorCode::kUpstreamTimeout;
      what = "timed out (" + detail + ")";
    } else if (auto problem = tlsProblemOf(h, rc, detail); problem && core::isCertificateVerification(*problem)) {
      // libcurl's text may quote the certificate: say why in keyway's words only.
      what = "TLS certificate verification failed: " + std::string(core::tlsProblemText(*problem));
    } else if (problem) {
      what = "TLS handshake failed: " + std::string(core::tlsProblemText(*problem)) + " (" + detail + ")";
    } else if (rc == CURLE_URL_MALFORMAT || rc == CURLE_UNSUPPORTED_PROTOCOL) {
      code = ErrorCode::kBadRequest;
      what = "invalid URL (" + detail + ")";
    } else {
      what = "unreachable (" + detail + ")";
    }
    return Error::make(code, "GET " + url + ": " + what);
  }
  SchemaFetchResponse out;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out.status);
  char* content_type = nullptr;
  if (curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &content_type) == CURLE_OK &&
      content_type != nullptr) {
    out.content_type = content_type;
  }
  out.body = std::move(sink.body);
  return out;
}

}  // namespace keyway::daemon
