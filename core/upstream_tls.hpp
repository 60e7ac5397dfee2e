// TLS towards upstreams: an upstream's settings (`upstreams.<name>.tls`, docs/config.md) and the reasons a
// TLS exchange fails, shared by the config model, the request pipeline and the upstream clients.
#pragma once

#include <chrono>
#include <string_view>
#include <string>

namespace keyway::core {

// Certificate verification is always on; these settings only say whom keyway trusts and what it
// presents. Paths as written in the config (the loader checked that each is a readable PEM file).
// Immutable once loaded; shared by the config snapshot and every request started under it.
struct UpstreamTls {
  std::string ca_file;      // PEM CA certificates replacing the system's for this upstream; "" = system
  std::string client_cert;  // PEM certificate (chain) presented for mutual TLS; "" = none
  std::string client_key;   // PEM private key of client_cert, may be the same file; "" iff no client_cert
  // When these settings were loaded. A CA file changed in place is read again by connections made
  // after a reload: the upstream client does not reuse CA stores cached before this moment.
  std::chrono::steady_clock::time_point loaded_at = std::chrono::steady_clock::now();

  bool empty() const { return ca_file.empty() && client_cert.empty() && client_key.empty(); }
};

// Why a TLS exchange with an upstream failed (with UpstreamFailure::kTls).
enum class TlsProblem {
  kHandshake,  // the handshake failed for another reason (no common protocol or cipher, an alert)
  // The upstream's certificate did not verify:
  kUntrustedCertificate,  // not issued by a CA keyway trusts (unknown issuer, self-signed)
  kHostMismatch,          // does not name the host of base_url
  kExpired,
  kNotYetValid,
  kRevoked,
  kCaFileUnusable,        // tls.ca_file could not be loaded
  kOtherVerification,     // refused for another reason (bad signature, not a CA, ...)
  // keyway's own certificate (mutual TLS):
  kClientCertUnusable,    // tls.client_cert / tls.client_key could not be loaded or do not match
  kClientCertRefused,     // the upstream refused keyway's client certificate, or its absence
};

// True for the problems that are a failed verification of the upstream's certificate.
bool isCertificateVerification(TlsProblem problem);

// The problem in general words for people, e.g. "the certificate has expired". Never contains
// anything of a certificate (subject, issuer, fingerprint): it is safe in responses and logs.
std::string_view tlsProblemText(TlsProblem problem);

}  // namespace keyway::core
