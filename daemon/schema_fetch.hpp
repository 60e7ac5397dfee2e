// keywayctl's side of BOSA discovery: the GET of a discovery document (daemon/http_fetch.hpp;
// keywayd fetches through its CurlUpstreamClient) and the merge of one refreshed connector.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"
#include "core/upstream_tls.hpp"
#include "daemon/http_fetch.hpp"
#include "storage/lmdb_schema_store.hpp"

namespace keyway::daemon {

struct SchemaFetchOptions {
  std::chrono::milliseconds connect_timeout{5000};  // the upstream's connect_timeout
  std::chrono::milliseconds total_timeout{30000};   // the BOSA SDK's own discovery timeout
  size_t max_body_bytes = storage::kMaxSchemaDocumentBytes;  // more: kPayloadTooLarge
  std::shared_ptr<const core::UpstreamTls> tls;     // the upstream's `tls:` (null: system CAs)
};

using SchemaFetchResponse = HttpFetchResponse;

// GET `url` and returns whatever status the upstream answered (judging it is the caller's job).
// Sends exactly `Accept: application/json` and a User-Agent: never a credential. No redirects,
// no proxy from the environment, no decompression, http/https only, TLS always verified (with the
// upstream's CA file and client certificate from `options.tls`, as keywayd does).
// Errors (the message names the URL and says what happened):
//   kBadRequest           the URL is not http(s) or does not parse
//   kUpstreamUnreachable  DNS, connect, TLS or connection-reset failures, a garbled response (a
//                         certificate that does not verify is said in general words, never quoted)
//   kUpstreamTimeout      connect or total timeout
//   kPayloadTooLarge      the body exceeds max_body_bytes (the transfer is stopped there)
// Blocking; thread-safe (one easy handle per call). Never throws.
core::Result<SchemaFetchResponse> fetchSchemaDocument(const std::string& url,
                                                      const SchemaFetchOptions& options = {});

// One top-level member of a JSON object, as byte offsets into the text it was found in.
struct JsonMemberSpan {
  std::string key;           // decoded
  size_t raw_begin = 0;      // the key's opening quote
  size_t value_begin = 0;    // first byte of the value
  size_t value_end = 0;      // one past its last byte
  bool value_is_object = false;
};

// The top-level members of `json`, in document order (duplicates kept). Iterative (RapidJSON's
// Reader with kParseIterativeFlag): any nesting depth is safe. kBadRequest when `json` is not one
// JSON object.
core::Result<std::vector<JsonMemberSpan>> topLevelMembers(std::string_view json);

// The document to store after `GET <base>/connectors/?modules=<connector>` answered
// `module_document`: `stored` (when given) with the member `connector` replaced by the answer's
// (kept in place; later duplicate keys of it dropped) or appended. Every other member stays byte
// for byte as it was: the result is spliced from the two texts (keys and values verbatim, joined
// by ","), never re-encoded. With nothing stored, the answer itself when its only member is the
// connector, else an object of just that member.
// Errors: kNotFound when the answer has no object member `connector`; kBadRequest when the
// answer or the stored document is not a JSON object (the message says which).
core::Result<std::string> mergeConnector(const std::string* stored, std::string_view module_document,
                                         std::string_view connector);

}  // namespace keyway::daemon
