import os

# Tests never touch the network: set before anything imports huggingface_hub (timm does).
os.environ['HF_HUB_OFFLINE'] = '1'

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

# timm's own suite runs in a process of its own (tests/test_timm_peer.py): it patches timm globally.
collect_ignore = ['timm_peer']

OFFICIAL_DIR = Path(__file__).parent / 'data' / 'official'


@pytest.fixture(scope='session')
def official_dir() -> Path:
    return OFFICIAL_DIR


@pytest.fixture(scope='session')
def tiny_ref_config() -> dict:
    return json.loads((OFFICIAL_DIR / 'smpconv_tiny_ref_config.json').read_text())
