"""Constrained scalar types shared by every resource kind.

Names, label maps, ports, percentages, addresses and durations are `Annotated` types:
the model field says what it holds and the annotation validates it, with a message that
tells the operator what a valid value looks like. Durations are written as strings with
a unit ("250ms", "1.5s", "1m", "1h"), held as float seconds, and written back in the
same string form so that a stored resource reads like the one applied.
"""

from __future__ import annotations

import ipaddress
import math
import re
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer, WithJsonSchema

# --- names ---------------------------------------------------------------------------------

# RFC 1123 labels, as Kubernetes uses them for names and namespaces: they end up in host
# names (`reviews.default.svc`) and SPIFFE IDs, so nothing that needs escaping.
DNS_LABEL_MAX_LENGTH = 63
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DNS_LABEL = re.compile(DNS_LABEL_PATTERN)

# A DNS name as a route or listener hostname, optionally with one leading wildcard label
# (Gateway API's rule). 253 is the longest name DNS can carry (RFC 1035 section 2.3.4).
HOSTNAME_MAX_LENGTH = 253
HOSTNAME_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_HOSTNAME = re.compile(HOSTNAME_PATTERN)

# Label keys and values follow Kubernetes: `[prefix/]name`, name and value at most 63
# characters of alphanumerics, '-', '_' and '.', starting and ending alphanumeric.
LABEL_NAME_MAX_LENGTH = 63
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_LABEL_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

# An HTTP field name is an RFC 9110 token (section 5.1).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def check_dns_label(value: str) -> str:
    if len(value) > DNS_LABEL_MAX_LENGTH or not _DNS_LABEL.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use at most {DNS_LABEL_MAX_LENGTH} lowercase "
            "letters, digits and '-', starting and ending with a letter or digit"
        )
    return value


def _check_hostname(value: str) -> str:
    if len(value) > HOSTNAME_MAX_LENGTH or not _HOSTNAME.match(value):
        raise ValueError(
            f"{value!r} is not a valid host name: use lowercase DNS labels separated by "
            "dots, optionally starting with '*.' (e.g. 'reviews.example.com', '*.example.com')"
        )
    return value


def _check_label_key(value: str) -> str:
    prefix, slash, name = value.rpartition("/")
    valid_prefix = not slash or (
        len(prefix) <= HOSTNAME_MAX_LENGTH and _LABEL_PREFIX.fullmatch(prefix)
    )
    if not valid_prefix or len(name) > LABEL_NAME_MAX_LENGTH or not _LABEL_NAME.fullmatch(name):
        raise ValueError(
            f"{value!r} is not a valid label key: use an optional DNS prefix and '/', then at "
            f"most {LABEL_NAME_MAX_LENGTH} letters, digits, '-', '_' or '.' starting and "
            "ending with a letter or digit (e.g. 'app', 'example.com/tier')"
        )
    return value


def _check_label_value(value: str) -> str:
    if value and (len(value) > LABEL_NAME_MAX_LENGTH or not _LABEL_NAME.fullmatch(value)):
        raise ValueError(
            f"{value!r} is not a valid label value: use at most {LABEL_NAME_MAX_LENGTH} "
            "letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        )
    return value


def check_header_name(value: str) -> str:
    if not _HEADER_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid HTTP header name: use letters, digits and '-' "
            "(any RFC 9110 token character)"
        )
    return value


type DnsLabel = Annotated[
    str,
    AfterValidator(check_dns_label),
    WithJsonSchema(
        {"type": "string", "pattern": DNS_LABEL_PATTERN, "maxLength": DNS_LABEL_MAX_LENGTH}
    ),
]
"""A resource name or namespace: an RFC 1123 label."""

type Hostname = Annotated[
    str,
    AfterValidator(_check_hostname),
    WithJsonSchema(
        {"type": "string", "pattern": HOSTNAME_PATTERN, "maxLength": HOSTNAME_MAX_LENGTH}
    ),
]
"""A DNS host name, optionally with a leading `*.` wildcard."""

type LabelKey = Annotated[
    str,
    AfterValidator(_check_label_key),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
            r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
        }
    ),
]
type LabelValue = Annotated[
    str,
    AfterValidator(_check_label_value),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$",
            "maxLength": LABEL_NAME_MAX_LENGTH,
        }
    ),
]
type Labels = dict[LabelKey, LabelValue]
"""Kubernetes-style labels: what selectors match."""

type HeaderName = Annotated[
    str,
    AfterValidator(check_header_name),
    WithJsonSchema({"type": "string", "pattern": r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"}),
]


def _check_header_value(value: str) -> str:
    # CR, LF or NUL in a value would let a route inject headers or split the message
    # (RFC 9110 section 5.5 forbids them).
    if any(char in value for char in "\r\n\0"):
        raise ValueError(f"{value!r} is not a valid HTTP header value: remove CR, LF and NUL")
    return value


type HeaderValue = Annotated[str, AfterValidator(_check_header_value)]

# --- numbers -------------------------------------------------------------------------------

type PortNumber = Annotated[int, Field(ge=1, le=65535)]
type Percentage = Annotated[float, Field(ge=0, le=100)]
"""A share of requests, 0 to 100 (YAML integers are accepted)."""
type HttpStatus = Annotated[int, Field(ge=100, le=599)]

# --- addresses -----------------------------------------------------------------------------


def _check_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(
            f"{value!r} is not an IP address: write an IPv4 ('10.0.0.7') or IPv6 ('fd00::7') "
            "address without a port or prefix length"
        ) from None


def _check_ipv4(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(
            f"{value!r} is not an IPv4 address: write four dot-separated numbers, e.g. "
            "'10.96.0.10', without a port or prefix length"
        ) from None


def check_cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError as error:
        hint = ""
        try:
            network = ipaddress.ip_network(value, strict=False)
        except ValueError:
            pass
        else:
            hint = f"; did you mean {str(network)!r}?"
        raise ValueError(
            f"{value!r} is not a valid IP block ({error}): write an address ('10.1.2.3') "
            f"or a network in CIDR notation ('10.1.0.0/16'){hint}"
        ) from None
    return value


type IPAddress = Annotated[
    str,
    AfterValidator(_check_ip),
    WithJsonSchema(
        {"anyOf": [{"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}]}
    ),
]
type IPv4Address = Annotated[
    str, AfterValidator(_check_ipv4), WithJsonSchema({"type": "string", "format": "ipv4"})
]
type IPBlock = Annotated[
    str,
    AfterValidator(check_cidr),
    WithJsonSchema({"type": "string", "description": "an IP address or a CIDR block"}),
]
"""An IP address or a network in CIDR notation, with no host bits set."""

# --- durations -----------------------------------------------------------------------------

DURATION_PATTERN = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)$"
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_HELP = "write a positive number with a unit: '250ms', '1.5s', '5s', '1m' or '1h'"


def parse_duration(value: object) -> float:
    """Seconds from a duration string such as "250ms", "1.5s", "1m" or "1h"."""
    if not isinstance(value, str):
        # A bare number would be ambiguous (seconds? milliseconds?), so we refuse it.
        raise ValueError(f"a duration needs a unit, got {value!r}: {_DURATION_HELP}")
    match = _DURATION.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a duration: {_DURATION_HELP}")
    number, unit = match.groups()
    # Milliseconds are divided rather than multiplied by 0.001, so that "250ms" is
    # exactly 0.25 and reads back as the same string.
    seconds = float(number) / 1000 if unit == "ms" else float(number) * _SECONDS_PER_UNIT[unit]
    if seconds <= 0 or not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a usable duration: {_DURATION_HELP}")
    return seconds


def format_duration(seconds: float) -> str:
    """The string form of a duration: the inverse of `parse_duration`, exactly."""
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    milliseconds = round(seconds * 1000)
    if seconds < 1 and milliseconds > 0 and milliseconds / 1000 == seconds:
        return f"{milliseconds}ms"
    # repr() is the shortest text that reads back as the same float; Decimal writes it
    # without an exponent, which the duration syntax does not have.
    return f"{Decimal(repr(seconds)):f}s"


type Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN}),
]
"""A positive duration, written "250ms", "1.5s", "5s", "1m" or "1h"; held as float seconds."""
