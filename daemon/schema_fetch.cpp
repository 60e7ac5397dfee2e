// keywayctl schemas refresh: the discovery-document GET and the merge of one refreshed connector.
#include "daemon/schema_fetch.hpp"

#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>

namespace keyway::daemon {

using core::Error;
using core::ErrorCode;
using core::Result;

namespace {

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
  HttpFetchOptions fetch;
  fetch.connect_timeout = options.connect_timeout;
  fetch.total_timeout = options.total_timeout;
  fetch.max_body_bytes = options.max_body_bytes;
  fetch.tls = options.tls;
  HttpFetchResult got = httpFetch(url, fetch);
  if (got.error) return std::move(*got.error);
  return std::move(got.response);
}

}  // namespace keyway::daemon
