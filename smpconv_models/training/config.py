"""Command line and YAML configuration of `train_imagenet.py` and `validate.py`.

Flags carry the names of timm's train.py wherever timm has the flag. A YAML config sets the defaults of
any flags (keys are the flag names with '_' for '-'), and the command line overrides them.
"""
import argparse
import difflib
import os
from pathlib import Path
from typing import Any, Collection, Dict, Mapping, Optional, Sequence, Tuple, Union

import yaml
from timm.utils import ParseKwargs

from ..datasets.tasks import BUNDLED_TASK, TASKS
from ..datasets.timeseries import NORMALIZATIONS

BUNDLED_DATASET = 'fashion-mnist-subset'
AUTO = 'auto'  # --epochs and --global-batch-size of a time-series run: from its number of training series

__all__ = ['ConfigError', 'build_parser', 'build_eval_parser', 'parse_args', 'parse_eval_args']


class ConfigError(ValueError):
    """A configuration that cannot be run, found before any training starts."""


# flags that say where a run's configuration and state come from, not what the run is
NOT_CONFIGURABLE = ('help', 'config', 'resume')


def default_workers() -> int:
    """Data loading processes per rank: one per CPU this process may run on, at most 8."""
    return min(8, len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1)


def int_or_auto(value: str) -> Union[int, str]:
    """A flag's whole number, or 'auto'."""
    return AUTO if value == AUTO else int(value)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default where it has one; an unset default (None, '', off) is explained by its help."""

    def _get_help_string(self, action: argparse.Action) -> str:
        unset = action.default is None or action.default is False or action.default == '' or \
            action.default is argparse.SUPPRESS
        return action.help if unset else super()._get_help_string(action)


def add_data_args(parser: argparse.ArgumentParser) -> Tuple[argparse._ArgumentGroup, argparse._ArgumentGroup]:
    """Where the data come from and how they are prepared, flags shared by training and validation: the group of
    every dataset's, and the group of those that only the authors' sequence and CIFAR-10 tasks read."""
    group = parser.add_argument_group('Data')
    group.add_argument('--data-dir', default=None, metavar='DIR',
                       help="dataset root: a folder of <split>/<class>/<image> or a tar (then --dataset defaults to "
                            "'', a folder), or where --dataset-download puts a dataset")
    group.add_argument('--dataset', default=None, metavar='NAME',
                       help="timm dataset type ('' for a folder or tar, 'hfds/...', 'wds/...', 'torch/...'), "
                            f"'{BUNDLED_DATASET}', the images bundled with the package, or a task of the authors' "
                            f"sequence and CIFAR-10 models ({', '.join(TASKS)}), or time series of your own ('ts/NAME', "
                            "'npz/NAME', 'audio/NAME' in --data-dir); unset: a folder or tar with --data-dir, else "
                            "the bundled images")
    group.add_argument('--class-map', default='', metavar='FILE', help='a file mapping folder names to class indices')
    group.add_argument('--dataset-download', action='store_true', help="download a 'torch/' or 'hfds/' dataset")
    group.add_argument('--input-img-mode', default='RGB', help='PIL mode the images are read in')
    group.add_argument('--num-classes', type=int, default=None, help='classes of the classifier; unset: the dataset\'s')
    group.add_argument('--input-size', type=int, nargs=3, default=None, metavar=('C', 'H', 'W'),
                       help="input image size; unset: the model's (224x224 for the ImageNet models)")
    group.add_argument('--crop-pct', type=float, default=None,
                       help="fraction of the resized image the evaluation center crop keeps; unset: the model's")
    group.add_argument('--mean', type=float, nargs='+', default=None, help="per-channel mean; unset: the model's")
    group.add_argument('--std', type=float, nargs='+', default=None, help="per-channel std; unset: the model's")
    group.add_argument('--interpolation', default='', help="evaluation resize interpolation; unset: the model's")
    group.add_argument('-j', '--workers', type=int, default=default_workers(),
                       help='data loading processes per rank (0: in the main process); the default follows '
                            'this machine\'s CPUs')
    group.add_argument('--pin-mem', action='store_true', help='pin batches in page-locked memory (GPU runs)')
    group.add_argument('--seed', type=int, default=42, help='seed of the data order, augmentation and initialisation')
    tasks = parser.add_argument_group("The authors' sequence and CIFAR-10 tasks (--dataset smnist, ...)")
    tasks.add_argument('--permutation-seed', type=int, default=0,
                       help="pmnist: the seed of the pixel order (the authors': 0)")
    series = parser.add_argument_group(
        'Time series of your own (--dataset ts/NAME, npz/NAME or audio/NAME with --data-dir ROOT: docs/timeseries.md)')
    series.add_argument('--series-length', type=int, default=None, metavar='STEPS',
                        help='steps every series is padded (with zeros at its end) or truncated to; unset: those of '
                             'the longest training series')
    series.add_argument('--series-normalize', default='channel', choices=NORMALIZATIONS,
                        help="standardise each channel by the training data's statistics, or each series and channel "
                             'by its own, or not')
    series.add_argument('--val-fraction', type=float, default=0.2,
                        help="the training data's fraction (per class) held out as the 'validation' split")
    series.add_argument('--sample-rate', type=int, default=16000, metavar='HZ',
                        help='audio/: the rate every clip is resampled to')
    return group, tasks


def add_model_args(parser: argparse.ArgumentParser, model: Optional[str] = 'smpconv_t') -> argparse._ArgumentGroup:
    """Which model, in which numerics: flags shared by training and validation; `model` None means the
    checkpoint's."""
    group = parser.add_argument_group('Model and precision')
    group.add_argument('--model', default=model, help='a registered SMPConv model (smpconv_t, smpconv_b, ...)' + (
        "; unset: the checkpoint's, else smpconv_t" if model is None else ''))
    group.add_argument('--pretrained', action='store_true', help="start from the model's published weights")
    group.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs, metavar='KEY=VALUE',
                       help='arguments of the model, e.g. kernel_sizes="(31, 15, 7, 3)" kernel_scale=2')
    group.add_argument('--channels-last', action='store_true', help='run the model in the channels_last layout')
    group.add_argument('--torchcompile', nargs='?', const='inductor', default=None, metavar='BACKEND',
                       help='compile the model with torch.compile (backend: inductor unless named)')
    group.add_argument('--amp', action='store_true', help='mixed precision (--amp-dtype)')
    group.add_argument('--amp-dtype', default='float16', choices=('float16', 'bfloat16'),
                       help='the lower precision of --amp')
    group.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'),
                       help='auto: a GPU when there is one, else the CPU')
    return group


def build_parser(default_config: Optional[Path] = None) -> argparse.ArgumentParser:
    """Flags of the training script. Without a config file the defaults are the paper's SMPConv-T ImageNet
    recipe; `--help` shows those of the config in force (`default_config` unless --config names another)."""
    parser = argparse.ArgumentParser(
        description='Train SMPConv models: the quickstart by default, the paper recipes with --config (configs/).',
        formatter_class=_HelpFormatter)
    parser.add_argument('-c', '--config', default=None if default_config is None else str(default_config),
                        metavar='FILE', help='YAML file of flag defaults, which the command line overrides')

    group, tasks = add_data_args(parser)
    group.add_argument('--train-split', default='train', help='the split trained on')
    group.add_argument('--val-split', default='validation', help='the split evaluated after every epoch')
    group.add_argument('--train-num-samples', type=int, default=None,
                       help="samples per training epoch of an iterable dataset ('wds/', 'hfids/')")
    group.add_argument('--val-num-samples', type=int, default=None,
                       help='samples of an iterable validation dataset')
    tasks.add_argument('--input-dropout', type=float, default=0.,
                       help="probability that a training input value is zeroed (the authors' net.dropout_in)")

    group = add_model_args(parser)
    group.add_argument('--drop', type=float, default=0., help='dropout before the classifier')
    group.add_argument('--drop-path', type=float, default=None, help="stochastic depth rate; unset: the model's")
    group.add_argument('--grad-checkpointing', action='store_true', help='recompute activations in the backward pass')
    group.add_argument('--sync-bn', action=argparse.BooleanOptionalAction, default=True,
                       help='synchronise batch norm statistics across processes when distributed')

    group = parser.add_argument_group('Batch')
    group.add_argument('-b', '--batch-size', type=int, default=None,
                       help='batch per process; unset: the global batch / (processes x accumulation)')
    group.add_argument('--global-batch-size', type=int_or_auto, default=2048,
                       help="samples per optimizer update over all processes ('auto': from the number of training "
                            "series of a time-series dataset)")
    group.add_argument('-vb', '--validation-batch-size', type=int, default=None,
                       help='evaluation batch per process; unset: the training batch')
    group.add_argument('--grad-accum-steps', type=int, default=1, help='batches accumulated per optimizer update')

    group = parser.add_argument_group('Optimizer')
    group.add_argument('--opt', default='adamw', help="timm optimizer name ('adamw', 'adam', 'momentum', ...)")
    group.add_argument('--opt-eps', type=float, default=1e-8, help="the optimizer's epsilon")
    group.add_argument('--opt-betas', type=float, nargs='+', default=None, help="the optimizer's betas; unset: its own")
    group.add_argument('--momentum', type=float, default=0.9, help='momentum of SGD-like optimizers')
    group.add_argument('--weight-decay', type=float, default=0.05,
                       help='weight decay, not applied to biases, norms, point positions and radii')
    group.add_argument('--clip-grad', type=float, default=None, help='gradient clipping threshold; unset: no clipping')
    group.add_argument('--clip-mode', default='norm', choices=('norm', 'value'), help='what --clip-grad clips')
    group.add_argument('--lr', type=float, default=None,
                       help='peak learning rate; unset: --lr-base scaled to the global batch')
    group.add_argument('--lr-base', type=float, default=4e-3, help='learning rate at a global batch of --lr-base-size')
    group.add_argument('--lr-base-size', type=int, default=2048, help='the global batch --lr-base is for')
    group.add_argument('--lr-base-scale', default='linear', choices=('linear', 'sqrt'),
                       help='how --lr-base scales with the global batch')
    group.add_argument('--radius-lr-scale', type=float, default=0.1,
                       help='learning rate of the SMP radii relative to the others')

    group = parser.add_argument_group('Schedule')
    group.add_argument('--sched', default='cosine', help='timm scheduler, stepped every optimizer update')
    group.add_argument('--epochs', type=int_or_auto, default=300,
                       help="epochs in all, warm-up included ('auto': from the number of training series of a "
                            "time-series dataset)")
    group.add_argument('--warmup-epochs', type=int, default=10, help='epochs of linear warm-up from --warmup-lr')
    group.add_argument('--warmup-lr', type=float, default=1e-6, help='learning rate the warm-up starts from')
    group.add_argument('--min-lr', type=float, default=1e-6, help='learning rate the schedule ends at')
    group.add_argument('--cooldown-epochs', type=int, default=0, help='epochs at --min-lr after the schedule')
    group.add_argument('--max-updates', type=int, default=None,
                       help='stop after this many optimizer updates (the schedule still spans the epochs)')

    group = parser.add_argument_group('Augmentation and regularisation')
    group.add_argument('--no-aug', action='store_true', help='train on the evaluation transform, without augmentation')
    group.add_argument('--scale', type=float, nargs=2, default=[0.08, 1.0],
                       help='area range of the random resized crop')
    group.add_argument('--ratio', type=float, nargs=2, default=[3. / 4., 4. / 3.],
                       help='aspect ratio range of the random resized crop')
    group.add_argument('--scale-augmentation', type=float, nargs=2, default=None, metavar=('MIN', 'MAX'),
                       help='train each batch at a random input size: --input-size times a factor drawn '
                            'log-uniformly from [MIN, MAX] (for a model that adapts to it: '
                            '--model-kwargs dynamic_img_size=True); unset: at --input-size')
    group.add_argument('--hflip', type=float, default=0.,
                       help="probability of a horizontal flip (the authors' code trains without)")
    group.add_argument('--vflip', type=float, default=0., help='probability of a vertical flip')
    group.add_argument('--color-jitter', type=float, default=0.4, help='colour jitter strength (without --aa)')
    group.add_argument('--aa', default='rand-m9-mstd0.5-inc1', help="auto-augment policy, '' for none")
    group.add_argument('--train-interpolation', default='random', help='resize interpolation of training images')
    group.add_argument('--reprob', type=float, default=0.25, help='probability of random erasing')
    group.add_argument('--remode', default='pixel', help="random erasing's fill ('pixel', 'rand', 'const')")
    group.add_argument('--recount', type=int, default=1, help='random erasing: regions per image')
    group.add_argument('--mixup', type=float, default=0.8, help='mixup alpha (0: off)')
    group.add_argument('--cutmix', type=float, default=1.0, help='cutmix alpha (0: off)')
    group.add_argument('--cutmix-minmax', type=float, nargs=2, default=None,
                       help='cutmix box size range, instead of --cutmix')
    group.add_argument('--mixup-prob', type=float, default=1.0, help='probability that a batch is mixed')
    group.add_argument('--mixup-switch-prob', type=float, default=0.5,
                       help='probability of cutmix instead of mixup when both are on')
    group.add_argument('--mixup-mode', default='batch', help="how mixup pairs are drawn ('batch', 'pair', 'elem')")
    group.add_argument('--mixup-off-epoch', type=int, default=0, help='epoch from which mixup is off (0: never)')
    group.add_argument('--smoothing', type=float, default=0.1, help='label smoothing')

    group = parser.add_argument_group('Model EMA')
    group.add_argument('--model-ema', action=argparse.BooleanOptionalAction, default=True,
                       help='keep an exponential moving average of the weights, evaluated beside the model')
    group.add_argument('--model-ema-decay', type=float, default=0.9999, help='decay per update of the EMA')
    group.add_argument('--model-ema-warmup', action='store_true',
                       help='a smaller decay in the first updates (timm ModelEmaV3 warm-up)')

    group = parser.add_argument_group('Run')
    group.add_argument('--output', default='output/train', metavar='DIR', help='folder of the run folders')
    group.add_argument('--experiment', default='', help='run folder name; unset: date-time-model')
    group.add_argument('--eval-metric', default='top1', choices=('top1', 'top5', 'loss'),
                       help='picks the best checkpoints, measured on the EMA model when there is one')
    group.add_argument('--checkpoint-hist', type=int, default=3, help='best checkpoints kept')
    group.add_argument('--recovery-interval', type=int, default=0, metavar='UPDATES',
                       help='also save the training state every this many updates (0: at epoch ends only)')
    group.add_argument('--resume', default='', metavar='PATH',
                       help="training state file, or a run folder (its latest state) to continue; 'auto': the run "
                            'of --experiment, from its latest state if it has one, else from its start')
    group.add_argument('--log-interval', type=int, default=50, metavar='UPDATES',
                       help='updates between progress bar updates of the loss and learning rate')
    return parser


def build_eval_parser() -> argparse.ArgumentParser:
    """Flags of the validation script: the data and model flags of training, and its own."""
    parser = argparse.ArgumentParser(
        description='Evaluate an SMPConv model: top-1, top-5 and loss on a dataset. Without a model, checkpoint or '
                    'config: the latest training run in output/train, its EMA weights.',
        formatter_class=_HelpFormatter)
    parser.add_argument('-c', '--config', default=None, metavar='FILE',
                        help="a training config (a run's config.yaml, say): its data and model flags are used")
    add_data_args(parser)
    add_model_args(parser, model=None)
    group = parser.add_argument_group('Validation')
    group.add_argument('--split', default='validation', help='the split evaluated')
    group.add_argument('--num-samples', type=int, default=None, help="samples of an iterable dataset ('wds/')")
    group.add_argument('--checkpoint', nargs='+', default=[], metavar='FILE',
                       help="weights (safetensors), a training state of train_imagenet.py, or an authors' ImageNet "
                            "checkpoint (their sequence and CIFAR-10 ones: smpconv_models.from_official_ckconv); its "
                            "model unless --model names one. Several: their ensemble (mean class probabilities)")
    group.add_argument('--use-ema', action='store_true', help='the EMA weights of a checkpoint that has them')
    group.add_argument('--trust-pickle', action='store_true',
                       help='fully unpickle a checkpoint that needs it (it can run code: only for trusted files)')
    group.add_argument('-b', '--batch-size', type=int, default=256, help='batch per process')
    group.add_argument('--reparam', action='store_true', help='re-parameterise the model first (timm)')
    group.add_argument('--results-file', default='', metavar='FILE', help='also write the results (.json or .csv)')
    return parser


def parse_eval_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """The validation flags; a training config may hold training flags, which are ignored."""
    parser = build_eval_parser()
    eval_flags = {action.dest for action in parser._actions}
    training_only = {action.dest for action in build_parser()._actions} - eval_flags
    return _parse_with_config(parser, argv, ignore=training_only)


def _coerce(action: argparse.Action, value: Any) -> Any:
    """Convert a YAML value the way argparse converts that flag's strings (YAML reads '4e-3' as text)."""
    if action.type is None or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [action.type(v) if isinstance(v, str) else v for v in value]
    return action.type(value) if isinstance(value, str) else value


def load_config(path: Path, parser: argparse.ArgumentParser, ignore: Collection[str] = ()) -> Dict[str, Any]:
    """Flag defaults from a YAML file; a key that is not a flag (nor in `ignore`) is an error that names it."""
    if not path.is_file():
        raise ConfigError(f'config file not found: {path}')
    config = yaml.safe_load(path.read_text()) or {}
    if not isinstance(config, dict):
        raise ConfigError(f'{path} must hold a mapping of flag names to values')
    actions = {action.dest: action for action in parser._actions if action.dest not in NOT_CONFIGURABLE}
    values = {}
    for key, value in config.items():
        if key in ignore:
            continue
        if key not in actions:
            close = difflib.get_close_matches(key, actions, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ''
            raise ConfigError(f"config key '{key}' in {path} is not an option of the training script{hint}")
        values[key] = _coerce(actions[key], value)
        choices = actions[key].choices
        if choices is not None and values[key] not in choices:
            raise ConfigError(f"config key '{key}' in {path}: {value!r} is not one of {sorted(choices)}")
    return values


def _given_on_command_line(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> set:
    """The flags that `argv` sets itself, apart from the defaults and a config file's values."""
    unset = object()
    namespace = argparse.Namespace(**{action.dest: unset for action in parser._actions})
    given, _ = parser.parse_known_args(argv, namespace=namespace)
    return {dest for dest, value in vars(given).items() if value is not unset}


def _parse_with_config(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]],
                       ignore: Collection[str] = ()) -> argparse.Namespace:
    """Flags from `argv` over the config file's values over the parser defaults, with the dataset resolved."""
    config_flag = argparse.ArgumentParser(add_help=False)
    config_flag.add_argument('-c', '--config', default=parser.get_default('config'))
    config_path = config_flag.parse_known_args(argv)[0].config
    if config_path:
        parser.set_defaults(**load_config(Path(config_path), parser, ignore))  # what --help shows, too
    parsed = vars(parser.parse_args(argv))
    return argparse.Namespace(**{**parsed, 'dataset': _dataset(parsed['dataset'], parsed['data_dir'],
                                                               'dataset' in _given_on_command_line(parser, argv))})


def _dataset(dataset: Optional[str], data_dir: Optional[str], given: bool) -> str:
    """The dataset a run reads: a --data-dir means that folder or tar, unless --dataset names another kind of data
    (a config's bundled dataset, which has no folder, gives way to it); neither means the bundled images."""
    if not given and data_dir and dataset in (None, BUNDLED_DATASET, BUNDLED_TASK):
        return ''
    return BUNDLED_DATASET if dataset is None else dataset


def parse_args(argv: Optional[Sequence[str]], default_config: Optional[Path] = None) -> argparse.Namespace:
    """The training flags: `argv` over the config file's (`default_config` unless --config names another)
    values over the parser defaults."""
    return _parse_with_config(build_parser(default_config), argv)


def plain(value: Any) -> Any:
    """`value` with every tuple made a list, as YAML reads it back: values that compare as a config file's."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    return value
