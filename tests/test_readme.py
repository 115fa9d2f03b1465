"""The README and docs/ are the user's manual: its set-up commands are what CI runs, its examples run as written,
and its links lead somewhere."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
README = ROOT / 'README.md'
PAGES = sorted((ROOT / 'docs').glob('*.md'))
MANUAL = [README, *PAGES]


def _python_blocks(text: str):
    return re.findall(r'^```python\n(.*?)^```$', text, flags=re.S | re.M)


def _prose(text: str) -> str:
    """The text without code blocks and inline code, where brackets are code, not links."""
    return re.sub(r'`[^`\n]*`', '', re.sub(r'^```.*?^```$', '', text, flags=re.S | re.M))


def _anchors(page: Path):
    """The anchors GitHub gives a page's headings."""
    headings = re.findall(r'^#+ (.*)$', re.sub(r'^```.*?^```$', '', page.read_text(), flags=re.S | re.M),
                          flags=re.M)
    return {re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-') for heading in headings}


def _local_links(page: Path):
    """(target file, anchor) of every link of a page into the repository."""
    for target in re.findall(r'\]\(([^)\s]+)\)', _prose(page.read_text())):
        if re.match(r'[a-z]+:', target):
            continue
        path, _, anchor = target.partition('#')
        yield (page.parent / path if path else page).resolve(), anchor


def test_ci_runs_the_readme_set_up_commands():
    set_up = README.read_text().partition('## Set up')[2]
    commands = re.search(r'^```bash\n(.*?)^```$', set_up, flags=re.S | re.M).group(1).splitlines()
    ci_commands = [line for line in (ROOT / '.ci' / 'run').read_text().splitlines()
                   if line and not line.startswith(('#', 'set ', 'cd ', 'export '))]
    assert ci_commands == commands


@pytest.mark.parametrize('page', MANUAL, ids=lambda page: str(page.relative_to(ROOT)))
def test_examples_run(page, monkeypatch, tmp_path):
    blocks = _python_blocks(page.read_text())
    # as from the repository root, with the files the examples write kept out of it
    (tmp_path / 'tests').symlink_to(ROOT / 'tests')
    monkeypatch.chdir(tmp_path)
    namespace = {'__name__': '__readme__'}
    for block in blocks:
        exec(compile(block, str(page.relative_to(ROOT)), 'exec'), namespace)


def test_the_manual_has_its_examples():
    assert len(_python_blocks(README.read_text())) >= 3
    assert sum(len(_python_blocks(page.read_text())) for page in MANUAL) >= 12


def test_readme_links_every_page():
    linked = {target for target, _ in _local_links(README)}
    assert PAGES and [page for page in PAGES if page.resolve() not in linked] == []


@pytest.mark.parametrize('page', MANUAL, ids=lambda page: str(page.relative_to(ROOT)))
def test_links_resolve(page):
    for target, anchor in _local_links(page):
        assert target.exists(), f'{page.name} links to {target}, which does not exist'
        if anchor and target.suffix == '.md':
            assert anchor in _anchors(target), f'{page.name} links to #{anchor}, not a heading of {target.name}'
