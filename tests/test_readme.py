"""The README's Python examples run as written, in order, from the repository root."""
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_readme_examples_run(monkeypatch):
    blocks = re.findall(r'^```python\n(.*?)^```$', (ROOT / 'README.md').read_text(), flags=re.S | re.M)
    assert len(blocks) >= 4
    monkeypatch.chdir(ROOT)
    namespace = {'__name__': '__readme__'}
    for block in blocks:
        exec(compile(block, 'README.md', 'exec'), namespace)
