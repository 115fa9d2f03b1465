import os

# Tests never touch the network: set before anything imports huggingface_hub (timm does).
os.environ['HF_HUB_OFFLINE'] = '1'

import json  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any, Callable, List, Tuple  # noqa: E402

import pytest  # noqa: E402

# Suites that run in a process of their own: timm's (tests/test_timm_peer.py), as it patches timm globally,
# and the Triton kernels' (tests/test_ops.py), as TRITON_INTERPRET must be set before Triton loads.
collect_ignore = ['timm_peer', 'triton_suite']

OFFICIAL_DIR = Path(__file__).parent / 'data' / 'official'


@pytest.fixture(scope='session')
def official_dir() -> Path:
    return OFFICIAL_DIR


@pytest.fixture(scope='session')
def tiny_ref_config() -> dict:
    return json.loads((OFFICIAL_DIR / 'smpconv_tiny_ref_config.json').read_text())


@pytest.fixture
def fresh_choices():
    """The dispatcher's choices forgotten before and after the test: it times the backends anew and leaves its
    choices to no other test."""
    from smpconv_models.ops import clear_choices
    clear_choices()
    yield
    clear_choices()


@pytest.fixture
def twice_with_warnings() -> Callable[[Callable[[], Any]], Tuple[Any, List[str]]]:
    """Calls a function twice, recording every warning: what it returned the first time, and the warnings' messages
    (a failed build warns once, not at every call)."""
    def record(call: Callable[[], Any]) -> Tuple[Any, List[str]]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            result = call()
            call()
        return result, [str(w.message) for w in caught]
    return record


@pytest.fixture
def without_compiler(monkeypatch) -> Callable[[ModuleType], None]:
    """Gives a module's C++ extension (its `EXTENSION`) as not yet built, its build failing as it does where no
    compiler is found."""
    def no_compiler():
        raise OSError('no C++ compiler found\nmore detail')

    def install(module: ModuleType) -> None:
        from smpconv_models.ops.native import NativeExtension
        built = module.EXTENSION
        extension = NativeExtension(built.name, built.source.name, built.what)
        monkeypatch.setattr(extension, 'build', no_compiler)
        monkeypatch.setattr(module, 'EXTENSION', extension)
    return install
