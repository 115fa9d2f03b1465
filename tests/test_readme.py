"""The README is the user's manual: its set-up commands are what CI runs, its examples run as written."""
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
README = (ROOT / 'README.md').read_text()


def test_ci_runs_the_readme_set_up_commands():
    set_up = README.partition('## Set up')[2]
    commands = re.search(r'^```bash\n(.*?)^```$', set_up, flags=re.S | re.M).group(1).splitlines()
    ci_commands = [line for line in (ROOT / '.ci' / 'run').read_text().splitlines()
                   if line and not line.startswith(('#', 'set ', 'cd ', 'export '))]
    assert ci_commands == commands


def test_readme_examples_run(monkeypatch, tmp_path):
    blocks = re.findall(r'^```python\n(.*?)^```$', README, flags=re.S | re.M)
    assert len(blocks) >= 4
    # as from the repository root, with the files the examples write kept out of it
    (tmp_path / 'tests').symlink_to(ROOT / 'tests')
    monkeypatch.chdir(tmp_path)
    namespace = {'__name__': '__readme__'}
    for block in blocks:
        exec(compile(block, 'README.md', 'exec'), namespace)
