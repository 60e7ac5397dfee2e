// The words keyway uses for TLS problems with upstreams.
#include "core/upstream_tls.hpp"

namespace keyway::core {

bool isCertificateVerification(TlsProblem problem) {
  switch (problem) {
    case TlsProblem::kUntrustedCertificate:
    case TlsProblem::kHostMismatch:
    case TlsProblem::kExpired:
    case TlsProblem::kNotYetValid:
    case TlsProblem::kRevoked:
    case TlsProblem::kCaFileUnusable:
    case TlsProblem::kOtherVerification:
      return true;
    case TlsProblem::kHandshake:
    case TlsProblem::kClientCertUnusable:
    case TlsProblem::kClientCertRefused:
      break;
  }
  return false;
}

std::string_view tlsProblemText(TlsProblem problem) {
  switch (problem) {
    case TlsProblem::kUntrustedCertificate:
      return "the certificate is not signed by a trusted CA (check tls.ca_file)";
    case TlsProblem::kHostMismatch:
      return "the certificate does not match the host name of base_url";
    case TlsProblem::kExpired:
      return "the certificate has expired";
    case TlsProblem::kNotYetValid:
      return "the certificate is not valid yet (check the clocks)";
    case TlsProblem::kRevoked:
      return "the certificate has been revoked";
    case TlsProblem::kCaFileUnusable:
      return "the CA certificates could not be loaded (check tls.ca_file)";
    case TlsProblem::kOtherVerification:
      return "the certificate was refused";
    case TlsProblem::kClientCertUnusable:
      return "keyway's client certificate could not be used (check tls.client_cert and tls.client_key)";
    case TlsProblem::kClientCertRefused:
      return "the upstream refused keyway's client certificate (check tls.client_cert)";
    case TlsProblem::kHandshake:
      break;
  }
  return "the TLS handshake failed";
}

}  // namespace keyway::core
