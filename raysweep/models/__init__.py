"""The paper's three models (MLP, LeNet5, ResNet18) behind a pure functional boundary.

Conventions: inputs are float NHWC batches ``(n, H, W, C)``; every model outputs one logit per
example, shape ``(n, 1)``, float32. Variables are Flax dicts
``{"params": ..., "batch_stats": ...}`` (``batch_stats`` only for ResNet18).

Typical use::

    from raysweep.models import get_model, init_variables, make_apply_fn

    module = get_model("lenet5", activation="relu")
    variables = init_variables(module, (32, 32, 3), seed=0)
    apply_fn = make_apply_fn(module, variables)        # inference mode, BN stats frozen
    logits = apply_fn(variables["params"], x)          # (n, 1) float32

Your own model: ``get_model("package.module:attr", options={...})`` (or
:func:`load_user_model`) returns an adapter (:class:`NNXModel`, :class:`LinenModel`,
:class:`FunctionModel`) that the same three functions accept; see :mod:`raysweep.models.user`.

Files: ``activations`` (names -> functions), ``inputs`` (shape conventions), ``mlp``, ``lenet``,
``resnet`` (the modules), ``functional`` (init/apply/count), ``registry`` (by-name builders),
``user`` (models given by import path). :func:`training_variant` (defined here) picks the faster,
equivalent module to *train* on the current backend.
"""

import flax.linen as nn
import jax

from raysweep.models.activations import ACTIVATION_NAMES, DEFAULT_ACTIVATION, get_activation
from raysweep.models.functional import (
    ApplyFn,
    TrainApplyFn,
    count_params,
    init_variables,
    make_apply_fn,
    make_train_apply_fn,
)
from raysweep.models.inputs import validate_batch, validate_input_shape
from raysweep.models.lenet import LeNet5, lenet5_param_count
from raysweep.models.mlp import MLP
from raysweep.models.registry import (
    MODEL_NAMES,
    ModelBundle,
    create_model,
    get_model,
    normalize_model_name,
)
from raysweep.models.resnet import BasicBlock, ResNet18, resnet18_param_count
from raysweep.models.user import (
    ACCEPTED_KINDS,
    FunctionModel,
    LinenModel,
    NNXModel,
    UserModel,
    load_user_model,
)

__all__ = [
    "ACCEPTED_KINDS",
    "ACTIVATION_NAMES",
    "DEFAULT_ACTIVATION",
    "FunctionModel",
    "LinenModel",
    "MLP",
    "MODEL_NAMES",
    "ApplyFn",
    "BasicBlock",
    "LeNet5",
    "ModelBundle",
    "NNXModel",
    "ResNet18",
    "TrainApplyFn",
    "UserModel",
    "count_params",
    "create_model",
    "get_activation",
    "get_model",
    "init_variables",
    "lenet5_param_count",
    "load_user_model",
    "make_apply_fn",
    "make_train_apply_fn",
    "normalize_model_name",
    "resnet18_param_count",
    "training_variant",
    "validate_batch",
    "validate_input_shape",
]


def training_variant(module: nn.Module) -> nn.Module:
    """The module to use for *training* ``module`` on the current JAX backend.

    A :class:`LeNet5` on the CPU backend (``jax.default_backend() == "cpu"``) becomes
    ``module.clone(patch_convs=True)``: the same function of the same variables, its
    convolutions computed as im2col matmuls and its poolings as crop + reshape + mean. XLA's
    CPU convolution is slow for LeNet's few channels, and packed training (``vmap`` over
    per-target parameters) turns the convolutions into grouped ones; the patch form trains
    2.5-4x faster there. On GPU/TPU the native convolution is kept. Every other module (MLP,
    ResNet18, your own models) is returned unchanged, as is a LeNet5 that already has
    ``patch_convs=True``.

    Only for training: NTKs, model fingerprints and artifact keys use the original module (the
    structured NTK method reads its ``conv_general_dilated`` sites, and artifacts are keyed on
    its jaxpr).
    """
    if isinstance(module, LeNet5) and not module.patch_convs and jax.default_backend() == "cpu":
        return module.clone(patch_convs=True)
    return module
