"""timm's own generic model test suite, run on every registered SMPConv model.

`tests/test_models.py` ships in timm's source distribution only: it is fetched for the installed timm
version (once, into a cache) and run in a process of its own beside `tests/timm_peer/conftest.py`, which
restricts it to our models.
"""
import os
import shutil
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import timm

import smpconv_models  # noqa: F401
from smpconv_models import convert

from official_checkpoints import add_to_hub_cache, save_official_checkpoint

MODELS = {'smpconv_t', 'smpconv_b', 'smpconv_mobile31', 'smpconv_mobile51', 'smpconv_nano', 'smpconv_nano_cc',
          'smpconv_nano_ci', 'smpconv_nano_gradual', 'smpconv_resnet_cifar10'}
PRETRAINED = {'smpconv_t', 'smpconv_b'}
PRETRAINED_TESTS = {'test_model_load_pretrained', 'test_model_features_pretrained'}
# Every generic test that applies to a CNN classifier.
EXPECTED_TESTS = {
    'test_model_forward', 'test_model_backward', 'test_model_default_cfgs', 'test_model_forward_torchscript',
    'test_model_forward_features', 'test_model_forward_intermediates_features', 'test_model_forward_intermediates',
    'test_prune_intermediate_layers_contract', 'test_model_forward_fx', 'test_model_backward_fx',
    'test_model_forward_fx_torchscript',
}
CACHE_DIR = Path(os.environ.get('SMPCONV_CACHE_DIR', Path.home() / '.cache' / 'smpconv-models'))


def fetch_timm_model_tests(version: str) -> Path:
    """tests/test_models.py of timm `version`, from its source distribution on the package index."""
    target = CACHE_DIR / f'timm-{version}' / 'test_models.py'
    if not target.exists():
        download_dir = target.parent / 'sdist'
        download = subprocess.run(
            [sys.executable, '-m', 'pip', 'download', f'timm=={version}', '--no-binary', ':all:', '--no-deps',
             '--quiet', '-d', str(download_dir)],
            capture_output=True, text=True)
        if download.returncode != 0:
            pytest.fail(f"could not fetch timm {version}'s source distribution from the package index, which "
                        f"holds timm's model tests (the first run needs the index):\n{download.stderr[-2000:]}")
        archive = next(download_dir.glob(f'timm-{version}.tar.gz'))
        with tarfile.open(archive) as tar:
            member = tar.extractfile(f'timm-{version}/tests/test_models.py')
            target.write_bytes(member.read())
    return target


def _model_name(test_id: str) -> str:
    """'test_model_forward[1-smpconv_t]' -> 'smpconv_t' (a tag such as '.in1k' dropped)."""
    params = test_id.partition('[')[2].rstrip(']').split('-')
    return next(p for p in params if p.startswith('smpconv')).split('.')[0]


def build_hub_cache(cache_dir: Path, work_dir: Path) -> None:
    """The published models' Hub repos, from official-layout checkpoints converted by the convert command."""
    for variant in sorted(PRETRAINED):
        official, _ = save_official_checkpoint(work_dir / f'{variant}.pth.tar', variant)
        assert convert.main([str(official), str(work_dir / variant), '--model', variant, '--trust-pickle']) == 0
        official.unlink()
        add_to_hub_cache(cache_dir, timm.get_pretrained_cfg(f'{variant}.in1k').hf_hub_id, work_dir / variant)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_timm_model_suite_passes_for_every_model(tmp_path):
    suite = tmp_path / 'suite'
    suite.mkdir()
    shutil.copy(fetch_timm_model_tests(timm.__version__), suite / 'test_models.py')
    shutil.copy(Path(__file__).parent / 'timm_peer' / 'conftest.py', suite / 'conftest.py')
    build_hub_cache(tmp_path / 'hub', tmp_path)  # for timm's two pretrained-weight tests
    report = tmp_path / 'report.xml'
    result = subprocess.run(
        [sys.executable, '-m', 'pytest', str(suite), '-q', '-p', 'no:cacheprovider', f'--junitxml={report}'],
        cwd=suite, env={**os.environ, 'HF_HUB_OFFLINE': '1', 'HF_HUB_CACHE': str(tmp_path / 'hub')},
        capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]

    passed = set()
    for case in ElementTree.parse(report).iter('testcase'):
        outcome = [child.tag for child in case if child.tag in ('failure', 'error', 'skipped')]
        assert not outcome, f'{case.get("name")}: {outcome}\n{ElementTree.tostring(case, "unicode")[:2000]}'
        test_id = case.get('name')
        passed.add((test_id.partition('[')[0], _model_name(test_id)))
    expected = {(test, model) for test in EXPECTED_TESTS for model in MODELS}
    expected |= {(test, model) for test in PRETRAINED_TESTS for model in PRETRAINED}
    missing = expected - passed
    assert not missing, f'timm tests that did not run: {sorted(missing)}'
    print(f'timm {timm.__version__} model suite: {len(passed)} passed\n{result.stdout.splitlines()[-1]}')
