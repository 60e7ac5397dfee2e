// Unit tests for the shared text helpers (core/text.hpp).
#include "core/text.hpp"

#include <doctest/doctest.h>

#include <string>
#include <string_view>
#include <vector>

using namespace keyway::core;
using namespace std::string_view_literals;

TEST_CASE("text: isTokenChar and isToken follow RFC 9110 tchar") {
  CHECK(isToken("X-API-Key"));
  CHECK(isToken("a!#$%&'*+-.^_`|~9"));
  CHECK(isToken("GET"));
  CHECK_FALSE(isToken(""));
  CHECK_FALSE(isToken("X API"));
  CHECK_FALSE(isToken("X-Key:"));
  CHECK_FALSE(isToken("X\r\nY"));
  CHECK_FALSE(isToken("(x)"));
  CHECK_FALSE(isToken("caf\xc3\xa9"));
  int tchars = 0;
  for (int c = 0; c < 256; ++c) tchars += isTokenChar(static_cast<char>(c)) ? 1 : 0;
  CHECK(tchars == 10 + 26 + 26 + 15);
  for (char c : "\"(),/:;<=>?@[\\]{} \t\x7f"sv) {
    CAPTURE(c);
    CHECK_FALSE(isTokenChar(c));
  }
}

TEST_CASE("text: isFieldValueChar refuses CTLs but HTAB, and DEL") {
  CHECK(isFieldValueChar('\t'));
  CHECK(isFieldValueChar(' '));
  CHECK(isFieldValueChar('~'));
  CHECK(isFieldValueChar('\x80'));  // obs-text
  CHECK(isFieldValueChar('\xff'));
  CHECK_FALSE(isFieldValueChar('\0'));
  CHECK_FALSE(isFieldValueChar('\r'));
  CHECK_FALSE(isFieldValueChar('\n'));
  CHECK_FALSE(isFieldValueChar('\x1f'));
  CHECK_FALSE(isFieldValueChar('\x7f'));
}

TEST_CASE("text: ASCII digits and letters, whatever the locale") {
  CHECK(isDigit('0'));
  CHECK(isDigit('9'));
  CHECK_FALSE(isDigit('a'));
  CHECK_FALSE(isDigit('\xd9'));
  CHECK(isAlpha('a'));
  CHECK(isAlpha('Z'));
  CHECK_FALSE(isAlpha('0'));
  CHECK_FALSE(isAlpha('@'));
  CHECK_FALSE(isAlpha('['));
  CHECK_FALSE(isAlpha('\xe9'));
  CHECK(isDigits("0"));
  CHECK(isDigits("20240131"));
  CHECK_FALSE(isDigits(""));
  CHECK_FALSE(isDigits("12a"));
  CHECK_FALSE(isDigits(" 1"));
  CHECK_FALSE(isDigits("-1"));
}

TEST_CASE("text: trimOws removes SP and HTAB only") {
  CHECK(trimOws("  a b\t ") == "a b");
  CHECK(trimOws("\t\t") == "");
  CHECK(trimOws("") == "");
  CHECK(trimOws("\r\na\n") == "\r\na\n");
  CHECK(isOws(' '));
  CHECK(isOws('\t'));
  CHECK_FALSE(isOws('\n'));
}

TEST_CASE("text: forEachListElement walks a comma list") {
  std::vector<std::string> seen;
  auto collect = [&](std::string_view e) {
    seen.emplace_back(e);
    return false;
  };
  CHECK_FALSE(forEachListElement(" close ,, keep-alive,\tUpgrade ,", collect));
  CHECK(seen == std::vector<std::string>{"close", "keep-alive", "Upgrade"});

  seen.clear();
  CHECK_FALSE(forEachListElement("", collect));
  CHECK_FALSE(forEachListElement(" , ,", collect));
  CHECK(seen.empty());

  // Stops at the first element fn accepts.
  seen.clear();
  CHECK(forEachListElement("a, b, c", [&](std::string_view e) {
    seen.emplace_back(e);
    return e == "b";
  }));
  CHECK(seen == std::vector<std::string>{"a", "b"});
}

TEST_CASE("text: case-insensitive prefix and substring") {
  CHECK(startsWithNoCase("HTTPS://x", "https://"));
  CHECK(startsWithNoCase("abc", ""));
  CHECK_FALSE(startsWithNoCase("http", "https"));
  CHECK(containsNoCase("Text/Event-Stream; charset=utf-8", "text/event-stream"));
  CHECK(containsNoCase("abc", ""));
  CHECK_FALSE(containsNoCase("ab", "abc"));
  CHECK_FALSE(containsNoCase("text/plain", "event"));
}

TEST_CASE("text: hexValue is -1 for anything but a hex digit") {
  CHECK(hexValue('0') == 0);
  CHECK(hexValue('9') == 9);
  CHECK(hexValue('a') == 10);
  CHECK(hexValue('F') == 15);
  for (char c : "gG/:@`\x80 \0"sv) {
    CAPTURE(c);
    CHECK(hexValue(c) == -1);
  }
}

TEST_CASE("text: appendHexByte and escapeControlBytes") {
  std::string out = "x";
  appendHexByte(out, 0x00);
  appendHexByte(out, 0x1f);
  appendHexByte(out, 0xab);
  appendHexByte(out, 0xff);
  CHECK(out == "x001fabff");

  CHECK(escapeControlBytes("plain text") == "plain text");
  CHECK(escapeControlBytes("a\nb\tc\x7f") == "a\\x0ab\\x09c\\x7f");
  CHECK(escapeControlBytes("\0"sv) == "\\x00");
  CHECK(escapeControlBytes("caf\xc3\xa9") == "caf\xc3\xa9");
  CHECK(escapeControlBytes("") == "");
}

TEST_CASE("text: percentDecodeOnce decodes one round and keeps malformed escapes") {
  CHECK(percentDecodeOnce("a%20b") == "a b");
  CHECK(percentDecodeOnce("%2fx%2F") == "/x/");
  CHECK(percentDecodeOnce("%2541") == "%41");
  CHECK(percentDecodeOnce("%") == "%");
  CHECK(percentDecodeOnce("%4") == "%4");
  CHECK(percentDecodeOnce("%zz%41") == "%zzA");
  CHECK(percentDecodeOnce("a+b") == "a+b");
  CHECK(percentDecodeOnce("%00") == std::string(1, '\0'));
}

TEST_CASE("text: formDecode also reads '+' as a space") {
  CHECK(formDecode("a+b") == "a b");
  CHECK(formDecode("a%2Bb") == "a+b");
  CHECK(formDecode("%+41") == "% 41");
  CHECK(formDecode("modules") == "modules");
}

TEST_CASE("text: appendPointerToken escapes '~' and '/'") {
  std::string ptr;
  appendPointerToken(&ptr, "paths");
  appendPointerToken(&ptr, "/a~b/");
  appendPointerToken(&ptr, "");
  CHECK(ptr == "/paths/~1a~0b~1/");
  std::string tilde;
  appendPointerToken(&tilde, "~1");
  CHECK(tilde == "/~01");
}
