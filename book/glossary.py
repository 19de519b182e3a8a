"""The bilingual glossary: every "English term (中文)" first use in the chapters, rendered as GLOSSARY.md.

    python book/glossary.py           rewrite GLOSSARY.md from chapters/NN_topic.py and book/glossary.tsv
    python book/glossary.py --check   only say whether GLOSSARY.md is up to date (exit 1 if not)

The Chinese names come from the chapters; the one-line meanings are hand-written in book/glossary.tsv
(`English term<TAB>meaning`). A term without a meaning stops the script with a list of what to add.

How a pair is found, in the markdown cells only (`# %% [markdown]`, lines `# ...` joined across line breaks):
1. every innermost pair of parentheses whose content contains a CJK character is a candidate;
2. its content is split at commas/semicolons: the first part with CJK characters is the Chinese, an
   all-capitals part is the abbreviation ("卷积神经网络, CNN"), a lower-case phrase before the Chinese is the
   English term itself ("(**max pooling, 最大池化**)"), and anything after the Chinese is a remark
   ("注意力, chapter 08");
3. otherwise the English term is the text before the parenthesis: from the opening `**` when the parenthesis is
   inside a bold phrase ("**fine-tuned (微调)**"), else the bold/backticked/quoted phrase right before it
   ('"AI large model" (AI大模型)'), else up to five words back, stopping at punctuation, table bars and small
   words such as "the", "of", "a" ("| natural language processing (自然语言处理) |");
4. OVERRIDES and IGNORED below fix or drop the few places where that rule is wrong.

Terms are compared case-insensitively; a plural ("logits") or an ALIASES variant ("fine-tuned") counts as the
glossary term it names ("logit", "fine-tuning"). The first use is the lowest chapter number, then the lowest line.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
MEANINGS = ROOT / "book" / "glossary.tsv"
OUTPUT = ROOT / "GLOSSARY.md"

CJK = r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"
PAREN = re.compile(rf"\(([^()]*{CJK}[^()]*)\)")
ABBREVIATION = re.compile(r"[A-Z][A-Za-z0-9-]*[A-Z0-9]")  # CNN, BPTT, R1, DCGAN; not "Chapter"
STOP_WORDS = frozenset(
    "a an the of on in at to for by with from as and or but is are was were be its their this that these those "
    "one two each every any some such than then when which who whose where while via into about called".split()
)
MAX_WORDS = 5

# (English as the rule finds it, Chinese) -> the pairs it really stands for.
OVERRIDES: dict[tuple[str, str], list[tuple[str, str]]] = {
    # 03: "the **kernel** or **filter (卷积核 / 滤波器)**": two terms, two names
    ("filter", "卷积核 / 滤波器"): [("kernel", "卷积核"), ("filter", "滤波器")],
    # 07: "China's 2023 rules on deep synthesis services (深度合成)": the term is "deep synthesis"
    ("deep synthesis services", "深度合成"): [("deep synthesis", "深度合成")],
}
# (chapter, English as found): places that give a Chinese name but introduce no term.
IGNORED: set[tuple[str, str]] = {
    ("00_start_here", "AI large models, from the ground up"),  # the course title
    ("00_start_here", "gradient descent"),  # the example of the "term (中文)" convention; chapter 02 teaches it
}
# Variant spellings (case-folded) -> the glossary term they count as. Plurals need no entry.
ALIASES: dict[str, str] = {
    "fine-tuned": "fine-tuning",
    "overfit": "overfitting",
    "pre-trained": "pre-training",
    "recommendation": "recommender system",  # 01's industry table names the field by its systems
}
# Chinese names that may stand for more than one glossary term: Chinese -> those terms (case-folded).
SHARED_CHINESE: dict[str, set[str]] = {}
# (English as written, case-folded; Chinese) -> why that translation is wrong.
KNOWN_WRONG: dict[tuple[str, str], str] = {
    ("logits", "对数几率"): "对数几率 is log-odds, log(p/(1-p)); a vector of softmax scores is not log-odds: "
                            "leave 'logits' untranslated or write 未归一化的对数概率",
}


@dataclass(frozen=True)
class Use:
    """One "English (中文)" pair as a chapter writes it."""

    english: str
    chinese: str
    abbreviation: str
    chapter: str  # the chapter's file stem, e.g. 03_cnn
    line: int  # 1-based line of the opening parenthesis in chapters/<chapter>.py

    @property
    def where(self) -> str:
        return f"chapters/{self.chapter}.py:{self.line}"


def in_order(uses: Iterable[Use]) -> list[Use]:
    """Uses in course order: chapter number, then line."""
    return sorted(uses, key=lambda u: (u.chapter, u.line))


@dataclass
class Entry:
    """One glossary row: a term, its Chinese name(s) in order of first use, and every use."""

    term: str
    uses: list[Use]
    meaning: str = ""

    @property
    def first(self) -> Use:
        return in_order(self.uses)[0]

    @property
    def chinese(self) -> list[str]:
        return list(dict.fromkeys(u.chinese for u in in_order(self.uses)))

    @property
    def abbreviation(self) -> str:
        return next((u.abbreviation for u in in_order(self.uses) if u.abbreviation), "")


# ---------------------------------------------------------------- reading the chapters
def chapter_paths(folder: Path = CHAPTERS) -> list[Path]:
    """chapters/NN_topic.py, in course order."""
    return sorted(p for p in folder.glob("*.py") if re.fullmatch(r"\d\d_\w+\.py", p.name))


def markdown_cells(source: str) -> list[list[tuple[int, str]]]:
    """Each markdown cell of a percent-format chapter as (line number, text without the leading '# ')."""
    cells: list[list[tuple[int, str]]] = []
    current: list[tuple[int, str]] | None = None
    for number, line in enumerate(source.splitlines(), start=1):
        if line.startswith("# %%"):
            current = [] if "[markdown]" in line else None
            if current is not None:
                cells.append(current)
        elif current is not None and (line == "#" or line.startswith("# ")):
            current.append((number, line[2:]))
    return cells


def chapter_title(source: str, stem: str) -> str:
    """The chapter's '# NN · Title' heading, or its stem."""
    for cell in markdown_cells(source)[:1]:
        for _, text in cell:
            if text.startswith("# "):
                return text[2:].strip()
    return stem


def clean(phrase: str) -> str:
    """Whitespace collapsed, markup, quotes, trailing punctuation and a leading article removed."""
    phrase = " ".join(phrase.replace("**", " ").replace("`", " ").split())
    phrase = phrase.strip(" \"'“”‘’*_,.;:")
    return re.sub(r"^(?:a|an|the)\s+", "", phrase, flags=re.I)


def words_before(text: str) -> str:
    """Up to MAX_WORDS words that end right before the parenthesis, stopping at punctuation and small words."""
    words: list[str] = []
    for token in reversed(text.split()):
        opened = token.lstrip("\"“*`_")  # a phrase opened by a quote or markup ends with this word
        if (len(words) == MAX_WORDS or opened.lower() in STOP_WORDS or re.search(r"['’]s$", opened)
                or not re.fullmatch(r"\w[\w'’/–-]*", opened)):
            break
        words.insert(0, opened)
        if opened != token:
            break
    return " ".join(words)


def english_before(text: str, start: int) -> str:
    """The English term that a parenthesis at `start` names (rule 3 of the module docstring)."""
    before = text[:start]
    if before.count("**") % 2 == 1:  # inside a bold phrase: from its opening ** (after any earlier pair)
        inside = before[before.rfind("**") + 2:]
        return clean(inside[inside.rfind(")") + 1:])
    stripped = before.rstrip()
    for marker in ("**", "`", '"', "”"):
        if stripped.endswith(marker):
            opening = {"”": "“"}.get(marker, marker)
            begin = stripped.rfind(opening, 0, len(stripped) - len(marker))
            if begin >= 0:
                return clean(stripped[begin + len(opening):len(stripped) - len(marker)])
    return clean(words_before(stripped))


def parse_parenthesis(content: str) -> tuple[str, str, str]:
    """(English given inside, Chinese, abbreviation) from a parenthesis's content (rule 2)."""
    english = chinese = abbreviation = ""
    for part in (p.strip() for p in re.split(r"[,;，；]", content.replace("**", "").replace("`", ""))):
        if not part:
            continue
        if re.search(CJK, part):
            if chinese:  # a second Chinese part is a remark
                break
            chinese = part
        elif ABBREVIATION.fullmatch(part) and not re.search(r"[a-z]{3}", part):
            abbreviation = abbreviation or part
        elif not chinese:
            english = part
        # a non-abbreviation part after the Chinese ("chapter 08") is a remark
    return clean(english), chinese, abbreviation


def extract(chapter: str, source: str) -> list[Use]:
    """Every "English (中文)" pair in one chapter's markdown cells, with OVERRIDES and IGNORED applied."""
    uses: list[Use] = []
    for cell in markdown_cells(source):
        text = "\n".join(line for _, line in cell)
        starts, offset = [], 0  # offset of each line in `text`, to map a match back to its line number
        for _, line in cell:
            starts.append(offset)
            offset += len(line) + 1
        for match in PAREN.finditer(text):
            inner, chinese, abbreviation = parse_parenthesis(match.group(1))
            english = inner or english_before(text, match.start())
            index = max(i for i, s in enumerate(starts) if s <= match.start())
            line = cell[index][0]
            if (chapter, english) in IGNORED:
                continue
            for term, name in OVERRIDES.get((english, chinese), [(english, chinese)]):
                uses.append(Use(term, name, abbreviation, chapter, line))
    return uses


def extract_all(chapters: Iterable[tuple[str, str]]) -> list[Use]:
    """Pairs from several chapters, given as (stem, source text)."""
    return [use for stem, source in chapters for use in extract(stem, source)]


def read_chapters(paths: Iterable[Path]) -> list[tuple[str, str]]:
    return [(p.stem, p.read_text(encoding="utf-8")) for p in paths]


# ---------------------------------------------------------------- meanings and terms
def load_meanings(path: Path = MEANINGS) -> dict[str, str]:
    """book/glossary.tsv: `English term<TAB>meaning` per line; '#' starts a comment line."""
    meanings: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        term, tab, meaning = line.partition("\t")
        if not tab or not meaning.strip():
            raise ValueError(f"{path.name}:{number}: expected 'English term<TAB>meaning', got {line!r}")
        if term.strip().casefold() in {t.casefold() for t in meanings}:
            raise ValueError(f"{path.name}:{number}: {term.strip()!r} is listed twice")
        meanings[term.strip()] = meaning.strip()
    return meanings


def resolve(english: str, known: Iterable[str]) -> str:
    """The glossary term (as spelled in `known`) that `english` stands for, or `english` case-folded."""
    spelled = {t.casefold(): t for t in known}
    key = english.casefold()
    candidates = [ALIASES.get(key, key), key]
    if key.endswith("ies"):
        candidates.append(key[:-3] + "y")
    if key.endswith("s"):
        candidates.append(key[:-1])
    return next((spelled[c] for c in candidates if c in spelled), ALIASES.get(key, key))


def build(uses: list[Use], meanings: dict[str, str]) -> list[Entry]:
    """Group the uses by glossary term, attach meanings; alphabetical."""
    entries: dict[str, Entry] = {}
    for use in uses:
        term = resolve(use.english, meanings)
        entries.setdefault(term.casefold(), Entry(term, [], meanings.get(term, ""))).uses.append(use)
    return sorted(entries.values(), key=lambda e: e.term.casefold())


# ---------------------------------------------------------------- problems
def unreadable(uses: list[Use]) -> list[str]:
    """Pairs where no English term was found before the parenthesis (fix: an OVERRIDES entry)."""
    return [f"{u.where}: no English term found before ({u.chinese})" for u in uses if not u.english]


def english_conflicts(entries: list[Entry]) -> list[str]:
    """Terms that the chapters give more than one Chinese name."""
    problems = []
    for entry in entries:
        if len(entry.chinese) > 1:
            places = "; ".join(f"{u.chinese} at {u.where}" for u in in_order(entry.uses))
            problems.append(f"'{entry.term}' has {len(entry.chinese)} Chinese names: {places}")
    return problems


def chinese_conflicts(entries: list[Entry]) -> list[str]:
    """Chinese names that stand for more than one glossary term (unless SHARED_CHINESE allows it)."""
    by_chinese: dict[str, list[Entry]] = {}
    for entry in entries:
        for chinese in entry.chinese:
            by_chinese.setdefault(chinese, []).append(entry)
    problems = []
    for chinese, found in by_chinese.items():
        terms = {e.term.casefold() for e in found}
        if len(terms) > 1 and not terms <= SHARED_CHINESE.get(chinese, set()):
            places = "; ".join(f"'{u.english}' at {u.where}" for e in found for u in e.uses if u.chinese == chinese)
            problems.append(f"{chinese} names {len(terms)} terms: {places}")
    return problems


def wrong_translations(uses: list[Use]) -> list[str]:
    """Uses of a translation listed in KNOWN_WRONG."""
    return [f"{u.where}: {u.english} ({u.chinese}): {KNOWN_WRONG[(u.english.casefold(), u.chinese)]}"
            for u in uses if (u.english.casefold(), u.chinese) in KNOWN_WRONG]


def missing_meanings(entries: list[Entry]) -> list[str]:
    return [f"{e.first.english}\t  <- first used at {e.first.where}" for e in entries if not e.meaning]


# ---------------------------------------------------------------- rendering
def cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(entries: list[Entry], titles: dict[str, str]) -> str:
    """GLOSSARY.md: one table row per term; a term with several Chinese names shows each, with its chapter."""
    rows = [
        "# Glossary · 术语表",
        "",
        'Every key term the chapters introduce with its Chinese name at first use ("convolution (卷积)"), what it',
        "means in one line, and the chapter that first uses it. Generated by `python book/glossary.py` from the",
        "chapters and the meanings in `book/glossary.tsv`; edit those, not this file.",
        "",
        "| English | 中文 | Meaning | First used in |",
        "|---|---|---|---|",
    ]
    for entry in entries:
        english = f"{entry.term} ({entry.abbreviation})" if entry.abbreviation else entry.term
        names = entry.chinese
        if len(names) > 1:  # visible until the chapters agree (tests/test_glossary.py fails meanwhile)
            chapters = {n: next(u.chapter[:2] for u in entry.uses if u.chinese == n) for n in names}
            chinese = "; ".join(f"{n} ({chapters[n]})" for n in names)
        else:
            chinese = names[0]
        stem = entry.first.chapter
        chapter = f"[{titles.get(stem, stem)}](chapters/{stem}.py)"
        rows.append(f"| {cell(english)} | {cell(chinese)} | {cell(entry.meaning)} | {chapter} |")
    return "\n".join(rows) + "\n"


def generate(paths: list[Path], meanings_path: Path = MEANINGS) -> tuple[str, list[Entry], list[Use]]:
    """The GLOSSARY.md text for these chapters, with the entries and uses it was made from."""
    chapters = read_chapters(paths)
    uses = extract_all(chapters)
    entries = build(uses, load_meanings(meanings_path))
    titles = {stem: chapter_title(source, stem) for stem, source in chapters}
    return render(entries, titles), entries, uses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that GLOSSARY.md is up to date")
    args = parser.parse_args()
    text, entries, uses = generate(chapter_paths())
    missing = missing_meanings(entries)
    if missing:
        print(f"[glossary] {len(missing)} term(s) have no meaning in {MEANINGS.relative_to(ROOT)}; add a line "
              "'term<TAB>one-line meaning' for each, then run again (GLOSSARY.md not written):", file=sys.stderr)
        print("\n".join(f"  {m}" for m in missing), file=sys.stderr)
        return 1
    unused = sorted(set(load_meanings()) - {e.term for e in entries})
    if unused:
        print(f"[glossary] note: no chapter uses these terms of {MEANINGS.name}: {', '.join(unused)}")
    problems = unreadable(uses) + english_conflicts(entries) + chinese_conflicts(entries) + wrong_translations(uses)
    current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
    if args.check:
        print(f"[glossary] GLOSSARY.md is {'up to date' if current == text else 'stale: run python book/glossary.py'}")
    else:
        if current != text:
            OUTPUT.write_text(text, encoding="utf-8")
        print(f"[glossary] GLOSSARY.md: {len(entries)} terms from {len(uses)} uses "
              f"({'rewritten' if current != text else 'unchanged'})")
    if problems:
        print(f"[glossary] the chapters need fixing ({len(problems)} problem(s)):", file=sys.stderr)
        print("\n".join(f"  {p}" for p in problems), file=sys.stderr)
        return 1
    return 1 if args.check and current != text else 0


if __name__ == "__main__":
    sys.exit(main())
