"""The READMEs say the same in both languages, and what they tell a newcomer to type works as printed.

Cheap checks on the text (no training), plus one run of the README's Python snippets on the shared tiny run.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_ZH = ROOT / "README.zh-CN.md"
CHINESE_DOCS = [README_ZH, ROOT / "docs" / "tutorial.zh-CN.md"]

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
CJK = "\u3400-\u4dbf\u4e00-\u9fff"
# Half-width punctuation touching a Chinese character, in prose: each should be its full-width form
# (，。：；（）？！). A period after a digit ("1. 谜题") and formulas such as "F(x) 推向" are not punctuation.
HALF_WIDTH_NEXT_TO_CJK = [
    re.compile(rf"[{CJK}][ \t]*[,.:;?!]"),
    re.compile(rf"[{CJK}][ \t]*\("),
    re.compile(rf"[{CJK}]\)"),
    re.compile(rf"[,:;?!][ \t]*[{CJK}]"),
    re.compile(rf"(?<![\d.])\.[ \t]*[{CJK}]"),
    re.compile(rf"\([ \t]*[{CJK}]"),
    re.compile(rf"\)[{CJK}]"),
]


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def prose(text: str) -> str:
    """The text outside fenced code, with inline code, link targets and URLs taken out (inline code becomes
    "C", so that punctuation next to it still counts)."""
    text = FENCE.sub("", text)
    text = re.sub(r"`[^`\n]+`", "C", text)
    text = re.sub(r"\]\([^)\s]*\)", "]", text)
    text = text.replace("![", "[")
    return re.sub(r"https?://\S+", "", text)


def headings(text: str) -> list[int]:
    """The level of each heading, in order (lines starting with # outside code)."""
    return [len(m.group(1)) for m in re.finditer(r"^(#{1,6}) ", FENCE.sub("", text), re.MULTILINE)]


def _command(line: str) -> str:
    line = re.sub(r"\s+#.*$", "", line.strip())  # a trailing comment is prose, translated
    return " ".join(line.split())


def commands(text: str) -> set[str]:
    """The shell commands of the code blocks, and the `resnetlab ...`, `make ...`, `pip ...` and `python ...`
    commands quoted inline, whitespace normalized."""
    found = set()
    for language, body in code_blocks(text):
        if language in ("sh", "bash", ""):
            lines = [line for line in body.splitlines() if line.strip() and not line.lstrip().startswith("#")]
            found |= {_command(line) for line in lines}
    for span in re.findall(r"`([^`\n]+)`", FENCE.sub("", text)):
        if re.match(r"(resnetlab|make|pip|python|source|torchrun|tensorboard|apt-get|dpkg) ", span):
            found.add(_command(span))
    return found


def figures(text: str) -> set[str]:
    """Every number with a decimal point or a percent sign (92.69%, 1.06, 0.27), thousands separators removed."""
    return {n.replace(",", "") for n in re.findall(r"\d[\d,]*\.\d+%?|\d[\d,]*%", text)}


def section(text: str, title_start: str) -> str:
    """The text of the section whose heading starts with title_start, up to the next heading of its level or
    above."""
    match = re.search(rf"^(#+) {re.escape(title_start)}.*$", text, re.MULTILINE)
    assert match, title_start
    level = len(match.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.MULTILINE).search(text, match.end())
    return text[match.end() : end.start() if end else len(text)]


# Each English document and its Chinese translation; the Chinese tutorial ends with a glossary of its own.
TRANSLATIONS = [
    (README, README_ZH, ""),
    (ROOT / "docs" / "tutorial.md", ROOT / "docs" / "tutorial.zh-CN.md", "## 术语表"),
]
TRANSLATION_IDS = ["README", "tutorial"]


def _pair(english: Path, chinese: Path, chinese_only: str) -> tuple[str, str]:
    text = _read(chinese)
    if chinese_only:
        assert chinese_only in text
        text = text[: text.index(chinese_only)]
    return _read(english), text


@pytest.mark.parametrize("english, chinese, chinese_only", TRANSLATIONS, ids=TRANSLATION_IDS)
def test_both_languages_have_the_same_sections_in_the_same_order(english, chinese, chinese_only):
    en, zh = _pair(english, chinese, chinese_only)
    assert headings(en) == headings(zh)


@pytest.mark.parametrize("english, chinese, chinese_only", TRANSLATIONS, ids=TRANSLATION_IDS)
def test_both_languages_give_the_same_commands(english, chinese, chinese_only):
    en, zh = (commands(text) for text in _pair(english, chinese, chinese_only))
    assert en - zh == set() and zh - en == set()


@pytest.mark.parametrize("english, chinese, chinese_only", TRANSLATIONS, ids=TRANSLATION_IDS)
def test_both_languages_give_the_same_figures(english, chinese, chinese_only):
    en, zh = (figures(text) for text in _pair(english, chinese, chinese_only))
    assert en - zh == set() and zh - en == set()


@pytest.mark.parametrize("path", CHINESE_DOCS, ids=lambda p: p.name)
def test_chinese_prose_uses_full_width_punctuation(path):
    text = prose(_read(path))
    bad = sorted({m.group(0) for pattern in HALF_WIDTH_NEXT_TO_CJK for m in pattern.finditer(text)})
    assert bad == []


def _makefile_variables(makefile: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+) *[?:]?= *(\S*) *$", makefile, re.MULTILINE))


def _expand(text: str, variables: dict[str, str]) -> str:
    for _ in range(3):
        text = re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), m.group(0)), text)
    return text


def demo_recipe() -> tuple[list[str], dict[str, str]]:
    makefile = _read(ROOT / "Makefile")
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe, "no demo target in the Makefile"
    return [line.strip() for line in recipe.group(1).splitlines()], _makefile_variables(makefile)


def test_the_demo_run_folder_is_the_one_the_readmes_use():
    lines, variables = demo_recipe()
    out = _expand("$(DEMO_OUT)", variables)
    assert out == "runs/demo"
    train = [line for line in lines if "resnetlab train" in line]
    assert len(train) == 1 and "--out $(DEMO_OUT)" in train[0] and "--overwrite" in train[0]
    for readme in (README, README_ZH):
        quick_start = re.split(r"^### ", _read(readme).split("\n## ", 2)[1], flags=re.MULTILINE)[0]
        blocks = [body for _, body in code_blocks(quick_start)]
        assert out in blocks[0], readme.name  # the make demo line says where it trains
        assert all(out in line for line in blocks[1].splitlines() if line.startswith("resnetlab ")), readme.name


def test_the_commands_make_demo_prints_are_the_readmes_first_examples():
    lines, variables = demo_recipe()
    printed = [
        _expand(m.group(1), variables)
        for line in lines
        if (m := re.match(r'@echo "\s+(\$\(BIN\)/resnetlab [^"#]*)', line))
    ]
    assert len(printed) == 3 and all(c.startswith(".venv/bin/resnetlab ") for c in printed)
    assert any("source $(BIN)/activate" in line for line in lines)
    for readme in (README, README_ZH):
        quick_start = re.split(r"^### ", _read(readme).split("\n## ", 2)[1], flags=re.MULTILINE)[0]
        example = code_blocks(quick_start)[1][1]
        listed = [_command(line) for line in example.splitlines() if line.strip()]
        assert listed[0] == "source .venv/bin/activate", readme.name
        assert listed[1:] == [c.removeprefix(".venv/bin/").strip() for c in printed], readme.name


@pytest.mark.parametrize("readme", [README, README_ZH], ids=lambda p: p.name)
def test_the_python_snippets_of_the_readme_run_as_printed(readme, trained_run, tmp_path, monkeypatch, capsys):
    text = _read(readme)
    snippets = [body for language, body in code_blocks(text) if language == "python"]
    assert len(snippets) == 2 and "best.pt" in snippets[0] and "best.pt" in snippets[1]
    shutil.copytree(trained_run, tmp_path / "runs" / "demo")
    Image.new("RGB", (40, 30), (200, 180, 160)).save(tmp_path / "shoe.png")
    monkeypatch.chdir(tmp_path)
    for snippet in snippets:  # the README's own code, exactly as printed
        exec(compile(snippet, f"{readme.name} snippet", "exec"), {"__name__": "readme"})  # noqa: S102
    out = capsys.readouterr().out.splitlines()
    top = ast.literal_eval(out[0])  # [[(class, probability), ...]] for the one image
    assert len(top) == 1 and len(top[0]) == 3 and all(0 <= p <= 1 for _, p in top[0])
    assert out[1].startswith("resnet20 ") and "T-shirt/top" in out[1]
