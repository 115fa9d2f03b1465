"""Upload an export of `python -m smpconv_models.convert` to the Hugging Face Hub, safetensors only.

    python -m smpconv_models.publish exports/smpconv_t.in1k smpconv-models/smpconv_t.in1k

Needs a token with write access (`huggingface-cli login` or --token). The export is checked first: it must
hold model.safetensors, config.json and README.md, and no pickled weights (.bin, .pth, .pt, .ckpt, .pkl).
"""
import argparse
import json
import sys
from pathlib import Path
from typing import List

from huggingface_hub import HfApi

REQUIRED = ('model.safetensors', 'config.json', 'README.md')
PICKLE_SUFFIXES = ('.bin', '.pth', '.pt', '.ckpt', '.pkl', '.tar')
UPLOADED = ['*.safetensors', 'config.json', 'README.md']


def check_export(out_dir: Path) -> List[str]:
    """What stops `out_dir` from being published, empty when nothing does."""
    problems = [f'{name} is missing' for name in REQUIRED if not (out_dir / name).is_file()]
    pickles = sorted(p.name for p in out_dir.rglob('*') if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        problems.append(f'pickled files are not published: {", ".join(pickles)} (remove them)')
    if (out_dir / 'config.json').is_file():
        architecture = json.loads((out_dir / 'config.json').read_text()).get('architecture', '')
        if not architecture.startswith('smpconv'):
            problems.append(f"config.json names architecture {architecture!r}, not an SMPConv model")
    return problems


def publish(out_dir: Path, repo_id: str, private: bool = False, token: str = None,
            commit_message: str = 'Add SMPConv weights (safetensors)') -> str:
    """Create the repo if needed and upload the export's safetensors weights, config and model card."""
    problems = check_export(out_dir)
    if problems:
        raise ValueError(f'{out_dir} cannot be published: ' + '; '.join(problems))
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type='model', private=private, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, folder_path=out_dir, allow_patterns=UPLOADED,
                               commit_message=commit_message)
    return str(getattr(commit, 'commit_url', commit))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('out_dir', type=Path, help='an export of `python -m smpconv_models.convert`')
    parser.add_argument('repo_id', help='e.g. smpconv-models/smpconv_t.in1k')
    parser.add_argument('--private', action='store_true')
    parser.add_argument('--token', default=None, help='default: the token of `huggingface-cli login`')
    args = parser.parse_args(argv)
    try:
        url = publish(args.out_dir, args.repo_id, private=args.private, token=args.token)
    except ValueError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(f'published {args.out_dir} to {url}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
