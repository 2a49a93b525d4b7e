"""Packed training entry points: validate, build the program, loop over epochs, report rows.

:func:`train_pack` is the function the sweep calls for one trial: ``T`` targets (label
vectors ``y_t = sign(φ_j)``) trained from the same θ₀ in one compiled program (see
:mod:`raysweep.training.program`), returning a :class:`PackResult` whose ``rows[t][e]`` is the
metric dict of target ``t`` after epoch ``e + 1`` (keys
:data:`~raysweep.training.metrics.METRIC_NAMES`), with the final state. Pack size 1 is an
ordinary trial.
Targets may also differ in their data order (``seed``: one seed per target) and learning rate
(``lr_scale``: one factor per target), so one pack can hold several trials of a sweep that
differ in ``train.seed``, the learning rate and the labels; target ``t`` gives the rows of the
separate run with its own seed, rate and labels.
:func:`train_pack` takes either a Flax ``module`` (or an import-path model) and its
``variables``, handling batch norm itself, or an ``apply_fn`` and ``params0``.

Reporting: after every epoch the host pulls the ``(T,)`` metrics once and appends one row per
still-active target. A target whose loss became NaN/inf (any minibatch, or the evaluation)
gets one final row with ``status="diverged"`` (its metrics may be NaN/inf) and no more rows;
the other targets continue (the diverged one keeps running inside the program, unreported,
because the program's shapes are fixed). The last epoch's rows have ``status="finished"``.
``on_epoch(latest)`` is called after every epoch with a list of T dicts, the latest row of each
target — a target that stopped earlier repeats its final ``"diverged"`` row, so check
``status``/``epoch``. The loop ends early when every target has diverged.

Checkpoints (``checkpoint=path``; format in :mod:`raysweep.training.checkpoint`): after every
``checkpoint_every``-th epoch, once ``on_epoch`` for it has returned, the whole loop state (θ,
optimizer state with its update count, running statistics, step counter, threshold tracking,
diverged flags and the rows so far, for all T targets) replaces ``path`` atomically. No
checkpoint is written after the last epoch, nor after an epoch that left no target running.
A later call with the same ``path`` and the same work resumes from it. The contract:

- ``on_resume(r)`` is called exactly once, before the first epoch is trained (and before any
  ``on_epoch``), with ``r`` the last epoch restored from the checkpoint, or ``r = 0`` when
  training starts from θ₀ (no ``checkpoint``, no file yet, or a file that was ignored).
- Training then runs epochs ``r + 1 … epochs`` only, and ``on_epoch`` is called for those
  epochs only. ``PackResult.resumed_epoch`` is ``r`` too.
- The returned ``rows`` cover all epochs: those of epochs ``≤ r`` come from the checkpoint.
  Rows, final parameters and states are bitwise identical to an uninterrupted run on the same
  device and software (the data order of epoch ``e`` is ``fold_in(key(seed), e)``, per target
  ``fold_in(key(seed[t]), e)`` with per-target seeds).
- A caller that records rows in ``on_epoch`` keeps what it recorded for epochs ``≤ r`` and
  drops the rest (it will receive those epochs again). Since a checkpoint is written only after
  ``on_epoch`` returned, an earlier attempt has already delivered every epoch ``≤ r``.
- A checkpoint of other work (its key, :func:`~raysweep.training.checkpoint.checkpoint_key`,
  covers the data, labels, θ₀, initial statistics, training config, the seed or per-target
  seeds, ``lr_scale`` and options) or a damaged file (truncated, unreadable) is not loaded: a
  :class:`UserWarning` names the file, training starts from epoch 1 and the file is
  overwritten at the next checkpoint.
- The file is left in place when training ends; delete it once the results are safe.
:func:`~raysweep.training.checkpoint.checkpoint_epoch` reads a checkpoint's epoch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from raysweep.config import TrainConfig
from raysweep.models import training_variant
from raysweep.models.user import UserModel
from raysweep.training.checkpoint import checkpoint_key, load_checkpoint, save_checkpoint
from raysweep.training.metrics import make_row
from raysweep.training.optim import base_learning_rate
from raysweep.training.program import (
    Forward,
    PackConsts,
    ProgramSpec,
    get_program,
    pack_orders,
)
from raysweep.training.train_checks import (
    PackData,
    check_checkpoint,
    check_data,
    check_logits,
    check_lr_scale,
    check_options,
    check_params0,
    check_seed,
    check_train_config,
)

__all__ = ["PackResult", "train_pack"]

Rows = list[list[dict[str, Any]]]


class PackResult(NamedTuple):
    """What :func:`train_pack` returns.

    ``rows``: ``rows[t][e]`` metric dicts. ``params``: final θ, every leaf with the leading
    pack axis ``T`` (float32). ``batch_stats``: final running statistics per target in network
    mode with batch norm, else ``{}`` (the linearization keeps its initial statistics).
    ``opt_state``: final optimizer state per target. ``resumed_epoch``: the last epoch
    restored from the checkpoint (``0``: trained from θ₀; module docstring).
    """

    rows: Rows
    params: Any
    batch_stats: Any
    opt_state: Any
    resumed_epoch: int = 0


def _forward_for_functions(
    apply_fn, train_apply_fn, eval_apply_fn, batch_stats, linearized: bool
) -> tuple[Forward, Any]:
    """The :class:`Forward` of the function form and the initial statistics."""
    if linearized:
        # The linearization uses apply_fn's own (frozen, initial) statistics.
        return Forward(apply_fn=apply_fn), {}
    stats = {} if batch_stats is None else batch_stats
    if not isinstance(stats, Mapping):
        raise TypeError(f"batch_stats must be a dict (or None), got {type(stats).__name__}.")
    for name, fn in (("train_apply_fn", train_apply_fn), ("eval_apply_fn", eval_apply_fn)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable or None, got {type(fn).__name__}.")
    if stats and train_apply_fn is None:
        raise ValueError(
            "batch_stats was given but train_apply_fn is None; pass "
            "train_apply_fn=raysweep.models.make_train_apply_fn(module) too, or use "
            "train_pack(module, variables, ...)."
        )
    if stats and eval_apply_fn is None:
        raise ValueError(
            "a network with batch norm (non-empty batch_stats) is evaluated with its running "
            "statistics, which apply_fn cannot take; pass eval_apply_fn=(params, batch_stats, "
            "x) -> (n, 1), or use train_pack(module, variables, ...) which builds it."
        )
    return Forward(apply_fn, train_apply_fn, eval_apply_fn if stats else None), stats


def _fit(
    forward: Forward,
    params0: Any,
    stats0: Any,
    data: PackData,
    *,
    train: TrainConfig,
    linearized: bool,
    seed: int | Sequence[int],
    on_epoch: Callable[[list[dict]], Any] | None,
    eval_batch_size: int,
    loss: str,
    schedule: str,
    lr_scale: Any,
    centered: bool = False,
    checkpoint: Path | None = None,
    checkpoint_every: int = 5,
    on_resume: Callable[[int], Any] | None = None,
    on_state: Callable[[int, Any, Any], Any] | None = None,
) -> PackResult:
    pack_size = data.pack_size
    scale = check_lr_scale(lr_scale, pack_size)
    seed = check_seed(seed, pack_size)
    n_train, n_test = data.x_train.shape[0], data.x_test.shape[0]
    batch = min(train.batch_size, n_train)
    steps_per_epoch = n_train // batch
    spec = ProgramSpec(
        forward=forward,
        linearized=bool(linearized),
        optimizer=train.optimizer,
        momentum=float(train.momentum),
        schedule=schedule,
        loss=loss,
        epochs=train.epochs,
        batch_size=batch,
        steps_per_epoch=steps_per_epoch,
        eval_block_train=min(eval_batch_size, n_train),
        eval_block_test=min(eval_batch_size, n_test),
        centered=bool(centered),
        # More checks than steps: one after every step (the finest resolution there is).
        threshold_checks=min(train.threshold_checks, steps_per_epoch),
    )
    x_probe = jnp.asarray(data.x_train[:batch])
    check_logits("apply_fn(params0, x)", forward.infer, params0, stats0, x_probe, n=batch)
    if not linearized:
        out = check_logits(
            "train_apply_fn(params0, batch_stats, x)",
            forward.train,
            params0,
            stats0,
            x_probe,
            n=batch,
        )
        if jax.tree_util.tree_structure(out[1]) != jax.tree_util.tree_structure(stats0):
            raise ValueError(
                "train_apply_fn must return (logits, new_batch_stats) with new_batch_stats "
                "shaped like batch_stats; got a different structure."
            )

    program = get_program(spec)
    consts = PackConsts(
        params0=jax.tree_util.tree_map(jnp.asarray, params0),
        stats0=jax.tree_util.tree_map(jnp.asarray, stats0),
        x_train=jnp.asarray(data.x_train),
        y_train=jnp.asarray(data.y_train),
        x_test=jnp.asarray(data.x_test),
        y_test=jnp.asarray(data.y_test),
        lr_scale=jnp.asarray(scale),
        learning_rate=jnp.asarray(base_learning_rate(train), jnp.float32),
        loss_threshold=jnp.asarray(train.loss_threshold, jnp.float32),
        orders=pack_orders(seed, train.epochs, n_train, spec.steps_per_epoch, batch),
    )
    state = program.init_state(consts.params0, consts.stats0, pack_size)
    rows: Rows = [[] for _ in range(pack_size)]
    start = 0
    if checkpoint is not None:
        key = checkpoint_key(
            arrays={**data._asdict(), "lr_scale": scale},
            params0=params0,
            stats0=stats0,
            train=train,
            options={
                "linearized": bool(linearized),
                "centered": bool(centered),
                # An int (shared order) or the list of per-target seeds.
                "seed": seed if isinstance(seed, int) else list(seed),
                "loss": loss,
                "schedule": schedule,
                "eval_batch_size": int(eval_batch_size),
                # The check cadence of steps_to_threshold (train.threshold_checks clamped to
                # the steps per epoch); also marks the full-training-set semantics, so a
                # checkpoint of the older per-minibatch tracking is not resumed.
                "threshold_checks": spec.threshold_checks,
            },
        )
        restored = load_checkpoint(checkpoint, key=key, template=state, pack_size=pack_size)
        if restored is not None:
            state = jax.device_put(restored.state)
            rows, start = restored.rows, restored.epoch
    if on_resume is not None:
        on_resume(start)
    active = [not (r and r[-1]["status"] == "diverged") for r in rows]
    for epoch in range(start, train.epochs if any(active) else start):
        state, metrics = program.run_epoch(state, consts, epoch)
        metrics = jax.device_get(metrics)
        last = epoch == train.epochs - 1
        for t in range(pack_size):
            if not active[t]:
                continue
            if metrics["diverged"][t]:
                status, active[t] = "diverged", False
            else:
                status = "finished" if last else "running"
            rows[t].append(make_row(metrics, t, epoch=epoch + 1, status=status))
        if on_epoch is not None:
            on_epoch([r[-1] for r in rows])
        if on_state is not None:
            on_state(epoch + 1, state.params, state.batch_stats)
        if not any(active):
            break
        if checkpoint is not None and not last and (epoch + 1) % checkpoint_every == 0:
            save_checkpoint(checkpoint, key=key, state=state, epoch=epoch + 1, rows=rows)
    return PackResult(rows, state.params, state.batch_stats, state.opt_state, start)


def default_eval_batch_size() -> int:
    """Evaluation block when none is given: 128 on the CPU backend (small blocks stay in
    cache: LeNet5 on digits trains 1.3x faster per target-epoch than with 1,024), 1,024 on
    accelerators."""
    return 128 if jax.default_backend() == "cpu" else 1024


_APPLY_FN_ONLY = ("train_apply_fn", "batch_stats", "eval_apply_fn")


def _module_inputs(model: Any, variables: Any, apply_fn_options: dict[str, Any]) -> None:
    """Raise for what the module form cannot take: apply-fn options, a bad ``variables``."""
    given = [name for name, value in apply_fn_options.items() if value is not None]
    if given:
        raise TypeError(
            f"{', '.join(given)} given with a {type(model).__name__} model: "
            f"{', '.join(_APPLY_FN_ONLY)} belong to the apply_fn form train_pack(apply_fn, "
            "params0, ...) only. With a module, train_pack builds the training and evaluation "
            "functions itself and takes the initial running statistics from "
            "variables['batch_stats']; drop these options."
        )
    if not isinstance(variables, Mapping) or "params" not in variables:
        got = sorted(variables) if isinstance(variables, Mapping) else type(variables).__name__
        raise ValueError(
            f"variables must be the dict from raysweep.models.init_variables (a 'params' entry "
            f"and optionally 'batch_stats'), got {got}."
        )


def train_pack(
    model: nn.Module | UserModel | Callable,
    params_or_variables: Any,
    x_train: Any,
    y_train: Any,
    x_test: Any,
    y_test: Any,
    *,
    train: TrainConfig,
    linearized: bool,
    seed: int | Sequence[int] = 0,
    on_epoch: Callable[[list[dict]], Any] | None = None,
    eval_batch_size: int | None = None,
    loss: str = "bce",
    schedule: str = "linear",
    lr_scale: Any = None,
    centered: bool = False,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 5,
    on_resume: Callable[[int], Any] | None = None,
    train_apply_fn: Callable | None = None,
    batch_stats: Any = None,
    eval_apply_fn: Callable | None = None,
    on_state: Callable[[int, Any, Any], Any] | None = None,
) -> PackResult:
    """Train a pack of T targets (network or linearization); rows and final state.

    Two forms, chosen by ``model``:

    - **Module form** ``train_pack(module, variables, ...)``: ``module`` is a
      ``flax.linen.Module`` or a model loaded from an import path
      (:class:`raysweep.models.user.UserModel`, e.g. from :func:`raysweep.models.get_model`)
      and ``variables`` its variables (``{"params": θ₀, ["batch_stats": ...]}``, as
      :func:`raysweep.models.init_variables` returns them). Batch norm is handled: the network
      trains with batch statistics and per-target running averages (from
      ``variables["batch_stats"]``) and is evaluated with those running averages; the
      linearization uses the initial statistics throughout.
    - **Function form** ``train_pack(apply_fn, params0, ...)``: ``apply_fn(params, x) ->
      (n, 1)`` float32 logits (closes over frozen batch-norm statistics, as
      :func:`raysweep.models.make_apply_fn` builds it) and ``params0`` = θ₀. A network with
      batch norm also needs ``train_apply_fn``, ``batch_stats`` and ``eval_apply_fn``
      (accepted in this form only).

    Args:
      model: a Flax module / :class:`~raysweep.models.user.UserModel` (module form), or the
        inference ``apply_fn`` (function form). Anything else raises ``TypeError``.
      params_or_variables: module form: the variables mapping (a ``'params'`` entry, optional
        ``'batch_stats'``). Function form: ``params0``, θ₀, the parameter pytree shared by
        the network and its linearization.
      x_train: ``(n_tr, H, W, C)`` float inputs (any ``(n_tr, ...)`` the model accepts).
      y_train: ``(T, n_tr)`` labels in ``{-1, +1}``, one row per target.
      x_test: ``(n_te, ...)`` with the per-example shape of ``x_train``.
      y_test: ``(T, n_te)`` labels in ``{-1, +1}``, rows in the order of ``y_train``.
      train: :class:`~raysweep.config.TrainConfig` — optimizer (SGD with ``momentum`` from
        ``learning_rate``, or Adam from ``adam_learning_rate``), ``batch_size`` (``B =
        min(batch_size, n_tr)``, last incomplete minibatch dropped), ``epochs``,
        ``loss_threshold`` and ``threshold_checks``: a row's ``steps_to_threshold`` is the
        number of optimizer steps done when the loss on the whole training set (not a
        minibatch's) was first ``≤ loss_threshold``, ``-1`` until then; that loss is checked
        ``threshold_checks`` times per epoch, after ``ceil(i·S/threshold_checks)`` steps of
        the epoch (``i = 1 …``, the last check at the end of the epoch), and a
        ``threshold_checks`` above ``S`` is clamped to ``S`` (a check after every step).
        ``train.seed`` is not used; the data order comes from ``seed``
        (a sweep that packs several ``train.seed`` values passes them as ``seed``, one per
        target).
      linearized: ``False`` trains the network; ``True`` trains
        ``f(θ₀, x) + J(θ₀, x)(θ − θ₀)`` (``raysweep.ntk.linearize(apply_fn, params0)``) with
        the same code and the initial statistics frozen.
      seed: data-order seed(s). A non-negative int: epoch ``e`` (0-based) visits
        ``permutation(fold_in(key(seed), e), n_tr)[:S·B]`` in blocks of ``B``, the same order
        for all targets (one minibatch per step, shared). A sequence of ``T`` non-negative ints,
        one per target (in the order of the rows of ``y_train``): target ``t`` visits exactly
        the order of a separate run with ``seed=seed[t]``, so a pack of several seeds gives,
        target by target, the rows of separate runs (up to float rounding). A sequence whose
        entries are all equal is the same as that int (same program, same results). Each
        distinct seed's order is drawn once; new seed values do not recompile.
      on_epoch: called after every epoch with the list of the T latest rows (after a resume,
        only for the epochs trained in this call).
      eval_batch_size: examples per evaluation block (memory bound; results do not depend on
        it beyond float rounding); ``None``: :func:`default_eval_batch_size`.
      loss: ``"bce"`` (the paper's; targets ``(y + 1) / 2``) or ``"mse"`` (``½ (f − y)²``).
      schedule: ``"linear"`` (the paper's decay to 0 over ``epochs × S`` steps) or
        ``"constant"``.
      lr_scale: optional ``(T,)`` positive factors; target ``t`` uses learning rate
        ``lr_scale[t] × η_k`` (its final update is scaled, which for SGD and Adam is the
        optimizer with that rate, schedule included). Default ones. To pack several learning
        rates ``η_0, η_1, …`` (one per target), set ``train.learning_rate`` (SGD) or
        ``train.adam_learning_rate`` (Adam) to ``η_0``, the rate of target 0, and
        ``lr_scale[t] = η_t / η_0`` (so ``lr_scale[0] = 1``); target ``t`` then gives the rows
        of a separate run with rate ``η_t``, up to float rounding. Together with a per-target
        ``seed`` this packs a grid of (seed, learning rate, label) trials into one program.
      centered: with ``linearized``, train ``J(θ₀, x)(θ − θ₀)`` (the linearization minus
        ``f(θ₀, x)``, zero output at θ₀) instead; ``True`` without ``linearized`` raises.
      checkpoint: file path for checkpoints, or ``None`` (none). An existing checkpoint of the
        same work is resumed (the per-target running statistics too); see "Checkpoints" in
        the module docstring for the contract.
      checkpoint_every: write the checkpoint after every ``checkpoint_every``-th epoch (not
        after the last one). Each write copies the state of all T targets to the host.
      on_resume: called once before training with the last epoch restored from the
        checkpoint (``0``: starting from θ₀); keep rows of epochs ``≤`` it, drop later ones.
      train_apply_fn: function form only. Network with batch norm: training-mode ``(params,
        batch_stats, x) -> (logits, new_batch_stats)``
        (:func:`raysweep.models.make_train_apply_fn`). Ignored when ``linearized``.
      batch_stats: function form only. Initial running statistics for ``train_apply_fn``
        (``None``/``{}``: none).
      eval_apply_fn: function form only; required with non-empty ``batch_stats`` in network
        mode: inference ``(params, batch_stats, x) -> (n, 1)`` with the given running
        statistics, used for evaluation. The module form builds all three from the module.
      on_state: called after every epoch with ``(epoch, params, batch_stats)`` (1-based epoch;
        the state of all T targets, leading pack axis, on the device), e.g. to keep snapshots.

    Module form on the CPU backend: the module trains as
    :func:`raysweep.models.training_variant` of it (LeNet5 with im2col convolutions: the same
    function, 2-3x faster on XLA's CPU; same parameters).

    Returns:
      A :class:`PackResult`. ``train_pack(...).rows[t][e]``: dicts with keys
      :data:`~raysweep.training.metrics.METRIC_NAMES` after epoch ``e + 1``;
      ``len(rows[t]) == train.epochs`` unless target ``t`` diverged. After a resume the rows
      of the restored epochs are included. Also the final ``params``, ``batch_stats`` and
      ``opt_state`` per target (leading pack axis ``T``) and ``resumed_epoch``.

    Raises:
      TypeError / ValueError: before anything is compiled, for a ``model`` that is neither a
      module nor a callable, the apply-fn-only options given with a module, a ``variables``
      without ``'params'``, a bad config, data shapes, labels other than ±1, non-finite inputs
      or parameters, options (e.g. a ``seed`` list whose length is not ``T`` or with an entry
      that is not a non-negative int, a bool included), or a model that does not return
      ``(n, 1)``. Non-finite losses never raise (status ``"diverged"``).
    """
    is_module = isinstance(model, nn.Module | UserModel)
    if is_module:
        _module_inputs(
            model,
            params_or_variables,
            {
                "train_apply_fn": train_apply_fn,
                "batch_stats": batch_stats,
                "eval_apply_fn": eval_apply_fn,
            },
        )
    elif not callable(model):
        raise TypeError(
            "train_pack's first argument must be a flax.linen.Module or a model loaded from an "
            "import path (raysweep.models.get_model(name)), with the variables mapping second; "
            "or a callable apply_fn(params, x) -> (n, 1) (raysweep.models.make_apply_fn(module, "
            f"variables)), with params0 second. Got {type(model).__name__}."
        )
    train = check_train_config(train)
    if eval_batch_size is None:
        eval_batch_size = default_eval_batch_size()
    check_options(
        linearized=linearized,
        seed=seed,
        eval_batch_size=eval_batch_size,
        loss=loss,
        schedule=schedule,
        on_epoch=on_epoch,
        centered=centered,
    )
    path = check_checkpoint(checkpoint, checkpoint_every, on_resume)
    data = check_data(x_train, y_train, x_test, y_test)
    if is_module:
        params0 = params_or_variables["params"]
        check_params0(params0, "variables['params']")
        stats0 = dict(params_or_variables.get("batch_stats") or {})
        forward = Forward(module=training_variant(model))
    else:
        params0 = params_or_variables
        check_params0(params0)
        forward, stats0 = _forward_for_functions(
            model, train_apply_fn, eval_apply_fn, batch_stats, bool(linearized)
        )
    return _fit(
        forward,
        params0,
        stats0,
        data,
        train=train,
        linearized=bool(linearized),
        seed=seed,
        on_epoch=on_epoch,
        eval_batch_size=eval_batch_size,
        loss=loss,
        schedule=schedule,
        lr_scale=lr_scale,
        centered=bool(centered),
        checkpoint=path,
        checkpoint_every=checkpoint_every,
        on_resume=on_resume,
        on_state=on_state,
    )
