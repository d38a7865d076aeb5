"""Key schedules: FIPS-197 appendix A.3 (AES-256 key expansion), AES-CTR against AES-ECB, random access."""

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from modelshield.lock.schedule import (
    CtrKeystream,
    ExpansionKeystream,
    ctr_round_key,
    expansion_rewind,
    expansion_words,
    mac_key,
    make_keystreams,
)

A3_KEY = bytes.fromhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
A3_WORDS = {8: 0x9BA35411, 9: 0x8E6925AF, 10: 0xA51A8B5F, 11: 0x2067FCDE, 12: 0xA8B09C1A, 16: 0xD59AECB8,
            20: 0xB5A9328A, 56: 0xFE4890D1, 57: 0xE6188D0B, 58: 0x046DF344, 59: 0x706C631E}


def test_expansion_matches_fips197_appendix_a3() -> None:
    words = expansion_words(A3_KEY, 0, 60)
    assert words[:8] == [int.from_bytes(A3_KEY[i : i + 4], "big") for i in range(0, 32, 4)]
    for index, value in A3_WORDS.items():
        assert words[index] == value, index


def test_expansion_keystream_is_sequential_words_big_endian() -> None:
    words = expansion_words(A3_KEY, 0, 200)
    stream = ExpansionKeystream(A3_KEY, first_word=8)
    expected = b"".join(w.to_bytes(4, "big") for w in words[8:200])
    assert stream.keystream(0, 64) == expected[:64]
    assert stream.keystream(100, 37) == expected[100:137]  # forward skip, unaligned
    assert stream.keystream(6, 10) == expected[6:16]  # going back restarts the recurrence
    assert stream.keystream(700, 68) == expected[700:768]


def test_expansion_rewind_recovers_the_key_from_any_eight_words() -> None:
    for start in (0, 1, 8, 13, 59, 1000):
        assert expansion_rewind(expansion_words(A3_KEY, start, 8), start) == A3_KEY
    with pytest.raises(ValueError):
        expansion_rewind([1, 2, 3], 5)


def test_ctr_keystream_is_aes_of_the_block_counter() -> None:
    key = bytes(range(32))
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    blocks = b"".join(j.to_bytes(16, "big") for j in range(300))
    expected = ecb.update(blocks) + ecb.finalize()
    stream = CtrKeystream(key)
    out = bytearray(4800 + 15)
    stream.xor_into(memoryview(bytes(4800)), memoryview(out), 0)
    assert bytes(out[:4800]) == expected
    # random access at a 16-aligned offset, and a partial-block continuation
    part = bytearray(100 + 15)
    stream.xor_into(memoryview(bytes(100)), memoryview(part), 1600)
    assert bytes(part[:100]) == expected[1600:1700]
    stream.xor_into(memoryview(bytes(100)), memoryview(part), 1712)
    assert bytes(part[:100]) == expected[1712:1812]
    with pytest.raises(ValueError):
        stream.xor_into(memoryview(bytes(4)), memoryview(bytearray(32)), 3)


def test_subkeys_are_separated_by_round_nonce_and_purpose() -> None:
    master, nonce = bytes(32), bytes(16)
    keys = {ctr_round_key(master, nonce, 0), ctr_round_key(master, nonce, 1), ctr_round_key(master, b"\x01" * 16, 0),
            mac_key(master, nonce), master}
    assert len(keys) == 5


def test_make_keystreams_rounds_use_distinct_key_material() -> None:
    for scheme in ("ctr", "aes-expansion"):
        streams = make_keystreams(scheme, A3_KEY, bytes(16), 3, payload_bytes=64)
        outs = []
        for s in streams:
            buf = bytearray(64 + 15)
            s.xor_into(memoryview(bytes(64)), memoryview(buf), 0)
            outs.append(bytes(buf[:64]))
        assert len(set(outs)) == 3, scheme
    # aes-expansion round r starts at word 8 + r * ceil(L / 4)
    r1 = make_keystreams("aes-expansion", A3_KEY, bytes(16), 2, payload_bytes=64)[1]
    words = expansion_words(A3_KEY, 24, 16)
    assert r1.keystream(0, 64) == np.array(words, dtype=">u4").tobytes()
