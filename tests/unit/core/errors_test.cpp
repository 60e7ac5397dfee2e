// Unit tests for keyway's error model: statuses, names, reason phrases, JSON bodies (core/errors).
#include "core/errors.hpp"

#include <doctest/doctest.h>
#include <rapidjson/document.h>

#include <string>

using namespace keyway::core;

TEST_CASE("errors: status and name of every code (docs/errors.md)") {
  struct Row {
    ErrorCode code;
    int status;
    const char* name;
  };
  const Row rows[] = {
      {ErrorCode::kUnauthorized, 401, "unauthorized"},
      {ErrorCode::kForbidden, 403, "forbidden"},
      {ErrorCode::kNotFound, 404, "not_found"},
      {ErrorCode::kBadRequest, 400, "bad_request"},
      {ErrorCode::kPayloadTooLarge, 413, "payload_too_large"},
      {ErrorCode::kHeadersTooLarge, 431, "headers_too_large"},
      {ErrorCode::kInvalidParameters, 422, "invalid_parameters"},
      {ErrorCode::kRateLimited, 429, "rate_limited"},
      {ErrorCode::kUpstreamUnreachable, 502, "upstream_unreachable"},
      {ErrorCode::kUpstreamTimeout, 504, "upstream_timeout"},
      {ErrorCode::kUnavailable, 503, "unavailable"},
      {ErrorCode::kNotImplemented, 501, "not_implemented"},
      {ErrorCode::kInternal, 500, "internal"},
  };
  for (const auto& r : rows) {
    CAPTURE(r.name);
    CHECK(httpStatus(r.code) == r.status);
    CHECK(std::string(errorCodeName(r.code)) == r.name);
    CHECK_FALSE(reasonPhrase(r.status).empty());
  }
}

TEST_CASE("errors: reason phrases") {
  CHECK(reasonPhrase(100) == "Continue");
  CHECK(reasonPhrase(101) == "Switching Protocols");
  CHECK(reasonPhrase(200) == "OK");
  CHECK(reasonPhrase(204) == "No Content");
  CHECK(reasonPhrase(304) == "Not Modified");
  CHECK(reasonPhrase(308) == "Permanent Redirect");
  CHECK(reasonPhrase(400) == "Bad Request");
  CHECK(reasonPhrase(413) == "Content Too Large");
  CHECK(reasonPhrase(422) == "Unprocessable Content");
  CHECK(reasonPhrase(429) == "Too Many Requests");
  CHECK(reasonPhrase(431) == "Request Header Fields Too Large");
  CHECK(reasonPhrase(502) == "Bad Gateway");
  CHECK(reasonPhrase(503) == "Service Unavailable");
  CHECK(reasonPhrase(504) == "Gateway Timeout");
  CHECK(reasonPhrase(0).empty());
  CHECK(reasonPhrase(299).empty());
  CHECK(reasonPhrase(-1).empty());
  CHECK(reasonPhrase(1000).empty());
}

TEST_CASE("errors: errorBody is valid JSON with escaping and details") {
  Error e = Error::make(ErrorCode::kInvalidParameters,
                        "bad \"input\"\n\t<&> \\ \x01 caf\xC3\xA9");
  e.details.push_back({"/owner", "is required"});
  e.details.push_back({"/a~1b/0", "must be \"string\""});
  const std::string body = errorBody(e);
  rapidjson::Document d;
  d.Parse(body.c_str(), body.size());
  REQUIRE_FALSE(d.HasParseError());
  const auto& err = d["error"];
  CHECK(std::string(err["code"].GetString()) == "invalid_parameters");
  CHECK(std::string(err["message"].GetString()) == "bad \"input\"\n\t<&> \\ \x01 caf\xC3\xA9");
  REQUIRE(err["details"].IsArray());
  REQUIRE(err["details"].Size() == 2);
  CHECK(std::string(err["details"][0]["pointer"].GetString()) == "/owner");
  CHECK(std::string(err["details"][1]["reason"].GetString()) == "must be \"string\"");
  CHECK(body.find('\n') == std::string::npos);  // Control characters are escaped.
}

TEST_CASE("errors: details always present; invalid UTF-8 replaced, never breaking JSON") {
  const std::string empty = errorBody(Error::make(ErrorCode::kNotFound, "no such route"));
  CHECK(empty ==
        R"({"error":{"code":"not_found","message":"no such route","details":[]}})");
  Error bad = Error::make(ErrorCode::kBadRequest, std::string("x\xFF\xC0\xAFy\xED\xA0\x80z\0w", 11));
  bad.details.push_back({"/\xE2\x82", "\xF4\x90\x80\x80"});
  const std::string body = errorBody(bad);
  rapidjson::Document d;
  d.Parse<rapidjson::kParseValidateEncodingFlag>(body.c_str(), body.size());
  REQUIRE_FALSE(d.HasParseError());
  const auto& msg = d["error"]["message"];
  CHECK(std::string(msg.GetString(), msg.GetStringLength()).find("x\xEF\xBF\xBD") == 0);
  CHECK(msg.GetStringLength() > 0);
}

TEST_CASE("errors: errorResponse") {
  const HttpResponse r = errorResponse(Error::make(ErrorCode::kRateLimited, "slow down"));
  CHECK(r.status == 429);
  CHECK(r.reason == "Too Many Requests");
  CHECK(headerValue(r.headers, "content-type").value() == "application/json");
  CHECK(r.body == R"({"error":{"code":"rate_limited","message":"slow down","details":[]}})");
  CHECK(errorResponse(Error::make(ErrorCode::kHeadersTooLarge, "x")).status == 431);
}
