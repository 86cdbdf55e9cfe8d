# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""A compiled fast lane for the HTTP/1.1 heads a proxy sees most: one pass in C.

`http1.py` parses every head with llhttp and then reads the fields that decide the
framing in Python; that costs about 3.5 us for a small request and 7.5 us for a
response with five fields, half of what the sidecar spends per request. These two
functions take a whole head (first line to blank line) and either return what that
Python work would have found, or None: they only *accept* a strict subset of what
llhttp accepts, and decline everything else (HTTP/1.0, absolute-form targets, a
Transfer-Encoding other than chunked, Upgrade, Expect, any other hop-by-hop field,
an odd byte anywhere), which then takes the full path and gets its precise error or
its careful handling. So the fast lane can make a head cheaper, never accepted where
it was refused: `tests/unit/proxy/protocols/test_http1_head_scan.py` checks that the
two lanes agree on generated heads.

Returned tuples:
- request: (method, target, fields, host, content_length, connection)
- response: (status, reason, fields, content_length, chunked, connection)
where fields are (lowercased name, trimmed value) pairs in order, content_length is -1
when absent, and connection is 0 (absent), 1 (keep-alive) or 2 (close).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcmp

cdef unsigned char TCHAR[256]   # RFC 9110 token characters
cdef unsigned char VALUE[256]   # field value and reason phrase: HTAB, SP, VCHAR, obs-text
cdef unsigned char TARGET[256]  # origin-form: unreserved, sub-delims, ":@/?%"
cdef unsigned char LOWER[256]


cdef void _fill_tables():
    cdef int c
    for c in range(256):
        TCHAR[c] = 0
        VALUE[c] = 0
        TARGET[c] = 0
        LOWER[c] = c + 32 if 65 <= c <= 90 else c
    for c in b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ":
        TCHAR[c] = 1
    VALUE[9] = 1
    for c in range(32, 127):
        VALUE[c] = 1
    for c in range(128, 256):
        VALUE[c] = 1
    for c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/?%":
        TARGET[c] = 1


_fill_tables()

# What a field name means to the fast lane (names compared lowercased).
cdef enum:
    OTHER = 0
    HOST = 1
    CONTENT_LENGTH = 2
    TRANSFER_ENCODING = 3
    CONNECTION = 4
    DECLINE = 5  # a hop-by-hop field or one the full path must judge

cdef enum:
    KEEP_ALIVE = 1
    CLOSE = 2


cdef int _name_kind(const char* name, Py_ssize_t n) noexcept:
    if n == 2:
        return DECLINE if memcmp(name, b"te", 2) == 0 else OTHER
    if n == 4:
        return HOST if memcmp(name, b"host", 4) == 0 else OTHER
    if n == 6:
        return DECLINE if memcmp(name, b"expect", 6) == 0 else OTHER
    if n == 7:
        if memcmp(name, b"upgrade", 7) == 0 or memcmp(name, b"trailer", 7) == 0:
            return DECLINE
        return OTHER
    if n == 10:
        if memcmp(name, b"connection", 10) == 0:
            return CONNECTION
        return DECLINE if memcmp(name, b"keep-alive", 10) == 0 else OTHER
    if n == 14:
        return CONTENT_LENGTH if memcmp(name, b"content-length", 14) == 0 else OTHER
    if n == 16:
        return DECLINE if memcmp(name, b"proxy-connection", 16) == 0 else OTHER
    if n == 17:
        return TRANSFER_ENCODING if memcmp(name, b"transfer-encoding", 17) == 0 else OTHER
    if n == 18:
        return DECLINE if memcmp(name, b"proxy-authenticate", 18) == 0 else OTHER
    if n == 19:
        return DECLINE if memcmp(name, b"proxy-authorization", 19) == 0 else OTHER
    return OTHER


cdef bint _equals_lower(const unsigned char* p, Py_ssize_t n, const char* word, Py_ssize_t m) noexcept:
    cdef Py_ssize_t i
    if n != m:
        return False
    for i in range(n):
        if LOWER[p[i]] != <unsigned char>word[i]:
            return False
    return True


cdef struct Facts:
    int hosts
    Py_ssize_t host_start
    Py_ssize_t host_end
    int lengths
    long long length
    int codings
    int connections
    int connection


cdef object _fields(const unsigned char* p, Py_ssize_t size, Py_ssize_t pos, int max_fields, Facts* facts):
    """The field lines from `pos` to the blank line that ends the head of `size` bytes at
    `p`; None to decline."""
    cdef Py_ssize_t end = size - 2  # where the blank line starts
    cdef Py_ssize_t name_start, name_end, value_start, value_end, i
    cdef int count = 0
    cdef int kind
    cdef char lowered[64]
    cdef bytes name
    cdef long long length
    fields = []
    while pos < end:
        name_start = pos
        while TCHAR[p[pos]]:
            pos += 1
        name_end = pos
        if name_end == name_start or p[pos] != 58 or name_end - name_start > 64:  # ':'
            return None
        pos += 1
        while p[pos] == 32 or p[pos] == 9:
            pos += 1
        value_start = pos
        while VALUE[p[pos]]:
            pos += 1
        if p[pos] != 13 or p[pos + 1] != 10:  # a bare CR, a bare LF or a control byte
            return None
        value_end = pos
        pos += 2
        while value_end > value_start and (p[value_end - 1] == 32 or p[value_end - 1] == 9):
            value_end -= 1
        count += 1
        if count > max_fields:
            return None
        for i in range(name_end - name_start):
            lowered[i] = <char>LOWER[p[name_start + i]]
        kind = _name_kind(lowered, name_end - name_start)
        if kind == DECLINE:
            return None
        if kind == HOST:
            facts.hosts += 1
            facts.host_start = value_start
            facts.host_end = value_end
        elif kind == CONTENT_LENGTH:
            facts.lengths += 1
            if value_end == value_start or value_end - value_start > 18:
                return None
            length = 0
            for i in range(value_start, value_end):
                if p[i] < 48 or p[i] > 57:
                    return None
                length = length * 10 + (p[i] - 48)
            facts.length = length
        elif kind == TRANSFER_ENCODING:
            facts.codings += 1
            if not _equals_lower(p + value_start, value_end - value_start, b"chunked", 7):
                return None
        elif kind == CONNECTION:
            facts.connections += 1
            if _equals_lower(p + value_start, value_end - value_start, b"keep-alive", 10):
                facts.connection = KEEP_ALIVE
            elif _equals_lower(p + value_start, value_end - value_start, b"close", 5):
                facts.connection = CLOSE
            else:
                return None
        name = PyBytes_FromStringAndSize(lowered, name_end - name_start)
        fields.append((name, PyBytes_FromStringAndSize(<const char*>p + value_start, value_end - value_start)))
    if pos != end:
        return None
    if facts.lengths > 1 or facts.codings > 1 or facts.connections > 1:
        return None
    if facts.lengths and facts.codings:
        return None
    return fields


cdef inline bint _method_known(const unsigned char* p, Py_ssize_t n) noexcept:
    if n == 3:
        return memcmp(p, b"GET", 3) == 0 or memcmp(p, b"PUT", 3) == 0
    if n == 4:
        return memcmp(p, b"POST", 4) == 0 or memcmp(p, b"HEAD", 4) == 0
    if n == 5:
        return memcmp(p, b"PATCH", 5) == 0
    if n == 6:
        return memcmp(p, b"DELETE", 6) == 0
    if n == 7:
        return memcmp(p, b"OPTIONS", 7) == 0
    return False


def scan_request_head(bytes head, int max_fields, Py_ssize_t max_uri):
    """A whole request head (no empty lines before it) read in one pass, or None."""
    return _scan_request(<const unsigned char*>PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head), max_fields, max_uri)


cdef object _scan_request(const unsigned char* p, Py_ssize_t size, int max_fields, Py_ssize_t max_uri):
    """The request head of `size` bytes at `p` (ending with its blank line), or None."""
    cdef Py_ssize_t pos = 0, target_start, target_end
    cdef Facts facts
    if size < 4 or memcmp(p + size - 4, b"\r\n\r\n", 4) != 0:
        return None
    while 65 <= p[pos] <= 90:  # A-Z
        pos += 1
    if p[pos] != 32 or not _method_known(p, pos):
        return None
    method = PyBytes_FromStringAndSize(<const char*>p, pos)
    pos += 1
    target_start = pos
    if p[pos] != 47:  # '/': origin-form only
        return None
    while TARGET[p[pos]]:
        pos += 1
    target_end = pos
    if target_end - target_start > max_uri or p[pos] != 32:
        return None
    pos += 1
    if pos + 10 > size or memcmp(p + pos, b"HTTP/1.1\r\n", 10) != 0:
        return None
    pos += 10
    facts.hosts = facts.lengths = facts.codings = facts.connections = facts.connection = 0
    facts.length = -1
    facts.host_start = facts.host_end = 0
    fields = _fields(p, size, pos, max_fields, &facts)
    if fields is None or facts.hosts != 1 or facts.codings:
        return None
    target = PyBytes_FromStringAndSize(<const char*>p + target_start, target_end - target_start)
    host = PyBytes_FromStringAndSize(<const char*>p + facts.host_start, facts.host_end - facts.host_start)
    return method, target, fields, host, facts.length, facts.connection


def scan_response_head(bytes head, int max_fields):
    """A whole response head (no empty lines before it) read in one pass, or None.
    Interim (1xx) responses are declined."""
    return _scan_response(<const unsigned char*>PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head), max_fields)


cdef object _scan_response(const unsigned char* p, Py_ssize_t size, int max_fields):
    """The response head of `size` bytes at `p` (ending with its blank line), or None."""
    cdef Py_ssize_t pos, reason_start
    cdef int status
    cdef Facts facts
    if size < 16 or memcmp(p + size - 4, b"\r\n\r\n", 4) != 0:
        return None
    if memcmp(p, b"HTTP/1.1 ", 9) != 0:
        return None
    if not (48 <= p[9] <= 57 and 48 <= p[10] <= 57 and 48 <= p[11] <= 57):
        return None
    status = (p[9] - 48) * 100 + (p[10] - 48) * 10 + (p[11] - 48)
    if status < 200 or status > 599:
        return None
    pos = 12
    reason_start = 12
    if p[pos] == 32:
        pos += 1
        reason_start = pos
        while VALUE[p[pos]]:
            pos += 1
    if p[pos] != 13 or p[pos + 1] != 10:
        return None
    reason = PyBytes_FromStringAndSize(<const char*>p + reason_start, pos - reason_start)
    pos += 2
    facts.hosts = facts.lengths = facts.codings = facts.connections = facts.connection = 0
    facts.length = -1
    facts.host_start = facts.host_end = 0
    fields = _fields(p, size, pos, max_fields, &facts)
    if fields is None or facts.hosts:  # Host in a response: the full path judges it
        return None
    return status, reason, fields, facts.length, facts.codings == 1, facts.connection


# --- building the events ----------------------------------------------------------------------
#
# The parser's events are frozen dataclasses with slots: built from Python, each field
# costs a descriptor call (about 0.5 us for a request head's eleven). The lane's heads
# are built here instead: the object is allocated and its slots filled directly, at the
# offsets the classes' own member descriptors give. The result is the same object the
# constructor makes; the differential test compares every field of both.

from cpython.ref cimport Py_INCREF
from cpython.object cimport PyObject, PyTypeObject

cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member
    PyTypeObject PyMemberDescr_Type

cdef enum:
    MAX_FIELDS = 16
cdef enum:
    KINDS = 4
cdef Py_ssize_t _offsets[KINDS][MAX_FIELDS]
cdef Py_ssize_t _counts[KINDS]
cdef object _types = [None] * KINDS


def bind_event(int kind, type cls, tuple names):
    """Learn where `cls` (one of `KINDS` event kinds) keeps the fields `names`."""
    if not 0 <= kind < KINDS or len(names) > MAX_FIELDS:
        raise ValueError("bind_event: kind 0 to 3, at most 16 fields")
    for i, name in enumerate(names):
        descriptor = cls.__dict__[name]
        if type(descriptor) is not <type>&PyMemberDescr_Type:
            raise TypeError(f"{cls.__name__}.{name} is not a slot")
        _offsets[kind][i] = (<PyMemberDescrObject*>descriptor).d_member.offset
    _counts[kind] = len(names)
    _types[kind] = cls


def new_event(int kind, tuple values):
    """An instance of the class bound to `kind`, its fields set to `values`, in order."""
    return _make(kind, values)


cdef object _make(int kind, tuple values):
    if not 0 <= kind < KINDS or _types[kind] is None:
        raise ValueError(f"new_event: kind {kind} is not bound")
    cdef type cls = _types[kind]
    cdef Py_ssize_t i
    cdef PyObject** slot
    if len(values) != _counts[kind]:
        raise ValueError("new_event: one value per bound field")
    obj = cls.__new__(cls)
    for i in range(_counts[kind]):
        value = values[i]
        slot = <PyObject**>(<char*><PyObject*>obj + _offsets[kind][i])
        Py_INCREF(value)
        slot[0] = <PyObject*>value
    return obj


# --- one whole message in one read --------------------------------------------------------------
#
# Most reads on a keep-alive connection carry exactly one message: a GET's head, or a
# response head with its whole Content-Length body. These return that message's events
# in one call, deciding as the parser's Python does (`http1._MessageParser.feed`), or
# None for anything else, which then takes the parser's general path. The caller commits
# the parser's state (stopping after a message that closes, the response's request).

cdef enum:
    REQUEST = 0
    RESPONSE = 1
    DATA = 2
    END = 3


cdef extern from "string.h":
    void* memmem(const void* haystack, size_t haystacklen, const void* needle, size_t needlelen)

cdef object _NO_BODY = None
cdef object _EMPTY = None
cdef object _length_framing = None


def bind_framings(no_body, empty, length_framing):
    """The parser's shared framings (no body; Content-Length: 0) and its function that
    gives the framing of a positive length."""
    global _NO_BODY, _EMPTY, _length_framing
    _NO_BODY = no_body
    _EMPTY = empty
    _length_framing = length_framing


cdef Py_ssize_t _head_end(const unsigned char* p, Py_ssize_t size, Py_ssize_t max_head):
    """Where the head ends (just past its blank line), or -1."""
    cdef const unsigned char* found = <const unsigned char*>memmem(p, size, b"\r\n\r\n", 4)
    if found == NULL:
        return -1
    cdef Py_ssize_t stop = found - p + 4
    return stop if stop <= max_head else -1


cdef object _framing_of(long long length, Py_ssize_t rest, object body_limit):
    """The framing of a body of `length` that must be exactly the `rest` of the read."""
    if length != rest:
        return None
    if body_limit is not None and length > body_limit:
        return None
    if length == 0:
        return _EMPTY
    return _length_framing(length)


cdef list _events(object head_event, bytes data, Py_ssize_t stop, Py_ssize_t rest):
    if rest:
        body = PyBytes_FromStringAndSize(PyBytes_AS_STRING(data) + stop, rest)
        return [head_event, _make(DATA, (body,)), _make(END, ([],))]
    return [head_event, _make(END, ([],))]


def whole_request(bytes data, Py_ssize_t max_head, int max_fields, Py_ssize_t max_uri, object body_limit):
    """The events of `data` when it is exactly one request the lane takes; else None."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t stop = _head_end(p, size, max_head)
    if stop < 0:
        return None
    scanned = _scan_request(p, stop, max_fields, max_uri)
    if scanned is None:
        return None
    method, target, fields, host, length, connection = scanned
    cdef Py_ssize_t rest = size - stop
    if length < 0:
        if rest:
            return None  # pipelined bytes: the general path takes them in turn
        framing = _NO_BODY
    else:
        framing = _framing_of(length, rest, body_limit)
        if framing is None:
            return None
    keep_alive = connection != CLOSE
    head = data if rest == 0 else PyBytes_FromStringAndSize(<const char*>p, stop)
    event = _make(
        REQUEST,
        (method, target, b"1.1", fields, keep_alive, framing, False, None, host, head, keep_alive),
    )
    return _events(event, data, stop, rest)


def whole_response(bytes data, Py_ssize_t max_head, int max_fields, object body_limit):
    """The events of `data` when it is exactly one response the lane takes, framed by a
    Content-Length, to a request that is not HEAD or CONNECT (the caller checks that);
    else None."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t stop = _head_end(p, size, max_head)
    if stop < 0:
        return None
    scanned = _scan_response(p, stop, max_fields)
    if scanned is None:
        return None
    status, reason, fields, length, chunked, connection = scanned
    if status == 204 or status == 304 or chunked or length < 0:
        return None
    cdef Py_ssize_t rest = size - stop
    framing = _framing_of(length, rest, body_limit)
    if framing is None:
        return None
    keep_alive = connection != CLOSE
    head = data if rest == 0 else PyBytes_FromStringAndSize(<const char*>p, stop)
    event = _make(
        RESPONSE, (status, reason, b"1.1", fields, keep_alive, framing, False, head, keep_alive)
    )
    return _events(event, data, stop, rest)
