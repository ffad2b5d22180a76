"""Tokenizers: round trips, the text8 alphabet, fitting, unknown characters, bytes."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import ddkit
from ddkit.contrib.tokenizers import TEXT8_ALPHABET, ByteTokenizer, CharTokenizer, id_dtype


def test_text8_preset_is_the_27_symbols_in_order():
    tok = ddkit.build("tokenizer", {"name": "char", "preset": "text8"})
    assert tok.vocab_size == 27 and tok.alphabet == "abcdefghijklmnopqrstuvwxyz "
    assert tok.encode("az ").tolist() == [0, 25, 26]
    assert tok.decode(torch.tensor([7, 8, 26])) == "hi "
    with pytest.raises(ValueError, match="not in the tokenizer's alphabet"):
        tok.encode("Hello")


def test_fit_collects_sorted_alphabet():
    tok = CharTokenizer()
    assert tok.needs_fit
    with pytest.raises(ValueError, match="no alphabet yet"):
        tok.vocab_size
    tok.fit("banana\n")
    assert tok.alphabet == "\nabn" and tok.vocab_size == 4 and not tok.needs_fit
    assert tok.spec() == {"name": "char", "alphabet": "\nabn", "unknown": "error"}
    rebuilt = ddkit.build("tokenizer", tok.spec())
    assert rebuilt.encode("nab").tolist() == tok.encode("nab").tolist() == [3, 1, 2]


def test_unknown_characters():
    skip = CharTokenizer(alphabet="ab", unknown="skip")
    assert skip.decode(skip.encode("axbyb")) == "abb"
    replace = CharTokenizer(alphabet="ab?", unknown="replace", replacement="?")
    assert replace.decode(replace.encode("axb")) == "a?b"
    with pytest.raises(ValueError, match="replacement"):
        CharTokenizer(alphabet="ab", unknown="replace", replacement="?")
    with pytest.raises(ValueError, match="repeats"):
        CharTokenizer(alphabet="aba")


def test_param_validation_through_registry():
    with pytest.raises(ddkit.ParameterError, match="either alphabet or preset"):
        ddkit.build("tokenizer", {"name": "char", "alphabet": "ab", "preset": "text8"})
    with pytest.raises(ddkit.ParameterError, match="preset"):
        ddkit.build("tokenizer", {"name": "char", "preset": "text9"})


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_char_round_trip(text):
    tok = CharTokenizer().fit(text + "x")
    ids = tok.encode(text)
    assert ids.numel() == len(text) and tok.decode(ids) == text
    assert all(0 <= i < tok.vocab_size for i in ids.tolist())


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_byte_round_trip(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids.dtype == torch.uint8 and ids.numel() == len(text.encode("utf-8"))
    assert tok.decode(ids) == text


def test_byte_decoding_of_a_cut_character_is_replaced():
    tok = ByteTokenizer()
    ids = tok.encode("é")  # two bytes
    assert tok.decode(ids[:1]) == "\ufffd"
    assert tok.token_text(ord("a")) == "a" and tok.token_text(200) == "\ufffd"


def test_large_alphabets_use_wider_ids():
    assert id_dtype(27) == torch.uint8 and id_dtype(300) == torch.int16 and id_dtype(70000) == torch.int32
    alphabet = "".join(chr(0x4E00 + i) for i in range(300))
    tok = CharTokenizer(alphabet=alphabet)
    ids = tok.encode(alphabet[::-1])
    assert ids.dtype == torch.int16 and ids.tolist() == list(range(299, -1, -1))


def test_text8_alphabet_constant():
    assert TEXT8_ALPHABET == "abcdefghijklmnopqrstuvwxyz " and len(set(TEXT8_ALPHABET)) == 27
