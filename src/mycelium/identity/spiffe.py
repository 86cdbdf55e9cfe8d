"""SPIFFE IDs as the mesh uses them: `spiffe://<trust-domain>/ns/<namespace>/sa/<sa>`.

The SPIFFE spec allows any path; the mesh names workloads by namespace and service
account only (Istio's form), so anything else is refused here, at the boundary, with
what was wrong. Names follow the resource rules: lowercase DNS labels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography import x509

from mycelium.errors import MeshError

DEFAULT_TRUST_DOMAIN = "cluster.local"

# RFC 1123 labels for namespaces and service accounts; trust domains are DNS-like names.
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_TRUST_DOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


class SpiffeIdError(MeshError):
    """A string or certificate that does not carry a mesh SPIFFE ID."""


@dataclass(frozen=True, slots=True)
class SpiffeId:
    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        if not _TRUST_DOMAIN.fullmatch(self.trust_domain):
            raise SpiffeIdError(f"trust domain {self.trust_domain!r} is not a lowercase DNS name")
        for what, value in (
            ("namespace", self.namespace),
            ("service account", self.service_account),
        ):
            if not _LABEL.fullmatch(value):
                raise SpiffeIdError(
                    f"{what} {value!r} is not a lowercase DNS label (a-z, 0-9, '-', at most 63)"
                )

    @property
    def uri(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def __str__(self) -> str:
        return self.uri

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """`spiffe://td/ns/N/sa/S`, or `SpiffeIdError` saying what is wrong with it."""
        if not uri.startswith("spiffe://"):
            raise SpiffeIdError(f"{uri!r} is not a SPIFFE ID: it must start with spiffe://")
        trust_domain, _, path = uri[len("spiffe://") :].partition("/")
        parts = path.split("/")
        if len(parts) != 4 or parts[0] != "ns" or parts[2] != "sa":
            raise SpiffeIdError(
                f"{uri!r} is not a mesh SPIFFE ID: its path must be /ns/<namespace>/sa/<name>"
            )
        return cls(trust_domain, parts[1], parts[3])

    @classmethod
    def from_certificate(cls, certificate: x509.Certificate) -> SpiffeId:
        """The one SPIFFE ID an X.509-SVID carries in its URI SAN."""
        try:
            san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            raise SpiffeIdError("the certificate has no subject alternative name") from None
        uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
        if len(uris) != 1:
            raise SpiffeIdError(
                f"an X.509-SVID carries exactly one URI SAN; this certificate has {len(uris)}"
            )
        return cls.parse(uris[0])
