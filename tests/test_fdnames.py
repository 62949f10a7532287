"""LISTEN_FDNAMES: the encoding zocket writes and listen_fds_with_names() reads."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zocket.fdnames import (
    MAX_NAME_LENGTH,
    UNKNOWN,
    decode_fdnames,
    encode_fdnames,
    is_valid_fdname,
)

# systemd's rule: printable ASCII without ':', 1 to 255 characters.
PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != ":")
names = st.text(alphabet=PRINTABLE, min_size=1, max_size=MAX_NAME_LENGTH)


@given(st.lists(names, max_size=20))
def test_round_trip(values: list[str]) -> None:
    encoded = encode_fdnames(values)
    assert decode_fdnames(encoded, len(values)) == values
    assert encoded.count(":") == max(len(values) - 1, 0)


@given(names)
def test_valid_names_are_valid(name: str) -> None:
    assert is_valid_fdname(name)


@given(
    st.one_of(
        st.just(""),
        st.text(min_size=MAX_NAME_LENGTH + 1, max_size=MAX_NAME_LENGTH + 5, alphabet="a"),
        st.builds(lambda a, b: a + ":" + b, names, names),
        st.builds(lambda a, c: a + c, names, st.sampled_from(["\n", "\t", "\x7f", "é", "\x00"])),
    )
)
def test_invalid_names_are_refused(name: str) -> None:
    assert not is_valid_fdname(name)
    with pytest.raises(ValueError, match="invalid fd name"):
        encode_fdnames(["http", name])


@given(st.lists(names, max_size=10), st.integers(min_value=0, max_value=15))
def test_decode_pads_or_truncates_to_the_count(values: list[str], count: int) -> None:
    decoded = decode_fdnames(encode_fdnames(values) if values else None, count)
    assert len(decoded) == count
    assert decoded[: min(count, len(values))] == values[:count]
    assert all(name == UNKNOWN for name in decoded[len(values) :])


def test_empty_entries_read_as_unknown() -> None:
    assert decode_fdnames("web::admin", 3) == ["web", UNKNOWN, "admin"]
