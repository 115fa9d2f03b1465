#!/usr/bin/env python3
"""Evaluate an SMPConv model: top-1, top-5 and loss on a dataset (by default the bundled Fashion-MNIST subset).

    python validate.py                       # the latest training run in output/train: its EMA weights, its config
    python validate.py --model smpconv_t --pretrained --data-dir /data/imagenet       # its 'validation' split
    python validate.py --config output/train/<run>/config.yaml --checkpoint output/train/<run>/model_best.safetensors
    torchrun --nproc_per_node=8 validate.py --model smpconv_b --pretrained --data-dir /data/imagenet

Flags carry the names of timm's validate.py; `--help` lists them.
"""
import argparse
import csv
import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from timm.data import resolve_data_config
from timm.models import reparameterize_model
from timm.utils import check_batch_size_retry, decay_batch_step

import smpconv_models  # noqa: F401  registers the SMPConv models
from smpconv_models.factory import create_from_checkpoint, create_model
from smpconv_models.runs import latest_run
from smpconv_models.training import (ConfigError, create_eval_dataset, create_eval_loader, evaluate, is_task,
                                     keep_freed_memory_for_reuse, num_classes_of, parse_eval_args)

DEFAULT_MODEL = 'smpconv_t'
RUNS = Path('output/train')  # where train_imagenet.py writes its runs by default


def parse_args_or_latest_run(argv) -> argparse.Namespace:
    """The flags; when they name no model, checkpoint or config, those of the latest training run's weights."""
    args = parse_eval_args(argv)
    if args.model or args.checkpoint or args.config or args.pretrained:
        return args
    run = latest_run(RUNS)
    if run is None:
        raise ConfigError(f'nothing to evaluate: no training run in {RUNS} (train one with python train_imagenet.py), '
                          'and no --checkpoint, --config or --model [--pretrained]')
    config, weights = run
    print(f'evaluating the latest training run: {weights} (config {config})')
    return parse_eval_args(['--config', str(config), '--checkpoint', str(weights), *(argv or [])])


def create_evaluated_model(args, dataset):
    """The model to evaluate: a checkpoint's (its recorded model unless --model says), or --model with its
    published weights or none; --num-classes, else the checkpoint's, the published weights' or the dataset's."""
    model_kwargs = dict(args.model_kwargs)
    if args.num_classes:
        model_kwargs['num_classes'] = args.num_classes
    if args.checkpoint:
        return create_from_checkpoint(args.checkpoint, args.model, use_ema=args.use_ema,
                                      trust_pickle=args.trust_pickle, **model_kwargs)
    if not args.pretrained and 'num_classes' not in model_kwargs and num_classes_of(dataset):
        model_kwargs['num_classes'] = num_classes_of(dataset)
    return create_model(args.model or DEFAULT_MODEL, pretrained=args.pretrained, **model_kwargs)


def validate(args) -> dict:
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise ConfigError('--device cuda, but no GPU is available')
    accelerator = Accelerator(
        cpu=args.device == 'cpu' or not torch.cuda.is_available(),
        mixed_precision={'bfloat16': 'bf16', 'float16': 'fp16'}[args.amp_dtype] if args.amp else 'no')
    if accelerator.device.type == 'cpu':
        keep_freed_memory_for_reuse()
    dataset = create_eval_dataset(args, args.split, args.num_samples)
    try:
        model = create_evaluated_model(args, dataset)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    architecture = model.pretrained_cfg['architecture']
    if args.reparam:
        model = reparameterize_model(model)
    data_config = None if is_task(args.dataset) else resolve_data_config(vars(args), model=model)
    model = model.to(accelerator.device).eval()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if args.torchcompile:
        model = torch.compile(model, backend=args.torchcompile)

    batch_size = args.batch_size
    while True:
        loader = create_eval_loader(dataset, data_config, batch_size, args, accelerator.num_processes,
                                    accelerator.process_index, accelerator.device)
        try:
            metrics = evaluate(model, loader, accelerator, args.channels_last)
            break
        except RuntimeError as e:
            if batch_size <= 1 or not check_batch_size_retry(str(e)):
                raise
            batch_size = decay_batch_step(batch_size)
            accelerator.print(f'out of memory: retrying with batch size {batch_size}')
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return dict(
        model=architecture, checkpoint=args.checkpoint or ('pretrained' if args.pretrained else 'random init'),
        dataset=args.dataset or args.data_dir, split=args.split, num_images=len(dataset),
        input_size=list(data_config['input_size'] if data_config else dataset[0][0].shape), batch_size=batch_size,
        **metrics)


def write_results(results: dict, path: Path) -> None:
    if path.suffix == '.csv':
        with open(path, 'w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=list(results))
            writer.writeheader()
            writer.writerow({k: v if not isinstance(v, list) else ' '.join(map(str, v)) for k, v in results.items()})
    else:
        path.write_text(json.dumps(results, indent=2) + '\n')


def main(argv=None) -> int:
    try:
        args = parse_args_or_latest_run(sys.argv[1:] if argv is None else argv)
        results = validate(args)
    except (ConfigError, OSError) as e:  # OSError: a missing file, the Hub out of reach
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(f"{results['model']} ({results['checkpoint']}) on {results['num_images']} images of "
          f"{results['dataset']}/{results['split']}: top-1 {results['top1']:.3f}%, top-5 {results['top5']:.3f}%, "
          f"loss {results['loss']:.4f}")
    if args.results_file:
        write_results(results, Path(args.results_file))
    return 0


if __name__ == '__main__':
    sys.exit(main())
