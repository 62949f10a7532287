"""Tests for zocket.addresses: every form, every error, and str/parse round trips."""

from __future__ import annotations

import ipaddress
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zocket.addresses import (
    DEFAULT_HOST,
    Address,
    AddressError,
    InetAddress,
    ListenSpec,
    UnixAddress,
    parse_address,
    parse_host,
    parse_listen,
    parse_port,
    url,
)

# No example database: the tests must not leave a .hypothesis directory behind.
fast = settings(max_examples=200, database=None)


def assert_one_line_naming(error: pytest.ExceptionInfo[AddressError], *parts: str) -> str:
    message = str(error.value)
    assert message, "empty message"
    assert len(message.splitlines()) == 1, f"not one line: {message!r}"
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


# --- strategies -------------------------------------------------------------

ports = st.integers(0, 65535)
ipv4_hosts = st.ip_addresses(v=4).map(str)
scopes = st.one_of(
    st.from_regex(r"[a-z][a-z0-9._-]{0,14}", fullmatch=True),
    st.integers(1, 2**32 - 1).map(str),
)
ipv6_plain = st.ip_addresses(v=6)
ipv6_hosts = st.one_of(
    ipv6_plain.map(str),  # compressed, e.g. "::1", "fe80::1"
    ipv6_plain.map(lambda a: a.exploded),  # "0000:...:0001": normalised on construction
    ipv6_plain.map(lambda a: a.exploded.upper()),
    st.tuples(ipv6_plain, scopes).map(lambda t: f"{t[0]}%{t[1]}"),
)
_label = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# The last label starts with a letter: an all-numeric or 0x last label reads as IPv4.
_last_label = r"[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
dns_hosts = (
    st.tuples(
        st.lists(st.from_regex(_label, fullmatch=True), max_size=3),
        st.from_regex(_last_label, fullmatch=True),
        st.booleans(),
    )
    .map(lambda t: ".".join([*t[0], t[1]]) + ("." if t[2] else ""))
    .filter(lambda h: h.lower() != "unix" and len(h.rstrip(".")) <= 253)
)
inet_addresses = st.builds(InetAddress, st.one_of(ipv4_hosts, ipv6_hosts, dns_hosts), ports)


def _fits(path: str) -> bool:
    return len(os.fsencode(path)) <= 107


# Printable text: no control characters (so no NUL), no surrogates.
_path_chars = st.characters(blacklist_categories=("Cc", "Cs"))
unix_paths = (
    st.text(_path_chars, min_size=1, max_size=40)
    .filter(lambda p: not p.startswith("@"))
    .filter(_fits)
)
abstract_names = st.text(_path_chars, min_size=1, max_size=40).filter(_fits)
unix_addresses = st.one_of(
    st.builds(UnixAddress, unix_paths),
    st.builds(UnixAddress, abstract_names, st.just(True)),
)
addresses = st.one_of(inet_addresses, unix_addresses)
names = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters=":=/[@"),
    min_size=1,
    max_size=30,
)
specs = st.builds(ListenSpec, addresses, st.none() | names)


# --- round trips ------------------------------------------------------------


@fast
@given(specs)
def test_listen_spec_round_trip(spec: ListenSpec) -> None:
    text = str(spec)
    parsed = parse_listen(text)
    assert parsed == spec
    assert str(parsed) == text


@fast
@given(addresses)
def test_address_round_trip(address: Address) -> None:
    assert parse_address(str(address)) == address


@fast
@given(ipv6_plain)
def test_ipv6_normalised_to_compressed_form(address: ipaddress.IPv6Address) -> None:
    compressed = str(address)
    for form in (address.exploded, address.exploded.upper(), f"[{address.exploded}]"):
        assert parse_host(form) == compressed
    assert InetAddress(address.exploded, 80) == InetAddress(compressed, 80)
    assert str(InetAddress(address.exploded, 80)) == f"[{compressed}]:80"


@fast
@given(ipv4_hosts, ports)
def test_ipv4_forms(host: str, port: int) -> None:
    assert parse_address(f"{host}:{port}") == InetAddress(host, port)
    assert not InetAddress(host, port).is_ipv6
    assert url(InetAddress(host, port)) == f"http://{host}:{port}"


@fast
@given(dns_hosts)
def test_dns_names_lower_cased(host: str) -> None:
    assert parse_host(host) == host.lower()
    assert parse_host(host.upper()) == host.lower()


_fuzz_text = st.one_of(
    st.text(),
    st.text(st.sampled_from(list("[]:@=/%.0123456789abefx-unix ")), max_size=30),
    st.tuples(st.sampled_from(["unix:", "unix:@", "[", "web=", ""]), st.text(max_size=20)).map(
        "".join
    ),
)


@fast
@given(_fuzz_text)
def test_any_text_parses_and_round_trips_or_fails_cleanly(text: str) -> None:
    try:
        spec = parse_listen(text)
    except AddressError as error:
        message = str(error)
        assert message and len(message.splitlines()) == 1, repr(message)
    else:
        assert parse_listen(str(spec)) == spec


# --- parse_port -------------------------------------------------------------


def test_parse_port_accepts_every_port() -> None:
    for port in range(65536):
        assert parse_port(str(port)) == port


@pytest.mark.parametrize(("text", "port"), [("0", 0), ("00080", 80), ("065535", 65535)])
def test_parse_port_leading_zeros(text: str, port: int) -> None:
    assert parse_port(text) == port


@fast
@given(st.integers(min_value=65536))
def test_parse_port_out_of_range(port: int) -> None:
    with pytest.raises(AddressError) as error:
        parse_port(str(port))
    assert_one_line_naming(error, f"port out of range: {port} (0-65535)")


def test_parse_port_huge_number_is_out_of_range_not_a_crash() -> None:
    digits = "9" * 10_000  # beyond int()'s default digit limit
    with pytest.raises(AddressError) as error:
        parse_port(digits)
    assert_one_line_naming(error, "port out of range", digits)


@fast
@given(st.text().filter(lambda s: not (s.isascii() and s.isdigit())))
def test_parse_port_rejects_non_digits(text: str) -> None:
    with pytest.raises(AddressError) as error:
        parse_port(text)
    assert_one_line_naming(error, f"invalid port: {text!r}")


@pytest.mark.parametrize(
    "text",
    ["", "abc", "-1", "+80", " 80", "80 ", "80\n", "8_0", "0x50", "٨٠", "８０", "80.0", "1e3"],
)
def test_parse_port_rejects_what_int_would_take(text: str) -> None:
    with pytest.raises(AddressError) as error:
        parse_port(text)
    assert_one_line_naming(error, "invalid port", repr(text))


# --- parse_address: accepted forms ------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8000", InetAddress("127.0.0.1", 8000)),
        ("0.0.0.0:0", InetAddress("0.0.0.0", 0)),
        ("[::1]:8000", InetAddress("::1", 8000)),
        ("[::]:80", InetAddress("::", 80)),
        ("[FE80:0:0::1]:80", InetAddress("fe80::1", 80)),
        ("[fe80::1%eth0]:80", InetAddress("fe80::1%eth0", 80)),
        ("[fe80::1%2]:80", InetAddress("fe80::1%2", 80)),
        ("[::ffff:1.2.3.4]:80", InetAddress("::ffff:102:304", 80)),
        ("localhost:8000", InetAddress("localhost", 8000)),
        ("Example.COM.:443", InetAddress("example.com.", 443)),
        ("a-b.c0:1", InetAddress("a-b.c0", 1)),
        ("unix.:80", InetAddress("unix.", 80)),
        (":8000", InetAddress(DEFAULT_HOST, 8000)),
        ("8000", InetAddress(DEFAULT_HOST, 8000)),
        ("0", InetAddress(DEFAULT_HOST, 0)),
        ("unix:/run/app.sock", UnixAddress("/run/app.sock")),
        ("unix:run/app.sock", UnixAddress("run/app.sock")),
        ("unix:./@odd", UnixAddress("./@odd")),
        ("unix:8000", UnixAddress("8000")),
        ("unix:/tmp/a=b.sock", UnixAddress("/tmp/a=b.sock")),
        ("unix:/tmp/with space", UnixAddress("/tmp/with space")),
        ("unix:@myapp", UnixAddress("myapp", abstract=True)),
        ("unix:@@x", UnixAddress("@x", abstract=True)),
        ("unix:@/a:b", UnixAddress("/a:b", abstract=True)),
    ],
)
def test_parse_address_forms(text: str, expected: Address) -> None:
    assert parse_address(text) == expected


def test_default_host_applies_to_port_only_forms() -> None:
    assert parse_address(":80", default_host="::1") == InetAddress("::1", 80)
    assert parse_address("80", default_host="0.0.0.0") == InetAddress("0.0.0.0", 80)
    assert parse_address("localhost:80", default_host="::1") == InetAddress("localhost", 80)
    assert parse_listen("web=:80", default_host="[::]") == ListenSpec(InetAddress("::", 80), "web")


def test_unix_path_with_escaped_bytes_is_accepted() -> None:
    # argv decodes undecodable bytes with surrogateescape; those are real paths.
    assert parse_address("unix:/tmp/\udcff") == UnixAddress("/tmp/\udcff")


# --- parse_address: errors --------------------------------------------------

IPV6_HINT = "put an IPv6 address in brackets, e.g. [::1]:8000"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:70000", "port out of range: 70000 (0-65535)"),
        ("127.0.0.1:abc", "invalid port: 'abc'"),
        ("127.0.0.1:", "invalid port: ''"),
        ("localhost:-1", "invalid port: '-1'"),
        ("70000", "port out of range: 70000 (0-65535)"),
        (":0x50", "invalid port: '0x50'"),
        ("x::1:80", f"malformed address 'x::1:80': {IPV6_HINT}"),
        ("::1:8000", f"malformed address '::1:8000': {IPV6_HINT}"),
        ("::1", f"malformed address '::1': {IPV6_HINT}"),
        ("fe80::1%eth0", f"malformed address 'fe80::1%eth0': {IPV6_HINT}"),
        ("[::1]", "missing port in address '[::1]'"),
        ("[::1", "malformed address '[::1': missing ']'"),
        ("[::1]8000", "malformed address '[::1]8000'"),
        ("[::1]:", "invalid port: ''"),
        ("[::1]:99999", "port out of range: 99999 (0-65535)"),
        ("[1.2.3.4]:80", "invalid IPv6 address: '[1.2.3.4]'"),
        ("[localhost]:80", "invalid IPv6 address: '[localhost]'"),
        ("[::g]:80", "invalid IPv6 address: '[::g]'"),
        ("[fe80::1%]:80", "invalid IPv6 address: '[fe80::1%]'"),
        ("[fe80::1%a b]:80", "invalid IPv6 scope 'a b'"),
        ("[fe80::1%averyveryverylongname]:80", "invalid IPv6 scope 'averyveryverylongname'"),
        ("localhost", "missing port in address 'localhost'"),
        ("1.2.3.4", "missing port in address '1.2.3.4'"),
        ("", "empty address: ''"),
        ("no way", "malformed address 'no way'"),
        ("unix:", "empty unix socket path: 'unix:'"),
        ("unix:@", "empty abstract socket name: 'unix:@'"),
        ("unix:/a\0b", r"NUL character in unix socket path: 'unix:/a\x00b'"),
        ("unix:@a\0b", r"NUL character in abstract socket name: 'unix:@a\x00b'"),
        ("unix:/" + "a" * 107, "unix socket path too long: 'unix:/" + "a" * 107 + "' (108 bytes"),
        ("unix:@" + "a" * 108, "abstract socket name too long"),
        ("unix:/tmp/\ud800", r"unix socket path not encodable to bytes: 'unix:/tmp/\ud800'"),
        (":80\n", r"invalid port: '80\n'"),
        ("exa mple:80", "invalid host name: 'exa mple'"),
        ("-bad.com:80", "invalid host name: '-bad.com'"),
        ("bad-.com:80", "invalid host name: 'bad-.com'"),
        ("a..b:80", "invalid host name: 'a..b'"),
        (".:80", "invalid host name: '.'"),
        ("under_score:80", "invalid host name: 'under_score'"),
        ("héllo:80", "invalid host name: 'héllo'"),
        ("a\nb:80", r"invalid host name: 'a\nb'"),
        ("a" * 64 + ".com:80", "invalid host name: '" + "a" * 64 + ".com'"),
        ("::1]:80", f"malformed address '::1]:80': {IPV6_HINT}"),
        ("a]:80", "unbalanced brackets in host 'a]'"),
        ("127.1:80", "ambiguous host '127.1'"),
        ("1.2.3.04:80", "ambiguous host '1.2.3.04'"),
        ("0x7f000001:80", "ambiguous host '0x7f000001'"),
        ("12345:80", "ambiguous host '12345'"),
        ("UNIX:80", "ambiguous host 'UNIX'"),
    ],
)
def test_parse_address_errors(text: str, expected: str) -> None:
    with pytest.raises(AddressError) as error:
        parse_address(text)
    assert_one_line_naming(error, expected)


def test_host_length_limits() -> None:
    label = "a" * 63
    longest = ".".join([label, label, label, "a" * 61])  # 253 characters
    assert len(longest) == 253
    assert parse_host(longest) == longest
    assert parse_host(longest + ".") == longest + "."
    with pytest.raises(AddressError) as error:
        parse_host(longest + "a")
    assert_one_line_naming(error, "invalid host name", longest + "a")
    with pytest.raises(AddressError) as error:
        parse_host("")
    assert_one_line_naming(error, "empty host")


def test_address_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        parse_address("nonsense")


# --- parse_listen -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("web=127.0.0.1:80", ListenSpec(InetAddress("127.0.0.1", 80), "web")),
        ("admin=unix:@ctl", ListenSpec(UnixAddress("ctl", abstract=True), "admin")),
        ("api v2=[::1]:80", ListenSpec(InetAddress("::1", 80), "api v2")),
        ("x=8000", ListenSpec(InetAddress(DEFAULT_HOST, 8000), "x")),
        ("unix:/tmp/a=b.sock", ListenSpec(UnixAddress("/tmp/a=b.sock"))),
        ("unix:@a=b", ListenSpec(UnixAddress("a=b", abstract=True))),
        ("s=unix:/tmp/a=b.sock", ListenSpec(UnixAddress("/tmp/a=b.sock"), "s")),
        ("127.0.0.1:80", ListenSpec(InetAddress("127.0.0.1", 80))),
        ("[::1]:80", ListenSpec(InetAddress("::1", 80))),
    ],
)
def test_parse_listen_forms(text: str, expected: ListenSpec) -> None:
    assert parse_listen(text) == expected
    assert parse_listen(str(expected)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("=127.0.0.1:80", "invalid name '' in '=127.0.0.1:80'"),
        ("caf\u00e9=127.0.0.1:80", "invalid name 'café' in 'café=127.0.0.1:80'"),
        ("a\tb=:80", r"invalid name 'a\tb' in 'a\tb=:80'"),
        ("n" * 256 + "=:80", "invalid name '" + "n" * 256 + "'"),
        ("web=", "empty address: ''"),
        ("web=70000", "port out of range: 70000 (0-65535)"),
        ("a=b=unix:/x", "invalid host name: 'b=unix'"),
        ("web=::1:80", f"malformed address '::1:80': {IPV6_HINT}"),
    ],
)
def test_parse_listen_errors(text: str, expected: str) -> None:
    with pytest.raises(AddressError) as error:
        parse_listen(text)
    assert_one_line_naming(error, expected)


def test_longest_name_is_accepted() -> None:
    assert parse_listen("n" * 255 + "=:80").name == "n" * 255


# --- constructors -----------------------------------------------------------


@pytest.mark.parametrize("name", ["a:b", "a=b", "a/b", "[a", "a@b", "", "é", "a\nb"])
def test_listen_spec_rejects_names_that_would_not_parse_back(name: str) -> None:
    address = InetAddress("127.0.0.1", 80)
    with pytest.raises(AddressError) as error:
        ListenSpec(address, name)
    assert_one_line_naming(error, f"invalid name {name!r} in {f'{name}={address}'!r}")


@pytest.mark.parametrize("port", [-1, 65536, 70000])
def test_inet_address_rejects_bad_ports(port: int) -> None:
    with pytest.raises(AddressError) as error:
        InetAddress("127.0.0.1", port)
    assert_one_line_naming(error, f"port out of range: {port} (0-65535)")


def test_inet_address_rejects_non_int_ports() -> None:
    with pytest.raises(TypeError):
        InetAddress("127.0.0.1", True)
    with pytest.raises(TypeError):
        InetAddress("127.0.0.1", "80")  # type: ignore[arg-type]


def test_inet_address_normalises_host() -> None:
    assert InetAddress("[::1]", 80).host == "::1"
    assert InetAddress("LocalHost", 80) == InetAddress("localhost", 80)
    with pytest.raises(AddressError):
        InetAddress("not a host", 80)


def test_unix_address_rejects_at_sign_file_path() -> None:
    with pytest.raises(AddressError) as error:
        UnixAddress("@x")
    assert_one_line_naming(error, "'@x'", "'./@x'")
    with pytest.raises(AddressError) as error:
        UnixAddress("@x\n")
    assert_one_line_naming(error, r"'./@x\n'")


def test_values_are_frozen_and_hashable() -> None:
    spec = parse_listen("web=127.0.0.1:80")
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]
    assert len({spec, parse_listen("web=127.0.0.1:80"), parse_listen("127.0.0.1:80")}) == 2


# --- str, url, is_ipv6 ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (InetAddress("127.0.0.1", 8000), "127.0.0.1:8000"),
        (InetAddress("::1", 8000), "[::1]:8000"),
        (InetAddress("fe80::1%eth0", 8000), "[fe80::1%eth0]:8000"),
        (InetAddress("localhost", 8000), "localhost:8000"),
        (UnixAddress("/run/app.sock"), "unix:/run/app.sock"),
        (UnixAddress("myapp", abstract=True), "unix:@myapp"),
        (ListenSpec(InetAddress("127.0.0.1", 80), "web"), "web=127.0.0.1:80"),
        (ListenSpec(UnixAddress("/run/app.sock")), "unix:/run/app.sock"),
    ],
)
def test_str(value: object, text: str) -> None:
    assert str(value) == text


@pytest.mark.parametrize(
    ("address", "scheme", "expected"),
    [
        (InetAddress("127.0.0.1", 8000), "http", "http://127.0.0.1:8000"),
        (InetAddress("::1", 8000), "http", "http://[::1]:8000"),
        (InetAddress("fe80::1%eth0", 80), "http", "http://[fe80::1%25eth0]:80"),
        (InetAddress("example.com", 443), "https", "https://example.com:443"),
        (UnixAddress("/run/app.sock"), "http", "unix:/run/app.sock"),
        (UnixAddress("name", abstract=True), "http", "unix:@name"),
    ],
)
def test_url(address: Address, scheme: str, expected: str) -> None:
    assert url(address, scheme) == expected


def test_url_default_scheme_is_http() -> None:
    assert url(InetAddress("::1", 8000)) == "http://[::1]:8000"


@fast
@given(inet_addresses)
def test_is_ipv6_matches_ipaddress(address: InetAddress) -> None:
    try:
        expected = ipaddress.ip_address(address.host).version == 6
    except ValueError:
        expected = False
    assert address.is_ipv6 is expected
    assert str(address).startswith("[") is expected
