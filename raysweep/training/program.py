"""The compiled program of packed training: one jitted call per epoch for T targets.

A *pack* trains ``T`` targets that share the model, the optimizer, the mode (network or
linearization) and the initial parameters θ₀, and differ only in their label vectors
``y_t ∈ {±1}^n``. Every target owns a copy of θ, of the optimizer state and (network mode
with batch norm) of the running statistics; one step is ``jax.vmap`` of the single-target
step over that leading pack axis ``T``, so a pack of T is numerically the same as T separate
runs. One epoch is ``jax.lax.scan`` over ``S`` minibatch steps followed by the full-split
evaluation, all inside one ``jax.jit`` call; it compiles once per (spec, shapes).

Minibatches: ``B = min(train.batch_size, n_train)`` and ``S = n_train // B`` steps per epoch;
epoch ``e`` (0-based) visits ``perm[:S·B]`` in blocks of ``B``, where
``perm = jax.random.permutation(jax.random.fold_in(jax.random.key(seed), e), n_train)``. The
last ``n_train − S·B`` examples of each permutation are dropped (``drop_last``; the paper's
batch 128), so every step has the same shape. The data seed is either one int, and then the
order is the same for every target of the pack (one minibatch gathered per step, shared by
all targets), or one seed per target, and then target ``t`` visits the order of ``seeds[t]``,
exactly as a separate run with that seed would (a minibatch ``(T, B, ...)`` gathered per step,
one slice per target). The indices of all epochs are drawn once per run (:func:`pack_orders`:
int32 ``(epochs, S, B)`` shared, ``(epochs, S, T, B)`` per target) and passed in, so the data
seeds, like the learning rate, the loss threshold, ``lr_scale`` and the labels, are arguments
of the program: changing them does not recompile (only the spec and the shapes do; shared and
per-target orders have different shapes and so are two compilations of the same spec).

One step for target ``t`` (``k`` = update count before the step, 0-based)::

    L_t(θ) = (1/B) Σ_{i ∈ batch} ℓ(f(θ, x_i), y_{t,i})
    g = ∇θ L_t(θ_t);   u, opt_t = optimizer.update(g, opt_t);   θ_t ← θ_t + s_t · u

with ``ℓ`` from :mod:`raysweep.training.metrics`, the optimizer and ``s_t`` (``lr_scale``)
from :mod:`raysweep.training.optim`. The forward pass ``f`` is

- network, no batch norm: ``apply_fn(θ, x)``;
- network with batch norm: ``train_apply_fn(θ, stats_t, x) -> (logits, stats_t')`` (batch
  statistics; running averages carried per target), evaluated with the running statistics;
- linearized: ``f_lin(θ, x) = f(θ₀, x) + J(θ₀, x)(θ − θ₀)`` (one ``jax.jvp``, the formula of
  :func:`raysweep.ntk.linearize`) with the batch-norm statistics frozen at initialization,
  for training and evaluation alike. θ₀ is an argument of the program, not a compile-time
  constant, so large models do not inflate the executable;
- centered linearization (``spec.centered``): ``J(θ₀, x)(θ − θ₀)``, the linearization minus
  ``f(θ₀, x)``, which outputs zero at θ₀ (the pretrained-NTK comparison trains it around
  the network's final parameters).

Inside the scan each target also tracks ``diverged`` (some minibatch loss was NaN/inf).

``steps_to_threshold`` (the paper's "iterations to reach 0.01 training loss") is measured on
the *whole training set*: the mean loss over all ``n_train`` rows (what the epoch's
``train_loss`` is) is checked ``c = spec.threshold_checks`` times per epoch, after
``ceil(i·S/c)`` steps of the epoch for ``i = 1 … c`` (:func:`threshold_check_steps`; the last
check is the end-of-epoch evaluation, so ``c = 1`` costs nothing extra and each further check
one forward pass over the training set). A target's ``steps_to_threshold`` is the global update
count ``step`` (1-based) at the first check where its loss is ``≤ train.loss_threshold``, ``-1``
until then (a NaN loss never reaches it). ``c`` is at most ``S`` (``train_pack`` clamps a
larger ``train.threshold_checks`` to ``S``: a check after every step). With ``c = 1`` an epoch
is one ``lax.scan`` over its ``S`` steps; with ``c > 1`` it is an outer scan over ``c`` chunks
of ``ceil(S/c)`` steps (the shorter chunks padded with steps that a ``lax.cond`` skips), with a
training-set evaluation after every chunk but the last. Nothing here raises on non-finite
values.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from raysweep.models import make_apply_fn, make_train_apply_fn
from raysweep.training.metrics import accuracy_terms, example_losses, param_statistics
from raysweep.training.optim import make_optimizer, scale_updates

__all__ = [
    "Forward",
    "PackConsts",
    "PackProgram",
    "PackState",
    "ProgramSpec",
    "epoch_orders",
    "get_program",
    "pack_orders",
    "threshold_check_steps",
]


@dataclasses.dataclass(frozen=True)
class Forward:
    """The model's forward passes, with batch-norm statistics passed explicitly.

    Either ``module`` (a Flax module; everything is derived from it) or ``apply_fn``
    (``(params, x) -> (n, 1)``, inference, frozen statistics closed over) with optional
    ``train_apply_fn`` (``(params, stats, x) -> (logits, new_stats)``) and ``eval_apply_fn``
    (``(params, stats, x) -> (n, 1)``, inference with the given running statistics).
    Hashable by the identity of the callables (and the value of the module), so the compiled
    program is reused across calls with the same functions.
    """

    apply_fn: Callable | None = None
    train_apply_fn: Callable | None = None
    eval_apply_fn: Callable | None = None
    module: nn.Module | None = None

    def infer(self, params: Any, stats: Any, x: jax.Array) -> jax.Array:
        """Inference-mode logits ``(n, 1)`` with running statistics ``stats`` (``{}``: none)."""
        if self.module is not None:
            variables = {"params": params, "batch_stats": stats} if stats else {"params": params}
            return make_apply_fn(self.module, variables)(params, x)
        if stats and self.eval_apply_fn is not None:
            return self.eval_apply_fn(params, stats, x)
        return self.apply_fn(params, x)

    def train(self, params: Any, stats: Any, x: jax.Array) -> tuple[jax.Array, Any]:
        """Training-mode ``(logits (n, 1), new_stats)``; models without statistics: ``stats``."""
        if self.module is not None:
            return make_train_apply_fn(self.module)(params, stats, x)
        if self.train_apply_fn is not None:
            return self.train_apply_fn(params, stats, x)
        return self.apply_fn(params, x), stats


@dataclasses.dataclass(frozen=True)
class ProgramSpec:
    """Everything static about a pack program (the compile cache key).

    ``optimizer``/``momentum`` as in :class:`~raysweep.config.TrainConfig`; ``batch_size`` is
    the effective ``B``, ``steps_per_epoch`` is ``S``; ``eval_block_train`` and
    ``eval_block_test`` are the evaluation block sizes (``min(eval_batch_size, n)``). The
    learning rate, the loss threshold, the data seed, ``lr_scale`` and the labels are program
    *arguments* (:class:`PackConsts`), so changing them does not recompile.
    ``threshold_checks``: checks of the training-set loss per epoch for
    ``steps_to_threshold``, ``1 ≤ threshold_checks ≤ steps_per_epoch`` (module docstring).
    """

    forward: Forward
    linearized: bool
    optimizer: str
    momentum: float
    schedule: str
    loss: str
    epochs: int
    batch_size: int
    steps_per_epoch: int
    eval_block_train: int
    eval_block_test: int
    centered: bool = False
    threshold_checks: int = 1

    def __post_init__(self):
        if not 1 <= self.threshold_checks <= self.steps_per_epoch:
            raise ValueError(
                f"threshold_checks must be in [1, steps_per_epoch={self.steps_per_epoch}], got "
                f"{self.threshold_checks}."
            )

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


class PackState(NamedTuple):
    """Training state; every leaf except ``step`` has the leading pack axis ``T``.

    ``params``: θ per target. ``opt_state``: optimizer state per target. ``batch_stats``:
    running statistics per target (network mode with batch norm), else ``{}``. ``step``:
    int32 scalar, updates so far. ``steps_to_threshold``: int32 ``(T,)``. ``diverged``: bool
    ``(T,)``.
    """

    params: Any
    opt_state: Any
    batch_stats: Any
    step: jax.Array
    steps_to_threshold: jax.Array
    diverged: jax.Array


class PackConsts(NamedTuple):
    """Program inputs that do not change during training (device arrays).

    ``params0``: θ₀ (no pack axis). ``stats0``: statistics the linearization freezes (``{}``
    when ``apply_fn`` closes over them). ``x_*``: float32 ``(n, ...)``. ``y_*``: float32
    ``(T, n)``. ``lr_scale``: float32 ``(T,)``. ``learning_rate`` (η₀) and ``loss_threshold``:
    float32 scalars. ``orders``: minibatch indices from :func:`pack_orders`, int32
    ``(epochs, S, B)`` when all targets share the data order, ``(epochs, S, T, B)`` when each
    target has its own.
    """

    params0: Any
    stats0: Any
    x_train: jax.Array
    y_train: jax.Array
    x_test: jax.Array
    y_test: jax.Array
    lr_scale: jax.Array
    learning_rate: jax.Array
    loss_threshold: jax.Array
    orders: jax.Array


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _orders(key: jax.Array, epochs: int, n: int, steps: int, batch: int) -> jax.Array:
    def one(epoch):
        perm = jax.random.permutation(jax.random.fold_in(key, epoch), n)
        return perm[: steps * batch].reshape(steps, batch).astype(jnp.int32)

    return jax.vmap(one)(jnp.arange(epochs))


def epoch_orders(seed: int, epochs: int, n: int, steps: int, batch: int) -> jax.Array:
    """Minibatch indices of every epoch, int32 ``(epochs, steps, batch)``.

    Row ``e`` is ``permutation(fold_in(key(seed), e), n)[:steps·batch]`` in blocks of
    ``batch`` (the remainder of the permutation is dropped). Computed once per run, in its own
    small program shared by all packs with the same ``(epochs, n, steps, batch)``; the
    permutation sampler is kept out of the epoch program because it is slow to compile on CPU.
    """
    return _orders(jax.random.key(seed), epochs, n, steps, batch)


def pack_orders(
    seed: int | Sequence[int], epochs: int, n: int, steps: int, batch: int
) -> jax.Array:
    """Minibatch indices of a pack: shared ``(epochs, steps, batch)`` or ``(epochs, steps, T,
    batch)``.

    ``seed`` an int: :func:`epoch_orders` of it, the order of every target. ``seed`` a sequence
    of ``T`` ints: ``[:, :, t]`` is :func:`epoch_orders` of ``seed[t]``, so target ``t`` visits
    the order of a separate run with ``seed[t]``. Each distinct seed is drawn once, by the same
    small program (its value is an argument, so new seeds do not recompile). Callers pass an
    int when all seeds are equal (:func:`~raysweep.training.train_checks.check_seed` does), which
    keeps the shared-order program.
    """
    if isinstance(seed, numbers.Integral):
        return epoch_orders(int(seed), epochs, n, steps, batch)
    seeds = [int(s) for s in seed]
    distinct = sorted(set(seeds))
    drawn = {s: np.asarray(epoch_orders(s, epochs, n, steps, batch)) for s in distinct}
    per_target = np.stack([drawn[s] for s in seeds], axis=2)  # (epochs, steps, T, batch)
    return jnp.asarray(per_target)


def threshold_check_steps(steps_per_epoch: int, checks: int) -> tuple[int, ...]:
    """Steps of an epoch after which the training-set loss is checked: ``ceil(i·S/c)``.

    ``i = 1 … c`` with ``S = steps_per_epoch`` and ``c = checks`` (``1 ≤ c ≤ S``): ``c``
    strictly increasing counts, the last ``S`` (the end of the epoch); consecutive checks are
    ``floor(S/c)`` or ``ceil(S/c)`` steps apart. E.g. ``S = 4, c = 3``: ``(2, 3, 4)``.
    """
    if not 1 <= checks <= steps_per_epoch:
        raise ValueError(f"checks must be in [1, {steps_per_epoch}], got {checks}.")
    return tuple(-(-i * steps_per_epoch // checks) for i in range(1, checks + 1))


def _repeat(tree: Any, pack_size: int) -> Any:
    return jax.tree_util.tree_map(
        lambda a: jnp.repeat(jnp.asarray(a)[None], pack_size, axis=0), tree
    )


class PackProgram:
    """The optimizer and the jitted epoch of one :class:`ProgramSpec`."""

    def __init__(self, spec: ProgramSpec):
        self.spec = spec
        donate = () if jax.default_backend() == "cpu" else (0,)
        self._epoch = jax.jit(self._epoch_impl, donate_argnums=donate)
        self._init = jax.jit(self._init_impl, static_argnums=(2,))

    def optimizer(self, learning_rate: Any) -> optax.GradientTransformation:
        """The spec's optimizer with base rate ``learning_rate`` (float or traced scalar)."""
        spec = self.spec
        return make_optimizer(
            spec.optimizer,
            learning_rate,
            momentum=spec.momentum,
            total_steps=spec.total_steps,
            schedule=spec.schedule,
        )

    # ------------------------------------------------------------------ forward passes

    def _linear(self, params: Any, x: jax.Array, consts: PackConsts) -> jax.Array:
        delta = jax.tree_util.tree_map(lambda p, p0: p - p0, params, consts.params0)
        f0, df = jax.jvp(
            lambda p: self.spec.forward.infer(p, consts.stats0, x), (consts.params0,), (delta,)
        )
        return df if self.spec.centered else f0 + df

    def _train_forward(self, params, stats, x, consts):
        if self.spec.linearized:
            return self._linear(params, x, consts), stats
        return self.spec.forward.train(params, stats, x)

    def _infer(self, params, stats, x, consts):
        if self.spec.linearized:
            return self._linear(params, x, consts)
        return self.spec.forward.infer(params, stats, x)

    # ------------------------------------------------------------------ state

    def init_state(self, params0: Any, stats0: Any, pack_size: int) -> PackState:
        """T copies of θ₀ and of the optimizer state (and of ``stats0`` in network mode)."""
        return self._init(params0, stats0, pack_size)

    def _init_impl(self, params0: Any, stats0: Any, pack_size: int) -> PackState:
        params = _repeat(params0, pack_size)
        stats = {} if self.spec.linearized else _repeat(stats0, pack_size)
        return PackState(
            params=params,
            # The state's structure does not depend on the rate; 1.0 is a placeholder.
            opt_state=jax.vmap(self.optimizer(1.0).init)(params),
            batch_stats=stats,
            step=jnp.zeros((), jnp.int32),
            steps_to_threshold=jnp.full((pack_size,), -1, jnp.int32),
            diverged=jnp.zeros((pack_size,), bool),
        )

    def run_epoch(
        self, state: PackState, consts: PackConsts, epoch: int
    ) -> tuple[PackState, dict[str, jax.Array]]:
        """Train one epoch (0-based index ``epoch``) and evaluate; one compiled call.

        Returns the new state and the metrics: ``(T,)`` arrays ``train_loss``,
        ``train_accuracy``, ``test_loss``, ``test_accuracy``, ``steps_to_threshold``,
        ``l2_distance``, ``cosine_distance``, ``weight_norm``, ``grad_norm``, ``diverged``
        (minibatch or evaluation loss non-finite at some point) and the scalar ``step``.
        """
        return self._epoch(state, consts, jnp.asarray(epoch, jnp.int32))

    # ------------------------------------------------------------------ compiled body

    def _step(self, carry, idx, consts: PackConsts):
        """One update of every target; ``idx`` is ``(B,)`` (shared order) or ``(T, B)``."""
        spec = self.spec
        tx = self.optimizer(consts.learning_rate)

        def one(params, opt_state, stats, y, scale, xb):
            def objective(p):
                logits, new_stats = self._train_forward(p, stats, xb, consts)
                return jnp.mean(example_losses(logits[:, 0], y, spec.loss)), new_stats

            (loss, new_stats), grads = jax.value_and_grad(objective, has_aux=True)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, scale_updates(updates, scale))
            return params, opt_state, new_stats, loss, optax.tree.norm(grads)

        if idx.ndim == 1:
            # Shared order: one minibatch of inputs for the whole pack.
            xb = jnp.take(consts.x_train, idx, axis=0)
            yb = jnp.take(consts.y_train, idx, axis=1)
            params, opt_state, stats, loss, gnorm = jax.vmap(
                lambda p, o, s, y, c: one(p, o, s, y, c, xb)
            )(carry.params, carry.opt_state, carry.batch_stats, yb, consts.lr_scale)
        else:
            # Per-target orders: minibatch (T, B, ...) of inputs, (T, B) of labels.
            xb = jnp.take(consts.x_train, idx, axis=0)
            yb = jnp.take_along_axis(consts.y_train, idx, axis=1)
            params, opt_state, stats, loss, gnorm = jax.vmap(one)(
                carry.params, carry.opt_state, carry.batch_stats, yb, consts.lr_scale, xb
            )
        new = PackState(
            params=params,
            opt_state=opt_state,
            batch_stats=stats,
            step=carry.step + 1,
            steps_to_threshold=carry.steps_to_threshold,
            diverged=carry.diverged | ~jnp.isfinite(loss),
        )
        return new, gnorm

    def _check_threshold(self, state: PackState, train_loss: jax.Array, consts: PackConsts):
        """``steps_to_threshold`` after a check of the training-set loss ``(T,)`` (NaN: no)."""
        reached = (state.steps_to_threshold < 0) & (train_loss <= consts.loss_threshold)
        return jnp.where(reached, state.step, state.steps_to_threshold)

    def _chunked_steps(self, state: PackState, order: jax.Array, consts: PackConsts):
        """The epoch's ``S`` steps in ``c`` chunks, checking the training-set loss after every
        chunk but the last; returns the state and the ``(S, T)`` gradient norms in step order.
        """
        spec = self.spec
        c, steps = spec.threshold_checks, spec.steps_per_epoch
        ends = threshold_check_steps(steps, c)
        starts = (0, *ends[:-1])
        # Static (c, length) positions into the epoch's order; padding repeats a chunk's last
        # index and is skipped (valid False).
        bounds = list(zip(starts, ends, strict=True))
        length = max(e - s for s, e in bounds)
        pos = np.array([[min(s + j, e - 1) for j in range(length)] for s, e in bounds])
        valid = np.array([[s + j < e for j in range(length)] for s, e in bounds])
        chunks = jnp.take(order, jnp.asarray(pos.reshape(-1)), axis=0)
        chunks = chunks.reshape(c, length, *order.shape[1:])
        step = functools.partial(self._step, consts=consts)

        if valid.all():  # c divides S: no padding
            inner = step
            xs = chunks
        else:
            gnorm_shape = jax.eval_shape(step, state, order[0])[1]

            def inner(carry, x):
                idx, ok = x
                return jax.lax.cond(
                    ok,
                    lambda s: step(s, idx),
                    lambda s: (s, jnp.zeros(gnorm_shape.shape, gnorm_shape.dtype)),
                    carry,
                )

            xs = (chunks, jnp.asarray(valid))

        def outer(carry, x):
            i, chunk = x
            carry, gnorms = jax.lax.scan(inner, carry, chunk)

            def check():
                loss, _ = self._evaluate(
                    carry, consts.x_train, consts.y_train, spec.eval_block_train, consts
                )
                return self._check_threshold(carry, loss, consts)

            # The last chunk's check is the end-of-epoch evaluation (_epoch_impl).
            reached = jax.lax.cond(i < c - 1, check, lambda: carry.steps_to_threshold)
            return carry._replace(steps_to_threshold=reached), gnorms

        state, gnorms = jax.lax.scan(outer, state, (jnp.arange(c), xs))
        flat = np.flatnonzero(valid.reshape(-1))  # the S real steps, in order
        gnorms = jnp.take(gnorms.reshape(c * length, *gnorms.shape[2:]), flat, axis=0)
        return state, gnorms

    def _evaluate(self, state: PackState, x, y, block: int, consts: PackConsts):
        """Mean loss and accuracy per target over all ``n`` rows, in blocks of ``block``."""
        n = x.shape[0]
        num_blocks = -(-n // block)

        def body(acc, b):
            idx = b * block + jnp.arange(block)
            mask = idx < n
            idx = jnp.minimum(idx, n - 1)
            xb = jnp.take(x, idx, axis=0)
            yb = jnp.take(y, idx, axis=1)
            logits = jax.vmap(lambda p, s: self._infer(p, s, xb, consts))(
                state.params, state.batch_stats
            )[..., 0]
            losses = jnp.where(mask, example_losses(logits, yb, self.spec.loss), 0.0)
            correct = jnp.where(mask, accuracy_terms(logits, yb), 0.0)
            return (acc[0] + losses.sum(-1), acc[1] + correct.sum(-1)), None

        zeros = jnp.zeros((y.shape[0],), jnp.float32)
        (loss_sum, correct), _ = jax.lax.scan(body, (zeros, zeros), jnp.arange(num_blocks))
        return loss_sum / n, correct / n

    def _epoch_impl(self, state: PackState, consts: PackConsts, epoch: jax.Array):
        spec = self.spec
        order = consts.orders[epoch]
        if spec.threshold_checks == 1:
            state, gnorms = jax.lax.scan(functools.partial(self._step, consts=consts), state, order)
        else:
            state, gnorms = self._chunked_steps(state, order, consts)
        train_loss, train_acc = self._evaluate(
            state, consts.x_train, consts.y_train, spec.eval_block_train, consts
        )
        # The end-of-epoch check of the training-set loss (the last of the epoch's checks).
        state = state._replace(steps_to_threshold=self._check_threshold(state, train_loss, consts))
        test_loss, test_acc = self._evaluate(
            state, consts.x_test, consts.y_test, spec.eval_block_test, consts
        )
        stats = jax.vmap(param_statistics, in_axes=(0, None))(state.params, consts.params0)
        diverged = state.diverged | ~jnp.isfinite(train_loss) | ~jnp.isfinite(test_loss)
        state = state._replace(diverged=diverged)
        metrics = {
            "step": state.step,
            "train_loss": train_loss,
            "train_accuracy": train_acc,
            "test_loss": test_loss,
            "test_accuracy": test_acc,
            "steps_to_threshold": state.steps_to_threshold,
            "grad_norm": jnp.mean(gnorms, axis=0),
            "diverged": diverged,
            **stats,
        }
        return state, metrics


@functools.lru_cache(maxsize=16)
def get_program(spec: ProgramSpec) -> PackProgram:
    """The :class:`PackProgram` of ``spec``, built once per process (jit caches per shape)."""
    return PackProgram(spec)
