"""Convert a checkpoint of the authors (or of this package) into an export for the Hugging Face Hub.

    python -m smpconv_models.convert SMPConv_T.pth.tar exports/smpconv_t.in1k --model smpconv_t

Reads the checkpoint (its EMA weights when it has them), checks every key and shape against the model and
names any that is missing or unexpected, and writes model.safetensors, config.json and a model card
README.md. Pickled checkpoints (the authors' .pth.tar) are read with PyTorch's restricted unpickler, which
cannot run code; a file that needs more is converted only with --trust-pickle, and the objects that made it
necessary are named. The export loads with timm.create_model('local-dir:<out_dir>'); `python -m
smpconv_models.publish <out_dir> <repo_id>` uploads it.
"""
import argparse
import sys
from pathlib import Path

from .checkpoint import load_checkpoint
from .factory import create_model
from .hub import HUB_ORG, export_for_hub
from .models import PAPER_RESULTS


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('checkpoint', type=Path, help='official checkpoint (.pth, .pth.tar) or safetensors file')
    parser.add_argument('out_dir', type=Path)
    parser.add_argument('--model', required=True, help='registered architecture, e.g. smpconv_t')
    parser.add_argument('--trust-pickle', action='store_true',
                        help='unpickle fully a checkpoint that the restricted unpickler refuses (it can run code: '
                             'only for files you trust)')
    parser.add_argument('--no-ema', action='store_true', help='convert the raw weights, not the EMA ones')
    parser.add_argument('--repo-id', default=None, help='Hub repo named in the model card '
                                                        f'(default: {HUB_ORG}/<model>.in1k)')
    parser.add_argument('--source', default="the authors' ImageNet-1k EMA checkpoint",
                        help='what the weights are, for the model card')
    args = parser.parse_args(argv)

    try:
        model = create_model(args.model)
        load_checkpoint(model, args.checkpoint, use_ema=not args.no_ema, trust_pickle=args.trust_pickle)
    except (ValueError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    repo_id = args.repo_id or f'{HUB_ORG}/{args.model}.in1k'
    paper = PAPER_RESULTS.get(args.model)
    export_for_hub(model, args.out_dir, repo_id, args.source, top1=paper.accuracy if paper else None)
    print(f'wrote {args.out_dir}: model.safetensors ({len(model.state_dict())} tensors), config.json, README.md')
    return 0


if __name__ == '__main__':
    sys.exit(main())
