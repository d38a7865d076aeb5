"""The AES S-box against FIPS-197 (figure 7 and figure 14), and the fast 16-bit path against the byte table."""

import numpy as np
import pytest

from modelshield.lock.sbox import INV_SBOX, INV_SBOX16, SBOX, SBOX16, gf_mul, inv_sub_bytes, sub_bytes, sub_bytes_into

# FIPS-197 figure 7, rows 0, 5 and f; figure 14 (inverse), rows 0 and f.
SBOX_ROW_0 = "637c777bf26b6fc53001672bfed7ab76"
SBOX_ROW_5 = "53d100ed20fcb15b6acbbe394a4c58cf"
SBOX_ROW_F = "8ca1890dbfe6426841992d0fb054bb16"
INV_ROW_0 = "52096ad53036a538bf40a39e81f3d7fb"
INV_ROW_F = "172b047eba77d626e169146355210c7d"


@pytest.mark.parametrize(("table", "row", "expected"), [
    (SBOX, 0x0, SBOX_ROW_0), (SBOX, 0x5, SBOX_ROW_5), (SBOX, 0xF, SBOX_ROW_F),
    (INV_SBOX, 0x0, INV_ROW_0), (INV_SBOX, 0xF, INV_ROW_F),
])
def test_fips197_rows(table, row, expected) -> None:
    assert bytes(table[16 * row : 16 * row + 16]).hex() == expected


def test_fips197_single_values() -> None:
    # Section 5.1.1: S(0x53) = 0xed; and the well-known corner values.
    assert (SBOX[0x53], SBOX[0x00], SBOX[0xFF], INV_SBOX[0xED], INV_SBOX[0x00]) == (0xED, 0x63, 0x16, 0x53, 0x52)


def test_gf_mul_fips197_examples() -> None:
    # Section 4.2 and 4.2.1: {57}*{83} = {c1}, {57}*{13} = {fe}.
    assert gf_mul(0x57, 0x83) == 0xC1
    assert gf_mul(0x57, 0x13) == 0xFE


def test_sbox_is_a_permutation_with_no_fixed_points() -> None:
    values = np.arange(256, dtype=np.uint8)
    assert sorted(SBOX.tolist()) == list(range(256))
    assert (INV_SBOX[SBOX] == values).all() and (SBOX[INV_SBOX] == values).all()
    assert not (SBOX == values).any() and not (SBOX == (values ^ 0xFF)).any()


def test_sixteen_bit_tables_agree_with_byte_tables_everywhere() -> None:
    words = np.arange(1 << 16, dtype=np.uint16)
    as_bytes = words.view(np.uint8)
    assert (SBOX16.view(np.uint8) == SBOX[as_bytes]).all()
    assert (INV_SBOX16.view(np.uint8) == INV_SBOX[as_bytes]).all()


@pytest.mark.parametrize("n", [0, 1, 2, 7, 8, 1001])
@pytest.mark.parametrize("inverse", [False, True])
def test_fast_path_equals_reference_for_any_length(n, inverse) -> None:
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8)
    out = np.empty_like(data)
    sub_bytes_into(data, out, inverse=inverse)
    assert (out == (inv_sub_bytes(data) if inverse else sub_bytes(data))).all()


def test_fast_path_in_place() -> None:
    data = np.arange(256, dtype=np.uint8)
    sub_bytes_into(data, data)
    assert (data == SBOX).all()
