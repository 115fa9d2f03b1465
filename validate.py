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
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from accelerate import Accelerator
from timm.models import reparameterize_model
from timm.utils import check_batch_size_retry, decay_batch_step
from torch.utils.data import Dataset

import smpconv_models  # noqa: F401  registers the SMPConv models
from smpconv_models.ensemble import Ensemble
from smpconv_models.factory import create_from_checkpoint, create_model
from smpconv_models.runs import latest_run
from smpconv_models.training import (ConfigError, DataSettings, EvalSettings, ModelSettings, create_accelerator,
                                     create_eval_dataset, create_eval_loader, evaluate, num_classes_of,
                                     parse_eval_args, resolve_device, resolve_eval_config, resolve_image_config)

DEFAULT_MODEL = 'smpconv_t'
RUNS = Path('output/train')  # where train_imagenet.py writes its runs by default
MAX_CLASSES_SHOWN = 100  # the top-1 of each class is shown for datasets of at most this many classes


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


def create_evaluated_model(model: ModelSettings, evaluation: EvalSettings, dataset: Dataset) -> nn.Module:
    """The model to evaluate: a checkpoint's (its recorded model unless --model says) or the ensemble of several,
    or --model with its published weights or none; --num-classes, else the checkpoint's, the published weights'
    or the dataset's."""
    model_kwargs = dict(model.model_kwargs)
    if model.num_classes:
        model_kwargs['num_classes'] = model.num_classes
    try:
        if evaluation.checkpoint:
            members = [create_from_checkpoint(checkpoint, model.model, use_ema=evaluation.use_ema,
                                              trust_pickle=evaluation.trust_pickle, **model_kwargs)
                       for checkpoint in evaluation.checkpoint]
            return members[0] if len(members) == 1 else Ensemble(members)
        if not model.pretrained and 'num_classes' not in model_kwargs and num_classes_of(dataset):
            model_kwargs['num_classes'] = num_classes_of(dataset)
        return create_model(model.model or DEFAULT_MODEL, pretrained=model.pretrained, **model_kwargs)
    except ValueError as e:
        raise ConfigError(str(e)) from e


def class_names(model: nn.Module, dataset: Dataset) -> Optional[Tuple[str, ...]]:
    """The names of the classes the model was trained on (the weights of a run record them) and the dataset
    labels, None when neither says; a one-line error where they differ."""
    trained = model.pretrained_cfg.get('label_names')
    labelled = getattr(dataset, 'classes', None)
    if trained and labelled and tuple(trained) != tuple(labelled):
        raise ConfigError(f'the model was trained on the classes {", ".join(trained)}; the dataset has '
                          f'{", ".join(labelled)}')
    names = trained or labelled
    return tuple(names) if names else None


def evaluate_in_batches_that_fit(model: nn.Module, dataset: Dataset, data_config, batch_size: int,
                                 data: DataSettings, accelerator: Accelerator, channels_last: bool,
                                 num_classes: Optional[int] = None) -> Tuple[Dict[str, Any], int]:
    """The metrics over `dataset` (per class with `num_classes`), in batches of `batch_size` or, where memory runs
    out, smaller; and the batch."""
    while True:
        loader = create_eval_loader(dataset, data_config, batch_size, data, accelerator.num_processes,
                                    accelerator.process_index, accelerator.device)
        try:
            return evaluate(model, loader, accelerator, channels_last, num_classes=num_classes), batch_size
        except RuntimeError as e:
            if batch_size <= 1 or not check_batch_size_retry(str(e)):
                raise
            batch_size = decay_batch_step(batch_size)
            accelerator.print(f'out of memory: retrying with batch size {batch_size}')
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def validate(flags: Mapping[str, Any]) -> Dict[str, Any]:
    """Evaluate with the flag values `flags`: the metrics, and what was evaluated on what."""
    accelerator = create_accelerator(resolve_device(flags))
    config = resolve_eval_config(flags)
    data, evaluation = config.data, config.evaluation
    dataset = create_eval_dataset(data, evaluation.split, evaluation.batch_size, evaluation.num_samples)
    for note in getattr(dataset, 'notes', ()):
        accelerator.print(f'data: {note}')
    model = create_evaluated_model(config.model, evaluation, dataset)
    architecture = model.pretrained_cfg['architecture']
    if isinstance(model, Ensemble):
        architecture = f'ensemble of {len(model.members)} {architecture}'
    names = class_names(model, dataset)
    if evaluation.reparam:
        model = reparameterize_model(model)
    data_config = resolve_image_config(data, model)
    model = model.to(accelerator.device).eval()
    if config.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if config.model.torchcompile:
        model = torch.compile(model, backend=config.model.torchcompile)
    per_class = names is not None and len(names) <= MAX_CLASSES_SHOWN
    metrics, batch_size = evaluate_in_batches_that_fit(model, dataset, data_config, evaluation.batch_size, data,
                                                       accelerator, config.model.channels_last,
                                                       len(names) if per_class else None)
    if per_class:
        metrics['classes'] = list(names)
    checkpoint = ' + '.join(evaluation.checkpoint) if evaluation.checkpoint else \
        'pretrained' if config.model.pretrained else 'random init'
    return dict(
        model=architecture,
        checkpoint=checkpoint,
        dataset=data.dataset or data.data_dir, split=evaluation.split, num_images=len(dataset),
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
        results = validate(vars(args))
    except (ConfigError, OSError) as e:  # OSError: a missing file, the Hub out of reach
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(f"{results['model']} ({results['checkpoint']}) on {results['num_images']} images of "
          f"{results['dataset']}/{results['split']}: top-1 {results['top1']:.3f}%, top-5 {results['top5']:.3f}%, "
          f"loss {results['loss']:.4f}")
    if 'classes' in results:
        print('top-1 per class: ' + ', '.join(f'{name} {top1:.1f}% (of {count})' for name, top1, count in zip(
            results['classes'], results['class_top1'], results['class_count'])))
    if args.results_file:
        write_results(results, Path(args.results_file))
    return 0


if __name__ == '__main__':
    sys.exit(main())
