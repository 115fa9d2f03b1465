"""The paper's training recipe as library pieces; `train_imagenet.py` and `validate.py` orchestrate them.

The flags (`config`) are resolved once into frozen pieces (`settings`) that the other modules read.
"""
from .checkpoint import (RESUME_AUTO, Checkpointer, latest_training_state, load_training_state, remove_leftovers,
                         resume_training_state, saved_batch)
from .config import ConfigError, build_eval_parser, build_parser, parse_args, parse_eval_args
from .data import (SeededAugmentation, create_datasets, create_eval_dataset, create_eval_loader, num_classes_of,
                   resolve_image_config)
from .device import create_accelerator
from .distributed import CrossProcessBatchNorm2d, rng_state, set_rng_state, sync_batchnorm
from .engine import Progress, evaluate, train_one_epoch
from .memory import keep_freed_memory_for_reuse
from .optim import create_loss, create_mixup, create_optimizer, create_scheduler, param_groups
from .preemption import Preempted, PreemptionSignals, exit_status
from .settings import (DataSettings, EvalSettings, ModelSettings, SavedBatch, resolve_batch, resolve_device,
                       resolve_eval_config, resolve_training_config)
from .trainer import Trainer, create_trainer

__all__ = [
    'RESUME_AUTO', 'Checkpointer', 'latest_training_state', 'load_training_state', 'remove_leftovers',
    'resume_training_state', 'saved_batch',
    'ConfigError', 'build_eval_parser', 'build_parser', 'parse_args', 'parse_eval_args',
    'SeededAugmentation', 'create_datasets', 'create_eval_dataset', 'create_eval_loader', 'num_classes_of',
    'resolve_image_config',
    'create_accelerator',
    'CrossProcessBatchNorm2d', 'rng_state', 'set_rng_state', 'sync_batchnorm',
    'Progress', 'evaluate', 'train_one_epoch',
    'keep_freed_memory_for_reuse',
    'create_loss', 'create_mixup', 'create_optimizer', 'create_scheduler', 'param_groups',
    'Preempted', 'PreemptionSignals', 'exit_status',
    'DataSettings', 'EvalSettings', 'ModelSettings', 'SavedBatch', 'resolve_batch', 'resolve_device',
    'resolve_eval_config', 'resolve_training_config',
    'Trainer', 'create_trainer',
]
