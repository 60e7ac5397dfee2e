// Unit tests for core/json_schema: every keyword, exact pointers and reasons, hostile schemas, pydantic-shaped schemas.
#include "core/json_schema.hpp"

#include <doctest/doctest.h>
#include <rapidjson/document.h>

#include <atomic>
#include <chrono>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using namespace keyway::core;

namespace {

rapidjson::Document json(std::string_view text) {
  rapidjson::Document doc;
  const Status st = parseJsonText(text, &doc);
  REQUIRE_MESSAGE(st.ok(), "test JSON does not parse: " << std::string(text.substr(0, 200)));
  return doc;
}

struct Compiled {
  std::shared_ptr<const CompiledSchema> schema;
  std::vector<SchemaIssue> issues;
};

Compiled compile(std::string_view schema_text, const SchemaCompileOptions& options = {}) {
  Compiled c;
  const rapidjson::Document doc = json(schema_text);
  auto r = compileSchema(doc, options, &c.issues);
  REQUIRE_MESSAGE(r.ok(), "schema does not compile: " << std::string(schema_text.substr(0, 200)));
  c.schema = std::move(r).value();
  return c;
}

std::vector<ErrorDetail> check(const Compiled& c, std::string_view instance_text) {
  const rapidjson::Document doc = json(instance_text);
  auto out = validate(*c.schema, doc);
  CHECK(isValid(*c.schema, doc) == out.empty());  // both paths always agree
  return out;
}

std::string show(const std::vector<ErrorDetail>& errors) {
  std::ostringstream ss;
  for (const auto& e : errors) ss << "[" << e.pointer << "] " << e.reason << "\n";
  return ss.str();
}

std::string showIssues(const std::vector<SchemaIssue>& issues) {
  std::ostringstream ss;
  for (const auto& i : issues) ss << "[" << i.schema_pointer << "] " << i.message << "\n";
  return ss.str();
}

// Exactly these (pointer, reason) violations, in any order.
void expectErrors(const std::vector<ErrorDetail>& got, std::vector<std::pair<std::string, std::string>> want) {
  INFO("got:\n" << show(got));
  REQUIRE(got.size() == want.size());
  // Plain references, not a structured binding: clang 14 cannot capture bindings in the lambda
  // CHECK_MESSAGE expands to.
  for (const auto& w : want) {
    const std::string& pointer = w.first;
    const std::string& reason = w.second;
    bool found = false;
    for (const auto& e : got) found = found || (e.pointer == pointer && e.reason == reason);
    CHECK_MESSAGE(found, "missing violation [" << pointer << "] " << reason);
  }
}

bool hasIssueAt(const std::vector<SchemaIssue>& issues, const std::string& pointer) {
  for (const auto& i : issues) {
    if (i.schema_pointer == pointer) return true;
  }
  return false;
}

double secondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
TEST_CASE("json_schema: type, with integer = number without fractional part") {
  const auto c = compile(R"({"type":"integer"})");
  CHECK(check(c, "1").empty());
  CHECK(check(c, "1.0").empty());
  CHECK(check(c, "-7").empty());
  CHECK(check(c, "18446744073709551615").empty());
  CHECK(check(c, "1e3").empty());
  expectErrors(check(c, "1.5"), {{"", "expected integer, got number"}});
  expectErrors(check(c, R"("3")"), {{"", "expected integer, got string"}});
  expectErrors(check(c, "null"), {{"", "expected integer, got null"}});

  const auto multi = compile(R"({"type":["string","null"]})");
  CHECK(check(multi, R"("x")").empty());
  CHECK(check(multi, "null").empty());
  expectErrors(check(multi, "3"), {{"", "expected string or null, got integer"}});

  const auto all = compile(R"({"properties":{"a":{"type":"object"},"b":{"type":"array"},"c":{"type":"boolean"},
                                "d":{"type":"number"},"e":{"type":"null"},"f":{"type":"string"}}})");
  CHECK(check(all, R"({"a":{},"b":[],"c":false,"d":2.5,"e":null,"f":""})").empty());
  expectErrors(check(all, R"({"a":[],"b":{},"c":0,"d":"2","e":false,"f":1})"),
               {{"/a", "expected object, got array"},
                {"/b", "expected array, got object"},
                {"/c", "expected boolean, got integer"},
                {"/d", "expected number, got string"},
                {"/e", "expected null, got boolean"},
                {"/f", "expected string, got integer"}});
}

TEST_CASE("json_schema: properties, required at its own pointer, and all violations at once") {
  const auto c = compile(R"({"type":"object","properties":{"owner":{"type":"string"},"repo":{"type":"string"},
                             "n":{"type":"integer","minimum":1}},"required":["owner","repo"]})");
  CHECK(check(c, R"({"owner":"a","repo":"b"})").empty());
  expectErrors(check(c, R"({"n":0})"), {{"/owner", "required property is missing"},
                                        {"/repo", "required property is missing"},
                                        {"/n", "must be at least 1"}});
  expectErrors(check(c, "[]"), {{"", "expected object, got array"}});
  // Required names not declared in properties are checked too.
  const auto undeclared = compile(R"({"required":["x"]})");
  expectErrors(check(undeclared, "{}"), {{"/x", "required property is missing"}});
  CHECK(check(undeclared, R"({"x":null})").empty());
  CHECK(check(undeclared, "3").empty());  // required applies to objects only
}

TEST_CASE("json_schema: additionalProperties (false and schema), patternProperties, propertyNames") {
  const auto closed = compile(R"({"properties":{"a":{}},"additionalProperties":false})");
  CHECK(check(closed, R"({"a":1})").empty());
  expectErrors(check(closed, R"({"a":1,"b":2,"c":3})"), {{"/b", "unexpected property"}, {"/c", "unexpected property"}});

  const auto typed = compile(R"({"properties":{"a":{}},"patternProperties":{"^x-":{"type":"string"}},
                                 "additionalProperties":{"type":"integer"}})");
  CHECK(check(typed, R"({"a":true,"x-foo":"s","n":3})").empty());
  expectErrors(check(typed, R"({"x-foo":1,"n":"3"})"),
               {{"/x-foo", "expected string, got integer"}, {"/n", "expected integer, got string"}});

  const auto names = compile(R"({"propertyNames":{"pattern":"^[a-z_]+$","maxLength":8}})");
  CHECK(check(names, R"({"good_name":1})").size() == 1);  // 9 characters
  CHECK(check(names, R"({"ok":1})").empty());
  expectErrors(check(names, R"({"Bad":1})"), {{"/Bad", "property name must match pattern ^[a-z_]+$"}});
}

TEST_CASE("json_schema: minProperties / maxProperties") {
  const auto c = compile(R"({"minProperties":1,"maxProperties":2})");
  expectErrors(check(c, "{}"), {{"", "must have at least 1 property"}});
  CHECK(check(c, R"({"a":1})").empty());
  expectErrors(check(c, R"({"a":1,"b":2,"c":3})"), {{"", "must have at most 2 properties"}});
}

TEST_CASE("json_schema: items, tuples (draft-4 items[] + additionalItems, prefixItems), min/maxItems") {
  const auto list = compile(R"({"type":"array","items":{"type":"string"},"minItems":1,"maxItems":3})");
  CHECK(check(list, R"(["a"])").empty());
  expectErrors(check(list, "[]"), {{"", "must have at least 1 item"}});
  expectErrors(check(list, R"(["a",1,"b",2])"), {{"", "must have at most 3 items"},
                                                 {"/1", "expected string, got integer"},
                                                 {"/3", "expected string, got integer"}});

  const auto tuple4 = compile(R"({"items":[{"type":"integer"},{"type":"string"}],"additionalItems":false})");
  CHECK(check(tuple4, R"([1,"a"])").empty());
  CHECK(check(tuple4, R"([1])").empty());
  expectErrors(check(tuple4, R"(["x","a",3])"),
               {{"/0", "expected integer, got string"}, {"/2", "unexpected item: at most 2 items are allowed"}});

  const auto tuple_rest = compile(R"({"items":[{"type":"integer"}],"additionalItems":{"type":"boolean"}})");
  expectErrors(check(tuple_rest, R"([1,true,"no"])"), {{"/2", "expected boolean, got string"}});

  const auto prefix = compile(R"({"prefixItems":[{"type":"integer"},{"type":"string"}],"items":false})");
  CHECK(check(prefix, R"([1,"a"])").empty());
  expectErrors(check(prefix, R"([1,"a",null])"), {{"/2", "unexpected item: at most 2 items are allowed"}});

  // additionalItems without a tuple "items" has no effect (draft 4).
  const auto ignored = compile(R"({"items":{"type":"integer"},"additionalItems":false})");
  CHECK(check(ignored, "[1,2,3]").empty());
}

TEST_CASE("json_schema: uniqueItems compares JSON values (1 == 1.0, member order irrelevant)") {
  const auto c = compile(R"({"uniqueItems":true})");
  CHECK(check(c, R"([1,2,"1",[1],{"a":1},true,null])").empty());
  expectErrors(check(c, "[1,2,1.0]"), {{"", "items must be unique (items 0 and 2 are equal)"}});
  expectErrors(check(c, R"([{"a":1,"b":[2]},{"b":[2.0],"a":1}])"),
               {{"", "items must be unique (items 0 and 1 are equal)"}});
  CHECK(check(c, R"([{"a":1},{"a":1,"b":2}])").empty());
  CHECK(check(c, "[[1,2],[2,1]]").empty());
  CHECK(check(c, "[false,0]").empty());
  CHECK(compile(R"({"uniqueItems":false})").schema.get() != nullptr);
  CHECK(check(compile(R"({"uniqueItems":false})"), "[1,1]").empty());
}

TEST_CASE("json_schema: contains, minContains, maxContains") {
  const auto c = compile(R"({"contains":{"type":"integer","minimum":10}})");
  CHECK(check(c, R"(["a",12])").empty());
  expectErrors(check(c, R"([1,"b"])"), {{"", "must contain at least 1 item matching \"contains\""}});
  expectErrors(check(c, "[]"), {{"", "must contain at least 1 item matching \"contains\""}});
  const auto counted = compile(R"({"contains":{"const":"x"},"minContains":2,"maxContains":3})");
  CHECK(check(counted, R"(["x","y","x"])").empty());
  expectErrors(check(counted, R"(["x"])"), {{"", "must contain at least 2 items matching \"contains\""}});
  expectErrors(check(counted, R"(["x","x","x","x"])"), {{"", "must contain at most 3 items matching \"contains\""}});
}

TEST_CASE("json_schema: enum and const, with clear reasons") {
  const auto e = compile(R"({"enum":["open","closed","all"]})");
  CHECK(check(e, R"("open")").empty());
  expectErrors(check(e, R"("merged")"), {{"", R"(must be one of ["open", "closed", "all"])"}});
  expectErrors(check(e, "1"), {{"", R"(must be one of ["open", "closed", "all"])"}});

  const auto mixed = compile(R"({"enum":[1,null,{"a":[1]},"x"]})");
  CHECK(check(mixed, "1.0").empty());
  CHECK(check(mixed, "null").empty());
  CHECK(check(mixed, R"({"a":[1]})").empty());
  CHECK_FALSE(check(mixed, R"({"a":[2]})").empty());
  CHECK_FALSE(check(mixed, "true").empty());

  const auto k = compile(R"({"const":"pr"})");
  CHECK(check(k, R"("pr")").empty());
  expectErrors(check(k, R"("issue")"), {{"", R"(must equal "pr")"}});
  const auto kobj = compile(R"({"const":{"a":[1,2]}})");
  CHECK(check(kobj, R"({"a":[1,2.0]})").empty());
  expectErrors(check(kobj, R"({"a":[2,1]})"), {{"", R"(must equal {"a": [1, 2]})"}});
  const auto knull = compile(R"({"const":null})");
  CHECK(check(knull, "null").empty());
  CHECK_FALSE(check(knull, "0").empty());
}

TEST_CASE("json_schema: numbers: bounds (both exclusive forms), multipleOf") {
  const auto b = compile(R"({"minimum":1,"maximum":100})");
  CHECK(check(b, "1").empty());
  CHECK(check(b, "100").empty());
  expectErrors(check(b, "0"), {{"", "must be at least 1"}});
  expectErrors(check(b, "100.5"), {{"", "must be at most 100"}});
  CHECK(check(b, R"("not a number")").empty());  // bounds apply to numbers only

  const auto modern = compile(R"({"exclusiveMinimum":0,"exclusiveMaximum":1.5})");
  expectErrors(check(modern, "0"), {{"", "must be greater than 0"}});
  expectErrors(check(modern, "1.5"), {{"", "must be less than 1.5"}});
  CHECK(check(modern, "0.0001").empty());

  const auto draft4 = compile(R"({"minimum":0,"exclusiveMinimum":true,"maximum":10,"exclusiveMaximum":false})");
  expectErrors(check(draft4, "0"), {{"", "must be greater than 0"}});
  CHECK(check(draft4, "10").empty());

  const auto big = compile(R"({"maximum":18446744073709551615,"minimum":-9223372036854775808})");
  CHECK(check(big, "18446744073709551615").empty());
  CHECK(check(big, "-9223372036854775808").empty());
  CHECK_FALSE(check(big, "18446744073709551616").empty());

  const auto m = compile(R"({"multipleOf":5})");
  CHECK(check(m, "15").empty());
  CHECK(check(m, "-10").empty());
  CHECK(check(m, "15.0").empty());
  expectErrors(check(m, "7"), {{"", "must be a multiple of 5"}});
  const auto cents = compile(R"({"multipleOf":0.01})");
  CHECK(check(cents, "19.99").empty());
  CHECK(check(cents, "0.07").empty());
  expectErrors(check(cents, "19.995"), {{"", "must be a multiple of 0.01"}});
  CHECK_FALSE(check(compile(R"({"multipleOf":0.123456789})"), "1e308").empty());  // quotient overflows
}

TEST_CASE("json_schema: minLength / maxLength count Unicode code points, not bytes") {
  const auto c = compile(R"({"minLength":2,"maxLength":5})");
  CHECK(check(c, R"("héllo")").empty());   // 5 code points, 6 bytes
  CHECK(check(c, R"("日本語")").empty());  // 3 code points, 9 bytes
  CHECK(check(c, R"("😀😀")").empty());      // 2 code points, 8 bytes
  expectErrors(check(c, R"("a")"), {{"", "must be at least 2 characters long"}});
  expectErrors(check(c, R"("abcdef")"), {{"", "must be at most 5 characters long"}});
  expectErrors(check(compile(R"({"minLength":1})"), R"("")"), {{"", "must be at least 1 character long"}});
}

TEST_CASE("json_schema: pattern uses ECMA-262 syntax through RE2") {
  const auto c = compile(R"({"pattern":"^[a-z]+$"})");
  CHECK(check(c, R"("abc")").empty());
  expectErrors(check(c, R"("abc1")"), {{"", "must match pattern ^[a-z]+$"}});
  expectErrors(check(c, R"("abc\n")"), {{"", "must match pattern ^[a-z]+$"}});  // ECMA $ is the end of input
  CHECK(check(compile(R"({"pattern":"b+"})"), R"("abbbc")").empty());           // unanchored search

  CHECK(check(compile(R"({"pattern":"^\\d{3}-\\d{4}$"})"), R"("555-1234")").empty());
  CHECK(check(compile(R"({"pattern":"^\\u00e9+$"})"), R"("ééé")").empty());
  CHECK(check(compile(R"({"pattern":"^.$"})"), R"("é")").empty());  // one code point
  CHECK_FALSE(check(compile(R"({"pattern":"^.$"})"), R"("\n")").empty());
  CHECK(check(compile(R"({"pattern":"^\\s$"})"), R"("\u00a0")").empty());  // ECMA \s is Unicode-aware
  CHECK(check(compile(R"({"pattern":"^(?<year>\\d{4})$"})"), R"("2024")").empty());
  CHECK(check(compile(R"({"pattern":"^[[:a]+$"})"), R"("[:a")").empty());  // no POSIX classes in ECMA
  CHECK(check(compile(R"({"pattern":"^a{2}$"})"), R"("aa")").empty());
  CHECK(check(compile(R"({"pattern":"^a{x$"})"), R"("a{x")").empty());  // "{" that is not a quantifier

  // pydantic's Decimal pattern: a leading lookahead, which keyway evaluates as a second match.
  const auto decimal = compile(R"({"pattern":"^(?!^[-+.]*$)[+-]?0*\\d*\\.?\\d*$"})");
  CHECK(decimal.issues.empty());
  CHECK(check(decimal, R"("12.50")").empty());
  CHECK(check(decimal, R"("-3")").empty());
  CHECK_FALSE(check(decimal, R"("-.")").empty());
  CHECK_FALSE(check(decimal, R"("")").empty());
  CHECK_FALSE(check(decimal, R"("1a")").empty());
}

TEST_CASE("json_schema: patterns RE2 cannot run are issues, and kReject turns them into violations") {
  for (const char* pattern : {R"(^(a)\\1$)", R"(^(?=a)b|c$)", R"(a(?=b))", R"((?<=a)b)", R"(\\Z)", R"(a{2000})"}) {
    CAPTURE(pattern);
    const std::string schema = std::string(R"({"properties":{"x":{"pattern":")") + pattern + R"("}}})";
    const auto reported = compile(schema);
    REQUIRE(reported.issues.size() == 1);
    CHECK(reported.issues[0].schema_pointer == "/properties/x/pattern");
    CHECK(reported.issues[0].message.find("cannot be enforced") != std::string::npos);
    CHECK(reported.schema->issues().size() == 1);
    CHECK(check(reported, R"({"x":"anything"})").empty());  // kReport: the caller surfaces the issue

    SchemaCompileOptions reject;
    reject.unenforced = UnenforcedPolicy::kReject;
    const auto strict = compile(schema, reject);
    const auto errors = check(strict, R"({"x":"anything"})");
    REQUIRE(errors.size() == 1);
    CHECK(errors[0].pointer == "/x");
    CHECK(errors[0].reason.rfind("cannot be validated: ", 0) == 0);
    CHECK(check(strict, R"({"y":"elsewhere is fine"})").empty());
  }
}

TEST_CASE("json_schema: a pathological regex on a long input finishes fast (RE2 is linear)") {
  const auto c = compile(R"({"pattern":"^(a+)+$"})");
  std::string instance = "\"" + std::string(200000, 'a') + "!\"";
  const auto start = std::chrono::steady_clock::now();
  expectErrors(check(c, instance), {{"", "must match pattern ^(a+)+$"}});
  CHECK(secondsSince(start) < 2.0);
  const auto nested = compile(R"({"pattern":"^((a*)*b)*(x+x+)+y$"})");
  const auto start2 = std::chrono::steady_clock::now();
  CHECK(check(nested, "\"" + std::string(100000, 'x') + "\"").size() == 1);
  CHECK(secondsSince(start2) < 2.0);
}

TEST_CASE("json_schema: formats") {
  struct Row {
    const char* format;
    std::vector<const char*> good;
    std::vector<const char*> bad;
  };
  const std::vector<Row> rows = {
      {"date-time",
       {"2024-01-31T12:00:00Z", "2024-02-29T23:59:59.123+05:30", "2025-07-31T20:20:01.970582", "2024-01-31t12:00:00z"},
       {"2023-02-29T10:00:00Z", "2024-01-31", "2024-13-01T00:00:00Z", "2024-01-31T24:00:00Z", "31/01/2024 12:00",
        "2024-01-31T12:00:00+24:00"}},
      {"date", {"2024-02-29", "1999-12-31"}, {"2023-02-29", "2024-1-1", "2024-01-32", "20240101"}},
      {"time", {"12:30", "12:30:59", "23:59:60Z", "08:00:00.5+01:00"}, {"24:00", "12:60", "12:30:00+25:00", "noon"}},
      {"email",
       {"joe.bloggs@example.com", "a+b@sub.example.org"},
       {"2962", "@example.com", "a@b", "a b@c.com", "a..b@c.com"}},
      {"uuid",
       {"123e4567-e89b-12d3-a456-426614174000", "123E4567E89B12D3A456426614174000"},
       {"123e4567-e89b-12d3-a456", "123e4567-e89b-12d3-a456-42661417400g"}},
      {"uri",
       {"https://example.com/a?b=c#d", "mailto:x@y.z", "urn:isbn:0451450523"},
       {"//example.com", "/relative", "http:// space.com", "not a uri", "http://x/%zz"}},
      {"ipv4", {"192.168.0.1", "0.0.0.0"}, {"256.1.1.1", "1.2.3", "01.2.3.4", "1.2.3.4.5", "0x7f000001"}},
      {"ipv6", {"::1", "2001:db8::7", "::ffff:1.2.3.4"}, {"12345::", "::laptop", "1:2:3:4:5:6:7:8:9", "fe80::1%eth0"}},
      {"hostname", {"www.example.com", "localhost"}, {"-bad.example", "under_score.com"}},
      {"duration", {"P1D", "PT2H30M", "P1Y2M3DT4H5M6.5S", "P2W"}, {"P", "PT", "1D", "P1H"}},
      {"binary", {"raw bytes as a string", ""}, {}},
      {"password", {"anything"}, {}},
      {"regex", {"^[a-z]+$"}, {"(unclosed", "\\Z"}},
  };
  for (const auto& row : rows) {
    CAPTURE(row.format);
    const auto c = compile(std::string(R"({"type":"string","format":")") + row.format + "\"}");
    CHECK(c.issues.empty());
    for (const char* good : row.good) {
      CAPTURE(good);
      rapidjson::Document doc;
      doc.SetString(rapidjson::StringRef(good));
      CHECK(validate(*c.schema, doc).empty());
    }
    for (const char* bad : row.bad) {
      CAPTURE(bad);
      rapidjson::Document doc;
      doc.SetString(rapidjson::StringRef(bad));
      const auto errors = validate(*c.schema, doc);
      REQUIRE(errors.size() == 1);
      CHECK(errors[0].reason.rfind(std::string("must be a valid"), 0) == 0);
    }
  }
  // Formats apply to their own type only; unknown formats are issues, not silent passes.
  CHECK(check(compile(R"({"format":"date"})"), "20240101").empty());
  const auto unknown = compile(R"({"properties":{"c":{"type":"string","format":"color"}}})");
  REQUIRE(unknown.issues.size() == 1);
  CHECK(unknown.issues[0].schema_pointer == "/properties/c/format");
  CHECK(check(compile(R"({"format":"int32"})"), "2147483647").empty());
  CHECK_FALSE(check(compile(R"({"format":"int32"})"), "2147483648").empty());
}

TEST_CASE("json_schema: allOf, anyOf, oneOf, not") {
  const auto all = compile(R"({"allOf":[{"type":"integer"},{"minimum":3},{"maximum":5}]})");
  CHECK(check(all, "4").empty());
  expectErrors(check(all, "9"), {{"", "must be at most 5"}});

  const auto any = compile(R"({"anyOf":[{"type":"string","maxLength":2},{"type":"integer"}]})");
  CHECK(check(any, R"("ab")").empty());
  CHECK(check(any, "3").empty());
  // Only the string alternative is plausible for a string: its own reason is reported.
  expectErrors(check(any, R"("abc")"), {{"", "must be at most 2 characters long"}});
  expectErrors(check(any, "true"), {{"", "expected string or integer, got boolean"}});

  const auto one = compile(R"({"oneOf":[{"type":"integer"},{"minimum":2}]})");
  CHECK(check(one, "1").empty());
  CHECK(check(one, "2.5").empty());
  expectErrors(check(one, "3"),
               {{"", "must match exactly one of the oneOf alternatives, but matches alternatives 0 and 1"}});
  CHECK(check(one, "1.5").size() == 1);

  const auto n = compile(R"({"not":{"type":"string"}})");
  CHECK(check(n, "1").empty());
  expectErrors(check(n, R"("s")"), {{"", "must not match the schema in \"not\""}});
}

TEST_CASE("json_schema: if / then / else") {
  const auto c = compile(R"({"if":{"properties":{"kind":{"const":"pr"}},"required":["kind"]},
                             "then":{"required":["number"]},"else":{"required":["title"]}})");
  CHECK(check(c, R"({"kind":"pr","number":3})").empty());
  expectErrors(check(c, R"({"kind":"pr"})"), {{"/number", "required property is missing"}});
  expectErrors(check(c, R"({"kind":"issue"})"), {{"/title", "required property is missing"}});
  CHECK(check(compile(R"({"then":{"type":"string"}})"), "1").empty());  // then without if: no effect
}

TEST_CASE("json_schema: dependencies, dependentRequired, dependentSchemas") {
  const auto deps = compile(R"({"dependencies":{"card":["billing","cvv"],"coupon":{"required":["code"]}}})");
  CHECK(check(deps, R"({"card":1,"billing":2,"cvv":3})").empty());
  CHECK(check(deps, R"({"billing":2})").empty());
  expectErrors(check(deps, R"({"card":1,"coupon":true})"),
               {{"/billing", R"(required property is missing (required when "card" is present))"},
                {"/cvv", R"(required property is missing (required when "card" is present))"},
                {"/code", "required property is missing"}});
  const auto modern = compile(R"({"dependentRequired":{"a":["b"]},"dependentSchemas":{"b":{"maxProperties":2}}})");
  CHECK(check(modern, R"({"a":1,"b":2})").empty());
  expectErrors(check(modern, R"({"a":1})"), {{"/b", R"(required property is missing (required when "a" is present))"}});
  expectErrors(check(modern, R"({"a":1,"b":2,"c":3})"), {{"", "must have at most 2 properties"}});
}

TEST_CASE("json_schema: $ref forms: root, $defs, definitions, escaped pointers, siblings") {
  const auto c = compile(R"({
      "$defs":{"Name":{"type":"string","minLength":1}},
      "definitions":{"Count":{"type":"integer"}},
      "a/b":{"type":"boolean"}, "t~x":{"type":"null"}, "p%q":{"type":"number"},
      "properties":{
        "name":{"$ref":"#/$defs/Name"},
        "count":{"$ref":"#/definitions/Count"},
        "slash":{"$ref":"#/a~1b"}, "tilde":{"$ref":"#/t~0x"}, "percent":{"$ref":"#/p%25q"},
        "self":{"$ref":"#"},
        "bounded":{"$ref":"#/definitions/Count","maximum":10}
      }})");
  // The three non-keyword members are reported (unknown keywords); nothing else.
  CHECK(c.issues.size() == 3);
  CHECK(check(c, R"({"name":"x","count":2,"slash":true,"tilde":null,"percent":1.5,"self":{"name":"y"},"bounded":5})")
            .empty());
  expectErrors(
      check(c, R"({"name":"","count":"2","slash":1,"tilde":0,"percent":"1","self":{"count":1.5},"bounded":11})"),
      {{"/name", "must be at least 1 character long"},
       {"/count", "expected integer, got string"},
       {"/slash", "expected boolean, got integer"},
       {"/tilde", "expected null, got integer"},
       {"/percent", "expected number, got string"},
       {"/self/count", "expected integer, got number"},
       {"/bounded", "must be at most 10"}});  // siblings of $ref are enforced (2019+)

  SchemaCompileOptions draft4;
  draft4.dialect = SchemaDialect::kDraft4;
  const auto d4 = compile(
      R"({"definitions":{"C":{"type":"integer"}},"properties":{"x":{"$ref":"#/definitions/C","maximum":1}}})", draft4);
  CHECK(check(d4, R"({"x":5})").empty());  // draft 4: $ref overrides its siblings
  const auto auto4 =
      compile(R"({"$schema":"http://json-schema.org/draft-04/schema#","definitions":{"C":{"type":"integer"}},
                                 "properties":{"x":{"$ref":"#/definitions/C","maximum":1}}})");
  CHECK(check(auto4, R"({"x":5})").empty());  // detected from $schema
}

TEST_CASE("json_schema: $id base URIs and $anchor resolve locally; remote refs are issues") {
  const auto c = compile(R"({"$id":"https://example.com/root.json",
      "$defs":{"item":{"$id":"item.json","type":"integer"},"named":{"$anchor":"pos","minimum":0}},
      "properties":{"a":{"$ref":"item.json"},"b":{"$ref":"https://example.com/item.json"},"c":{"$ref":"#pos"}}})");
  CHECK(c.issues.empty());
  expectErrors(
      check(c, R"({"a":"x","b":1.5,"c":-1})"),
      {{"/a", "expected integer, got string"}, {"/b", "expected integer, got number"}, {"/c", "must be at least 0"}});
  const auto remote = compile(R"({"properties":{"x":{"$ref":"https://schemas.example.com/x.json"},
                                  "y":{"$ref":"#/$defs/missing"},"z":{"$ref":"#nope"}}})");
  REQUIRE(remote.issues.size() == 3);
  CHECK(hasIssueAt(remote.issues, "/properties/x/$ref"));
  CHECK(hasIssueAt(remote.issues, "/properties/y/$ref"));
  CHECK(hasIssueAt(remote.issues, "/properties/z/$ref"));
  CHECK(remote.issues[0].message.find("remote $ref") != std::string::npos);

  // A registered document resolves; nothing is ever fetched.
  const rapidjson::Document other = json(R"({"$defs":{"Pos":{"type":"integer","minimum":1}}})");
  SchemaCompileOptions options;
  options.documents["https://schemas.example.com/common.json"] = &other;
  const auto linked = compile(R"({"$ref":"https://schemas.example.com/common.json#/$defs/Pos"})", options);
  CHECK(linked.issues.empty());
  CHECK(check(linked, "3").empty());
  expectErrors(check(linked, "0"), {{"", "must be at least 1"}});
}

TEST_CASE("json_schema: recursive schemas (pydantic self-referencing model)") {
  const auto c = compile(R"({"$defs":{"TreeNode":{"properties":{"name":{"title":"Name","type":"string"},
      "children":{"default":[],"items":{"$ref":"#/$defs/TreeNode"},"title":"Children","type":"array"},
      "parent":{"anyOf":[{"$ref":"#/$defs/TreeNode"},{"type":"null"}],"default":null}},
      "required":["name"],"title":"TreeNode","type":"object"}},"$ref":"#/$defs/TreeNode"})");
  CHECK(c.issues.empty());
  CHECK(check(c, R"({"name":"root","children":[{"name":"a","children":[{"name":"b"}]}],"parent":null})").empty());
  expectErrors(check(c, R"({"name":"root","children":[{"name":"a","children":[{"nom":"b"}]}],"parent":{"name":3}})"),
               {{"/children/0/children/0/name", "required property is missing"},
                {"/parent/name", "expected string, got integer"}});
}

TEST_CASE("json_schema: hostile: $ref cycles never reaching a value are cut off, not a crash or hang") {
  for (const char* schema :
       {R"({"$ref":"#"})", R"({"$defs":{"A":{"$ref":"#/$defs/B"},"B":{"$ref":"#/$defs/A"}},"$ref":"#/$defs/A"})",
        R"({"allOf":[{"$ref":"#"}]})", R"({"anyOf":[{"$ref":"#"},{"$ref":"#"}]})", R"({"not":{"$ref":"#"}})"}) {
    CAPTURE(schema);
    const auto c = compile(schema);
    const auto start = std::chrono::steady_clock::now();
    const auto errors = check(c, R"({"a":1})");
    CHECK(secondsSince(start) < 2.0);
    REQUIRE(errors.size() == 1);
    CHECK(errors[0].reason.find("validation aborted") != std::string::npos);
  }
}

TEST_CASE("json_schema: hostile: exponential anyOf nesting is bounded by the evaluation budget") {
  // Each level doubles the work: 2^40 evaluations without a budget.
  std::string schema = R"({"$defs":{"L0":{"type":"string"})";
  for (int i = 1; i <= 40; ++i) {
    schema += ",\"L" + std::to_string(i) + R"(":{"anyOf":[{"$ref":"#/$defs/L)" + std::to_string(i - 1) +
              R"("},{"$ref":"#/$defs/L)" + std::to_string(i - 1) + "\"}]}";
  }
  schema += R"(},"$ref":"#/$defs/L40"})";
  const auto c = compile(schema);
  const auto start = std::chrono::steady_clock::now();
  const auto errors = check(c, "1");
  CHECK(secondsSince(start) < 5.0);
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].reason.find("too complex") != std::string::npos);
  CHECK(check(c, R"("fine")").empty());  // the first branch matches at once
}

TEST_CASE("json_schema: hostile: 10k-deep schema and instance nesting") {
  const int kDepth = 10000;
  std::string schema;
  for (int i = 0; i < kDepth; ++i) schema += R"({"properties":{"a":)";
  schema += "{}";
  for (int i = 0; i < kDepth; ++i) schema += "}}";
  const auto c = compile(schema);
  REQUIRE_FALSE(c.issues.empty());
  CHECK(c.issues[0].message.find("nested deeper") != std::string::npos);

  std::string deep;
  for (int i = 0; i < kDepth; ++i) deep += R"({"a":)";
  deep += "1";
  for (int i = 0; i < kDepth; ++i) deep += "}";
  const auto errors = check(c, deep);
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].reason.find("nested deeper than 64 levels") != std::string::npos);
  CHECK(errors[0].pointer.size() == 65 * 2);  // "/a" x 65

  // A recursive schema over a deep instance: the instance depth bound reports it.
  const auto recursive = compile(R"({"type":"array","items":{"$ref":"#"}})");
  std::string arrays(100000, '[');
  arrays += std::string(100000, ']');
  const auto deep_errors = check(recursive, arrays);
  REQUIRE(deep_errors.size() == 1);
  CHECK(deep_errors[0].reason.find("nested deeper") != std::string::npos);
  // ...while deep data the schema does not descend into is no problem, and equality is iterative.
  CHECK(check(compile(R"({"type":"array"})"), arrays).empty());
  CHECK_FALSE(check(compile(R"({"const":[[[[1]]]]})"), arrays).empty());
  CHECK_FALSE(check(compile(R"({"uniqueItems":true})"), "[" + arrays + "," + arrays + "]").empty());
}

TEST_CASE("json_schema: hostile: huge enum stays fast and its reason stays short") {
  std::string schema = R"({"enum":[)";
  for (int i = 0; i < 100000; ++i) schema += (i ? ",\"v" : "\"v") + std::to_string(i) + "\"";
  schema += "]}";
  const auto c = compile(schema);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 10000; ++i) {
    rapidjson::Document doc;
    const std::string v = "v" + std::to_string(i * 7);
    doc.SetString(v.data(), static_cast<rapidjson::SizeType>(v.size()), doc.GetAllocator());
    REQUIRE(validate(*c.schema, doc).empty());
  }
  CHECK(secondsSince(start) < 2.0);
  const auto errors = check(c, R"("nope")");
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].reason.size() < 300);
  CHECK(errors[0].reason.find("more)") != std::string::npos);
}

TEST_CASE("json_schema: hostile: quadratic shapes stay bounded (uniqueItems, enum x items, required x members)") {
  // 20k distinct integers near 2^64: equal as doubles, distinct exactly.
  std::string big = "[";
  for (int i = 0; i < 20000; ++i)
    big += (i ? "," : "") + std::to_string(18446744073709551615ULL - static_cast<unsigned>(i));
  big += "]";
  auto start = std::chrono::steady_clock::now();
  CHECK(check(compile(R"({"uniqueItems":true})"), big).empty());
  CHECK(secondsSince(start) < 2.0);

  // 20k equal objects: a duplicate is found at once.
  std::string same = "[";
  for (int i = 0; i < 20000; ++i) same += i ? ",{\"a\":[1]}" : "{\"a\":[1]}";
  same += "]";
  start = std::chrono::steady_clock::now();
  const auto dup = check(compile(R"({"uniqueItems":true})"), same);
  REQUIRE(dup.size() == 1);
  CHECK(dup[0].reason.find("must be unique") != std::string::npos);
  CHECK(secondsSince(start) < 2.0);

  // A 5k-number enum applied to each of 100k items.
  std::string numeric_enum = R"({"items":{"enum":[)";
  for (int i = 0; i < 5000; ++i) numeric_enum += (i ? "," : "") + std::to_string(i * 2);
  numeric_enum += "]}}";
  std::string odd = "[";
  for (int i = 0; i < 100000; ++i) odd += i ? ",1" : "1";
  odd += "]";
  start = std::chrono::steady_clock::now();
  CHECK_FALSE(check(compile(numeric_enum), odd).empty());
  CHECK(secondsSince(start) < 3.0);

  // 5k required names the object lacks, on an object with 20k members.
  std::string req = R"({"required":[)";
  for (int i = 0; i < 5000; ++i) req += (i ? ",\"r" : "\"r") + std::to_string(i) + "\"";
  req += "]}";
  std::string members = "{";
  for (int i = 0; i < 20000; ++i) members += (i ? ",\"m" : "\"m") + std::to_string(i) + "\":0";
  members += "}";
  start = std::chrono::steady_clock::now();
  CHECK_FALSE(check(compile(req), members).empty());
  CHECK(secondsSince(start) < 3.0);
}

TEST_CASE("json_schema: violations are bounded, with a summary entry") {
  const auto c = compile(R"({"items":{"type":"string"}})");
  std::string many = "[";
  for (int i = 0; i < 500; ++i) many += (i ? ",1" : "1");
  many += "]";
  const auto errors = check(c, many);
  REQUIRE(errors.size() == kMaxSchemaViolations);
  CHECK(errors[0].pointer == "/0");
  CHECK(errors[98].pointer == "/98");
  CHECK(errors.back().reason == "too many violations: only the first 99 are listed");
  const rapidjson::Document doc = json(many);
  const auto three = validate(*c.schema, doc, 3);
  REQUIRE(three.size() == 3);
  CHECK(three[2].reason == "too many violations: only the first 2 are listed");
  // Exactly the limit: all listed, no summary.
  std::string hundred = "[";
  for (int i = 0; i < 100; ++i) hundred += (i ? ",1" : "1");
  hundred += "]";
  const auto exact = check(c, hundred);
  REQUIRE(exact.size() == 100);
  CHECK(exact.back().pointer == "/99");
}

TEST_CASE("json_schema: instance pointers are RFC 6901-escaped") {
  const auto c = compile(R"({"additionalProperties":{"type":"integer"}})");
  expectErrors(check(c, R"({"a/b":"x","m~n":"y","":"z"})"), {{"/a~1b", "expected integer, got string"},
                                                             {"/m~0n", "expected integer, got string"},
                                                             {"/", "expected integer, got string"}});
}

TEST_CASE("json_schema: reasons never quote instance values (they may be secrets)") {
  const auto c = compile(R"({"properties":{"token":{"type":"string","pattern":"^kw_[a-z]+$","maxLength":5},
                             "n":{"enum":[1,2]},"o":{"type":"integer"}}, "additionalProperties":false})");
  const auto errors =
      check(c, R"({"token":"sk-live-SUPERSECRET","n":"sk-live-SUPERSECRET","o":"sk-live-SUPERSECRET"})");
  CHECK(errors.size() == 4);
  for (const auto& e : errors) CHECK(e.reason.find("SUPERSECRET") == std::string::npos);
}

TEST_CASE("json_schema: nullable (OpenAPI) admits null") {
  const auto c = compile(R"({"type":"string","nullable":true,"minLength":2})");
  CHECK(check(c, "null").empty());
  CHECK(check(c, R"("ab")").empty());
  expectErrors(check(c, "1"), {{"", "expected string or null, got integer"}});
}

TEST_CASE("json_schema: annotations are silent; unknown and unsupported keywords are issues") {
  const auto quiet = compile(R"({"$schema":"https://json-schema.org/draft/2020-12/schema","$id":"https://x.test/s",
      "title":"T","description":"D","default":1,"examples":[1],"$comment":"c","readOnly":true,"writeOnly":false,
      "deprecated":false,"x-internal":{"a":1},"discriminator":{"propertyName":"k"},"contentMediaType":"text/plain"})");
  CHECK_MESSAGE(quiet.issues.empty(), showIssues(quiet.issues));
  const auto loud = compile(R"({"properties":{"a":{"frobnicate":3,"unevaluatedProperties":false,"minLength":-1,
                               "type":"strnig","$dynamicRef":"#x"}}})");
  CHECK(loud.issues.size() == 5);
  for (const char* p : {"/properties/a/frobnicate", "/properties/a/unevaluatedProperties", "/properties/a/minLength",
                        "/properties/a/type", "/properties/a/$dynamicRef"}) {
    CHECK_MESSAGE(hasIssueAt(loud.issues, p), p);
  }
}

TEST_CASE("json_schema: boolean schemas and compile errors") {
  CHECK(check(compile("true"), R"({"any":"thing"})").empty());
  expectErrors(check(compile("false"), "1"), {{"", "no value is allowed here"}});
  expectErrors(check(compile(R"({"properties":{"gone":false}})"), R"({"gone":1})"),
               {{"/gone", "no value is allowed here"}});
  const rapidjson::Document bad = json(R"("a string is not a schema")");
  std::vector<SchemaIssue> issues;
  const auto r = compileSchema(bad, &issues);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kInvalidParameters);
  const auto nested = compile(R"({"properties":{"a":"nope","b":[1]}})");
  CHECK(nested.issues.size() == 2);
}

TEST_CASE("json_schema: the compiled schema owns its data and is shared across threads") {
  std::shared_ptr<const CompiledSchema> schema;
  {
    rapidjson::Document doc = json(R"({"type":"object","properties":{"state":{"enum":["open","closed"]},
                                        "id":{"const":"fixed"},"name":{"pattern":"^[a-z]+$"}},"required":["state"]})");
    auto r = compileSchema(doc, nullptr);
    REQUIRE(r.ok());
    schema = std::move(r).value();
  }  // source document gone
  const rapidjson::Document good = json(R"({"state":"open","id":"fixed","name":"abc"})");
  const rapidjson::Document bad = json(R"({"state":"merged","id":"other","name":"ABC"})");
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        if (!validate(*schema, good).empty()) ++mismatches;
        if (validate(*schema, bad).size() != 3) ++mismatches;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(mismatches.load() == 0);
}

TEST_CASE("json_schema: parseJsonText") {
  rapidjson::Document doc;
  CHECK(parseJsonText(R"({"a":[1,2]})", &doc).ok());
  const Status bad = parseJsonText(R"({"a":)", &doc);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().code == ErrorCode::kBadRequest);
  CHECK(bad.error().message.find("not valid JSON") != std::string::npos);
  CHECK_FALSE(parseJsonText("", &doc).ok());
  CHECK_FALSE(parseJsonText("{} trailing", &doc).ok());
  CHECK_FALSE(parseJsonText("\"\xff\xfe\"", &doc).ok());                                 // not UTF-8
  CHECK(parseJsonText(std::string(500000, '[') + std::string(500000, ']'), &doc).ok());  // no recursion
}

// ---------------------------------------------------------------------------------------------
// Pydantic-shaped schemas, as pydantic 2 model_json_schema() emits them.

namespace {

// class ListPullRequestsRequest(BaseModel):
//     owner: str = Field(..., min_length=1, max_length=100); repo: str = Field(..., pattern=...)
//     state: Literal["open","closed","all"] = "open"; per_page: int = Field(30, ge=1, le=100)
//     page: Optional[int] = Field(None, ge=1); response_fields: Optional[list[str]] = None
constexpr const char* kListPullRequests =
    R"({"properties": {"owner": {"description": "Repository owner", "maxLength": 100, "minLength": 1, "title": "Owner",
    "type": "string"}, "repo": {"pattern": "^[A-Za-z0-9_.-]+$", "title": "Repo", "type": "string"}, "state": {"default":
    "open", "enum": ["open", "closed", "all"], "title": "State", "type": "string"}, "per_page": {"default": 30, "maximum":
    100, "minimum": 1, "title": "Per Page", "type": "integer"}, "page": {"anyOf": [{"minimum": 1, "type": "integer"},
    {"type": "null"}], "default": null, "title": "Page"}, "response_fields": {"anyOf": [{"items": {"type": "string"},
    "type": "array"}, {"type": "null"}], "default": null, "title": "Response Fields"}}, "required": ["owner", "repo"],
    "title": "ListPullRequestsRequest", "type": "object"})";

// Nested models via $defs, Optional[Model], list[Model], a discriminated union (const pet_type),
// Optional[datetime], Optional[UUID], Optional[Decimal] (lookahead pattern), Literal default.
constexpr const char* kCreateIssue =
    R"({"$defs": {"Assignee": {"properties": {"login": {"title": "Login", "type": "string"}, "email": {"anyOf": [{"type":
    "string"}, {"type": "null"}], "default": null, "title": "Email"}}, "required": ["login"], "title": "Assignee", "type":
    "object"}, "Cat": {"properties": {"pet_type": {"const": "cat", "title": "Pet Type", "type": "string"}, "meows":
    {"title": "Meows", "type": "integer"}}, "required": ["pet_type", "meows"], "title": "Cat", "type": "object"}, "Dog":
    {"properties": {"pet_type": {"const": "dog", "title": "Pet Type", "type": "string"}, "barks": {"title": "Barks",
    "type": "number"}}, "required": ["pet_type", "barks"], "title": "Dog", "type": "object"}, "Label": {"properties":
    {"name": {"title": "Name", "type": "string"}, "color": {"anyOf": [{"pattern": "^[0-9a-f]{6}$", "type": "string"},
    {"type": "null"}], "default": null, "title": "Color"}}, "required": ["name"], "title": "Label", "type": "object"}},
    "properties": {"owner": {"title": "Owner", "type": "string"}, "repo": {"title": "Repo", "type": "string"}, "title":
    {"minLength": 1, "title": "Title", "type": "string"}, "body": {"anyOf": [{"type": "string"}, {"type": "null"}],
    "default": null, "title": "Body"}, "labels": {"default": [], "items": {"$ref": "#/$defs/Label"}, "title": "Labels",
    "type": "array"}, "assignee": {"anyOf": [{"$ref": "#/$defs/Assignee"}, {"type": "null"}], "default": null}, "due":
    {"anyOf": [{"format": "date-time", "type": "string"}, {"type": "null"}], "default": null, "title": "Due"}, "pet":
    {"discriminator": {"mapping": {"cat": "#/$defs/Cat", "dog": "#/$defs/Dog"}, "propertyName": "pet_type"}, "oneOf":
    [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}], "title": "Pet"}, "id": {"anyOf": [{"format": "uuid", "type":
    "string"}, {"type": "null"}], "default": null, "title": "Id"}, "amount": {"anyOf": [{"type": "number"}, {"pattern":
    "^(?!^[-+.]*$)[+-]?0*\\d*\\.?\\d*$", "type": "string"}, {"type": "null"}], "default": null, "title": "Amount"},
    "kind": {"const": "issue", "default": "issue", "title": "Kind", "type": "string"}}, "required": ["owner", "repo",
    "title", "pet"], "title": "CreateIssueRequest", "type": "object"})";

// A file field: bytes with format binary, and an optional list of them.
constexpr const char* kUpload =
    R"({"properties": {"file": {"format": "binary", "title": "File", "type": "string"}, "files": {"anyOf": [{"items":
    {"format": "binary", "type": "string"}, "type": "array"}, {"type": "null"}], "default": null, "title": "Files"},
    "folder_id": {"title": "Folder Id", "type": "string"}}, "required": ["file", "folder_id"], "title": "UploadRequest",
    "type": "object"})";

}  // namespace

TEST_CASE("pydantic: ListPullRequestsRequest") {
  const auto c = compile(kListPullRequests);
  CHECK_MESSAGE(c.issues.empty(), showIssues(c.issues));
  CHECK_FALSE(c.schema->hasBinaryFields());
  CHECK(check(c, R"({"owner":"octo","repo":"hello-world"})").empty());
  CHECK(
      check(
          c,
          R"({"owner":"octo","repo":"hello.world","state":"all","per_page":100,"page":null,"response_fields":["id"]})")
          .empty());
  CHECK(check(c, R"({"owner":"octo","repo":"r","page":2,"unknown_extra":"ignored like pydantic"})").empty());
  expectErrors(check(c, R"({"repo":"bad repo!","state":"merged","per_page":0,"page":0,"response_fields":"id"})"),
               {{"/owner", "required property is missing"},
                {"/repo", "must match pattern ^[A-Za-z0-9_.-]+$"},
                {"/state", R"(must be one of ["open", "closed", "all"])"},
                {"/per_page", "must be at least 1"},
                {"/page", "must be at least 1"},                               // Optional[int]: int's own reason
                {"/response_fields", "expected array or null, got string"}});  // Optional[list]: no match at all
  expectErrors(check(c, R"({"owner":"","repo":"r","per_page":101,"page":"2"})"),
               {{"/owner", "must be at least 1 character long"},
                {"/per_page", "must be at most 100"},
                {"/page", "expected integer or null, got string"}});
  expectErrors(check(c, R"({"owner":"o","repo":"r","response_fields":["id",2]})"),
               {{"/response_fields/1", "expected string, got integer"}});
}

TEST_CASE("pydantic: CreateIssueRequest with $defs, Optional[Model], list[Model], discriminated union") {
  const auto c = compile(kCreateIssue);
  CHECK_MESSAGE(c.issues.empty(), showIssues(c.issues));
  const char* valid = R"({"owner":"o","repo":"r","title":"Bug","body":null,
      "labels":[{"name":"bug","color":"ff0000"},{"name":"p1"}],"assignee":{"login":"alice","email":null},
      "due":"2025-01-31T09:00:00Z","pet":{"pet_type":"cat","meows":3},
      "id":"123e4567-e89b-12d3-a456-426614174000","amount":"12.50","kind":"issue"})";
  CHECK(check(c, valid).empty());
  CHECK(check(c, R"({"owner":"o","repo":"r","title":"t","pet":{"pet_type":"dog","barks":1.5},"amount":3.25})").empty());

  expectErrors(check(c, R"({"owner":"o","repo":"r","title":"",
      "labels":[{"name":"bug","color":"red"},{"color":null}],"assignee":{"email":5},
      "due":"tomorrow","pet":{"pet_type":"dog","barks":"loud"},"id":"nope","amount":"1.2.3","kind":"pr"})"),
               {{"/title", "must be at least 1 character long"},
                {"/labels/0/color", "must match pattern ^[0-9a-f]{6}$"},
                {"/labels/1/name", "required property is missing"},
                {"/assignee/login", "required property is missing"},
                {"/assignee/email", "expected string or null, got integer"},
                {"/due", "must be a valid date-time (RFC 3339, e.g. 2024-01-31T12:00:00Z)"},
                {"/pet/barks", "expected number, got string"},  // the discriminator picks Dog
                {"/id", "must be a valid UUID"},
                {"/amount", R"(must match pattern ^(?!^[-+.]*$)[+-]?0*\d*\.?\d*$)"},
                {"/kind", R"(must equal "issue")"}});
  expectErrors(check(c, R"({"owner":"o","repo":"r","title":"t","pet":{"pet_type":"cat"},"assignee":"alice"})"),
               {{"/pet/meows", "required property is missing"}, {"/assignee", "expected object or null, got string"}});
  expectErrors(check(c, R"({"owner":"o","repo":"r","title":"t","pet":{"pet_type":"cow"}})"),
               {{"/pet", "must match exactly one of the oneOf alternatives (2)"}});
  expectErrors(check(c, R"({"owner":"o","repo":"r","title":"t"})"), {{"/pet", "required property is missing"}});
}

TEST_CASE("pydantic: file fields (format binary) accept strings in a JSON body") {
  const auto c = compile(kUpload);
  CHECK(c.issues.empty());
  CHECK(c.schema->hasBinaryFields());
  CHECK(check(c, R"({"file":"aGVsbG8=","folder_id":"f1","files":["a","b"]})").empty());
  expectErrors(check(c, R"({"file":42,"folder_id":"f1","files":[1]})"),
               {{"/file", "expected string, got integer"}, {"/files/0", "expected string, got integer"}});
  CHECK_FALSE(compile(kListPullRequests).schema->hasBinaryFields());
}
