"""The bilingual glossary (book/glossary.py -> GLOSSARY.md): complete, consistent, current.

Each check on the real chapters has a twin fed crafted chapter text, which shows that the check fails when the
thing it guards is broken. When a real check fails, its message names the chapter file and line to fix.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from book import glossary as g

CHAPTERS = g.read_chapters(g.chapter_paths())
USES = g.extract_all(CHAPTERS)
MEANINGS = g.load_meanings()
ENTRIES = g.build(USES, MEANINGS)


def md(*lines: str) -> str:
    """A crafted chapter source: one markdown cell with these lines."""
    return "\n".join(["# %% [markdown]", *(f"# {line}" if line else "#" for line in lines), "", "# %%", "x = 1"])


def rows(markdown: str) -> dict[str, tuple[list[str], str]]:
    """GLOSSARY.md's table: term (case-folded, no abbreviation) -> (its Chinese names, the first chapter's stem)."""
    found = {}
    for line in markdown.splitlines():
        match = re.fullmatch(r"\| (.+?) \| (.+?) \| (.*?) \| \[.*\]\(chapters/(\w+)\.py\) \|", line)
        if match:
            term = re.sub(r" \([A-Z][A-Za-z0-9-]*\)$", "", match[1]).casefold()
            names = [re.sub(r" \(\d\d\)$", "", n) for n in match[2].split("; ")]
            found[term] = (names, match[4])
    return found


def not_in_glossary(uses: list[g.Use], markdown: str) -> list[str]:
    """Uses whose term is missing from the glossary table, or listed there with another Chinese name."""
    table = rows(markdown)
    problems = []
    for use in uses:
        term = g.resolve(use.english, MEANINGS).casefold()
        if term not in table:
            problems.append(f"{use.where}: {use.english} ({use.chinese}) is not in GLOSSARY.md")
        elif use.chinese not in table[term][0]:
            problems.append(f"{use.where}: {use.english} ({use.chinese}) is in GLOSSARY.md as {table[term][0]}")
    return problems


def wrong_first_chapters(uses: list[g.Use], markdown: str) -> list[str]:
    """Terms whose 'first used in' chapter differs from the lowest (chapter, line) among their uses."""
    first: dict[str, g.Use] = {}
    for use in uses:
        term = g.resolve(use.english, MEANINGS).casefold()
        if term not in first or (use.chapter, use.line) < (first[term].chapter, first[term].line):
            first[term] = use
    table = rows(markdown)
    return [f"{term}: GLOSSARY.md says {table[term][1]}, first used at {use.where}"
            for term, use in first.items() if term in table and table[term][1] != use.chapter]


def message(problems: list[str], fix: str) -> str:
    return f"{len(problems)} problem(s); {fix}:\n  " + "\n  ".join(problems)


# ---------------------------------------------------------------- the real chapters and GLOSSARY.md
def test_chapters_have_pairs_to_read():
    assert len(CHAPTERS) >= 8 and len(USES) >= 100


def test_every_pair_names_an_english_term():
    problems = g.unreadable(USES)
    assert not problems, message(problems, "add an OVERRIDES entry in book/glossary.py or reword the chapter")


def test_every_term_has_a_meaning():
    problems = g.missing_meanings(ENTRIES)
    assert not problems, message(problems, "add 'term<TAB>meaning' lines to book/glossary.tsv")


def test_glossary_md_is_what_the_script_generates_now():
    text, _, _ = g.generate(g.chapter_paths())
    assert g.OUTPUT.read_text(encoding="utf-8") == text, "GLOSSARY.md is stale: run python book/glossary.py"


def test_every_pair_is_in_the_glossary_with_its_chinese():
    problems = not_in_glossary(USES, g.OUTPUT.read_text(encoding="utf-8"))
    assert not problems, message(problems, "run python book/glossary.py")


def test_first_use_chapter_is_right():
    problems = wrong_first_chapters(USES, g.OUTPUT.read_text(encoding="utf-8"))
    assert not problems, message(problems, "run python book/glossary.py")


def test_each_term_has_one_chinese_name_across_chapters():
    problems = g.english_conflicts(ENTRIES)
    assert not problems, message(problems, "make the chapters agree on one Chinese name per term")


def test_each_chinese_name_stands_for_one_term():
    problems = g.chinese_conflicts(ENTRIES)
    assert not problems, message(problems, "make the chapters agree, or add the pair to ALIASES/SHARED_CHINESE "
                                           "in book/glossary.py if both English terms are right")


def test_no_known_wrong_translation():
    problems = g.wrong_translations(USES)
    assert not problems, message(problems, "fix the Chinese in the chapter (see KNOWN_WRONG in book/glossary.py)")


# ---------------------------------------------------------------- the extraction rule, on crafted text
@pytest.mark.parametrize("line, expected", [
    ("A **convolution (卷积)** slides.", ("convolution", "卷积", "")),
    ("the **Fréchet distance (弗雷歇距离)** between", ("Fréchet distance", "弗雷歇距离", "")),
    ("A **convolutional neural network (卷积神经网络, CNN)** sees.",
     ("convolutional neural network", "卷积神经网络", "CNN")),
    ("| gradient descent (GD, 批量梯度下降): whole set |", ("gradient descent", "批量梯度下降", "GD")),
    ("or mean (**average pooling, 平均池化**): it", ("average pooling", "平均池化", "")),
    ("today's optical character recognition (**OCR, 光学字符识别**) reads",
     ("optical character recognition", "光学字符识别", "OCR")),
    ("**Attention (注意力, chapter 08)** gets both", ("Attention", "注意力", "")),
    ("**Gated (门控) cells** fix it", ("Gated", "门控", "")),
    ('makes a model an "AI large model" (AI大模型) and', ("AI large model", "AI大模型", "")),
    ("the `kernel` (卷积核) of", ("kernel", "卷积核", "")),
    ("| one foundation model (基础模型), many tasks |", ("foundation model", "基础模型", "")),
    ("The ROC AUC (ROC曲线下面积) is", ("ROC AUC", "ROC曲线下面积", "")),
    ("rules on deep synthesis services (深度合成) and", ("deep synthesis", "深度合成", "")),  # OVERRIDES
])
def test_extraction_finds_the_english_term(line, expected):
    (use,) = g.extract("01_test", md("Some text.", line))
    assert (use.english, use.chinese, use.abbreviation) == expected
    assert use.line == 3  # line 1 is the cell marker, line 2 "Some text."


def test_extraction_joins_wrapped_lines_and_skips_code_and_non_chinese_parentheses():
    source = "\n".join([
        "# %% [markdown]",
        "# A **multilayer perceptron (多层感知机,",
        "#   MLP)** stacks layers (plain note). The **input gate",
        "#   (输入门)** writes.",
        "",
        "# %%",
        "# a code comment (注释) is not prose",
        'label = "score (分数)"',
    ])
    uses = g.extract("02_test", source)
    assert [(u.english, u.chinese, u.abbreviation, u.line) for u in uses] == [
        ("multilayer perceptron", "多层感知机", "MLP", 2), ("input gate", "输入门", "", 4)]


def test_overrides_split_and_ignore():
    uses = g.extract("03_test", md("the **kernel** or **filter (卷积核 / 滤波器)**, is slid"))
    assert [(u.english, u.chinese) for u in uses] == [("kernel", "卷积核"), ("filter", "滤波器")]
    assert g.extract("00_start_here", md('at first use, e.g. "gradient descent (梯度下降)"; more')) == []


def test_terms_match_ignoring_case_plurals_and_aliases():
    known = {"logit", "emergent ability", "overfitting", "bias"}
    assert [g.resolve(t, known) for t in ("Logits", "emergent abilities", "overfit", "Bias", "new term")] == [
        "logit", "emergent ability", "overfitting", "bias", "new term"]


# ---------------------------------------------------------------- each check fails when its rule is broken
def test_a_pair_without_an_english_term_is_reported():
    uses = g.extract("01_test", md("(福) opens the line."))
    assert g.unreadable(uses) == ["chapters/01_test.py:2: no English term found before (福)"]


def test_a_new_term_without_a_meaning_is_reported():
    entries = g.build(g.extract("09_test", md("A **convolution (卷积)** and a **foo bar (福吧)**.")), MEANINGS)
    assert g.missing_meanings(entries) == ["foo bar\t  <- first used at chapters/09_test.py:2"]


def test_a_pair_missing_from_glossary_md_is_reported():
    glossary = g.render(g.build(g.extract("01_a", md("A **convolution (卷积)**.")), MEANINGS), {})
    later = g.extract("09_test", md("A **foo (福)** and a **convolution (卷积层)**."))
    assert not_in_glossary(later, glossary) == [
        "chapters/09_test.py:2: foo (福) is not in GLOSSARY.md",
        "chapters/09_test.py:2: convolution (卷积层) is in GLOSSARY.md as ['卷积']"]


def test_a_stale_glossary_md_is_reported(tmp_path: Path):
    for path in g.chapter_paths():
        shutil.copy(path, tmp_path / path.name)
    with (tmp_path / g.chapter_paths()[-1].name).open("a", encoding="utf-8") as chapter:
        chapter.write("\n" + md("A **foo (福)** is new.") + "\n")
    text, _, _ = g.generate(g.chapter_paths(tmp_path))
    assert text != g.OUTPUT.read_text(encoding="utf-8") and "| foo | 福 |" in text


def test_a_wrong_first_chapter_is_reported():
    # chapters given out of order: the first use is still the lowest chapter number
    uses = g.extract_all([("02_b", md("A **convolution (卷积)** again.")),
                          ("01_a", md("", "A **convolution (卷积)**."))])
    entries = g.build(uses, MEANINGS)
    assert entries[0].first.where == "chapters/01_a.py:3"
    text = g.render(entries, {})
    assert "[01_a](chapters/01_a.py)" in text and wrong_first_chapters(uses, text) == []
    assert wrong_first_chapters(uses, text.replace("chapters/01_a.py", "chapters/02_b.py")) == [
        "convolution: GLOSSARY.md says 02_b, first used at chapters/01_a.py:3"]


def test_two_chinese_names_for_one_term_are_reported():
    uses = g.extract_all([("01_a", md("A **convolution (卷积)**.")), ("02_b", md("**Convolutions (褶积)** again."))])
    assert g.english_conflicts(g.build(uses, MEANINGS)) == [
        "'convolution' has 2 Chinese names: 卷积 at chapters/01_a.py:2; 褶积 at chapters/02_b.py:2"]


def test_one_chinese_name_for_two_terms_is_reported_unless_allowed(monkeypatch: pytest.MonkeyPatch):
    uses = g.extract_all([("01_a", md("A **kernel (卷积核)**.")), ("02_b", md("A **filter (卷积核)**."))])
    entries = g.build(uses, MEANINGS)
    assert g.chinese_conflicts(entries) == [
        "卷积核 names 2 terms: 'filter' at chapters/02_b.py:2; 'kernel' at chapters/01_a.py:2"]
    monkeypatch.setitem(g.SHARED_CHINESE, "卷积核", {"kernel", "filter"})
    assert g.chinese_conflicts(entries) == []


def test_a_known_wrong_translation_is_reported():
    uses = g.extract("02_test", md("the **logits (对数几率)**, one score per digit"))
    (problem,) = g.wrong_translations(uses)
    assert problem.startswith("chapters/02_test.py:2: logits (对数几率): 对数几率 is log-odds")
