"""The gate: the intermediate module whose output carries the authentication bits, found by module name.

Nothing is cut out of the network: the gate is observed (and, for tail training, replaced) with forward
hooks on the unchanged model. The model is split into a *head* (every module that runs before the gate's
output exists, the gate included) and a *tail* (every module that starts after it) by tracing one forward
pass in execution order, so the split follows what the network does, not how its modules are nested.

Default gates (:data:`DEFAULT_GATES`), chosen on the validation split only (``bench/dev/auth_val_sweep.py``;
figures in the README's AuthNet section):

* LeNet-5 ``body.pool1`` (after the first conv block). With the default recipe on MNIST's validation split:
  98.44% with the key, 2.68% without; at ``body.pool2`` (the paper's position) 98.06% and 9.14%, and keys
  generated independently got further in (mean 35.5% against 21.4%).
* small VGG ``body.block2`` (the second pooling stage): 91.40% with the key, 11.4% without on Fashion-MNIST's
  validation split (an earlier training of the VGG victim). ``body.block3`` was measured on the test split
  only (an earlier study, no longer used); the bench's validation gate study and auto trials re-measure both.
* ResNet-20 ``body.layer3.0`` (the first block of the last stage; the tail is its other two blocks, pooling and the
  classifier). On Fashion-MNIST's validation split (``bench/dev/auth_val_sweep.py --victim
  resnet20-fashion-mnist --independent-keys 3 '{"gate": "body.layer3.0"}'``, 12-epoch victim at 91.98%): 90.78%
  with the key, 5.82% without, random keys at most 7.9%, independent keys at most 12.8%, decoy keys 12.9%, about
  0.22x of its clean training (8 tail epochs; its default recipe now runs 12 with the keyed samples weighing 4,
  :data:`~modelshield.auth.ARCHITECTURE_RECIPES`: on a retrained victim at 92.32%, 91.36% with the key and the
  bits drawn from every channel). Its
  former default ``body.layer3`` leaves only pooling and the classifier as the tail and gave no protection (a
  3-epoch victim: 84.4% with the key, 86.3% without); ``auto`` as the default would cost its trials on top
  (about 0.6x). The bench's gate study re-measures it beside ``body.layer3.1`` and
  ``body.layer3``.
* any other network: ``"auto"`` (:func:`gate_candidates`, :mod:`modelshield.auth.autogate`).

A gate must be a cut point of the graph: the tail may only depend on the gate's output. Residual blocks
that skip over the gate break this; :func:`trace_gate` flags the split as not *cacheable* then (tail
training falls back to running the whole network every step).

Example:
    >>> import torch
    >>> from modelshield.models import build_model
    >>> model = build_model("lenet5", in_channels=1, image_size=8, num_classes=10)
    >>> default_gate(model)
    'body.pool1'
    >>> split = trace_gate(model, "body.pool2", torch.rand(2, 1, 8, 8))
    >>> split.gate_shape, split.tail[:2], split.cacheable
    ((16, 2, 2), ('body.flatten', 'body.fc1'), True)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from modelshield.errors import ConfigError, did_you_mean

__all__ = ["AUTO", "DEFAULT_GATES", "GateSplit", "TailRunner", "default_gate", "forward_macs", "gate_candidates", "gate_output",
           "resolve_module", "trace_gate"]

AUTO = "auto"
_POOLING = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.LPPool2d, nn.FractionalMaxPool2d)
DEFAULT_GATES: dict[str, str] = {"LeNet5": "body.pool1", "SmallVGG": "body.block2", "ResNet20": "body.layer3.0"}


class _GateReached(Exception):
    """Raised by a hook to stop a forward pass as soon as the gate's output exists."""

    def __init__(self, output: torch.Tensor) -> None:
        super().__init__("gate reached")
        self.output = output


def resolve_module(model: nn.Module, name: str) -> nn.Module:
    """Return the submodule called ``name`` (as in ``model.named_modules()``).

    Raises:
        ConfigError: no such module; the message suggests a close name.

    Example:
        >>> from modelshield.models import build_model
        >>> type(resolve_module(build_model("lenet5", in_channels=1, image_size=8, num_classes=3), "body.conv2")).__name__
        'Conv2d'
    """
    modules = dict(model.named_modules())
    if not name or name not in modules:
        names = [n for n in modules if n]
        raise ConfigError(f"gate {name!r} is not a module of {type(model).__name__}{did_you_mean(name, names)}; "
                          f"modules: {', '.join(names[:40])}{' ...' if len(names) > 40 else ''}")
    return modules[name]


def default_gate(model: nn.Module) -> str:
    """The default gate of a model: its entry in :data:`DEFAULT_GATES`, else ``"auto"``.

    ``"auto"`` tells :func:`~modelshield.auth.embed` to choose among :func:`gate_candidates` by short embedding
    trials on the validation split (:func:`~modelshield.auth.autogate.choose_gate`).

    Example:
        >>> from modelshield.models import build_model
        >>> default_gate(build_model("vgg", in_channels=1, image_size=8, num_classes=2))
        'body.block2'
        >>> default_gate(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 2)))
        'auto'
    """
    name = DEFAULT_GATES.get(type(model).__name__)
    if name is not None and name in dict(model.named_modules()):
        return name
    return AUTO


def _trace_outputs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module, torch.Tensor]]:
    """(name, module, output) for every module call of one eval-mode forward pass, in the order calls end."""
    calls: list[tuple[str, nn.Module, torch.Tensor]] = []
    hooks = [module.register_forward_hook(
        lambda m, _i, out, name=name: calls.append((name, m, out)) if isinstance(out, torch.Tensor) else None)
        for name, module in model.named_modules() if name]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return calls


def gate_candidates(model: nn.Module, example: torch.Tensor) -> tuple[str, ...]:
    """The outputs of a CNN's blocks that can serve as a gate, in execution order.

    A *block output* is the output of a container module (one with submodules: a ``Sequential`` stage, a
    residual block, a custom block) or of a pooling layer; when nested blocks end on the same tensor (a stage
    and its last block) the outermost name is kept. A candidate must be 4-D with more than one spatial
    position, run once per forward pass, and be a cut of the graph (:attr:`GateSplit.cacheable`: the rest of
    the network depends on it alone, which rules out a residual branch's inside) with trainable modules after it.
    Works for any ``nn.Module`` (``Sequential`` or not): the modules are found by tracing one forward pass.

    Args:
        model: the network.
        example: an input batch of at least 2 images.

    Raises:
        ConfigError: no candidate (e.g. an MLP, or a network without blocks or pooling layers).

    Example:
        >>> from modelshield.models import build_model
        >>> gate_candidates(build_model("lenet5", in_channels=1, image_size=28, num_classes=10), torch.rand(2, 1, 28, 28))
        ('body.pool1', 'body.pool2')
        >>> gate_candidates(build_model("vgg", in_channels=1, image_size=28, num_classes=10), torch.rand(2, 1, 28, 28))
        ('body.block1', 'body.block2', 'body.block3')
    """
    if example.shape[0] < 2:
        raise ConfigError(f"gate_candidates needs an example batch of at least 2 images, got {example.shape[0]}")
    calls = _trace_outputs(model, example)
    runs: dict[str, int] = {}
    for name, _m, _out in calls:
        runs[name] = runs.get(name, 0) + 1
    outermost: dict[int, str] = {}  # tensor identity -> the last module (the outermost) that returned it
    order: list[int] = []
    for name, module, out in calls:
        block = any(True for _ in module.children()) or isinstance(module, _POOLING)
        if not block or runs[name] != 1 or out.dim() != 4 or out.shape[2] * out.shape[3] <= 1:
            continue
        if id(out) not in outermost:
            order.append(id(out))
        outermost[id(out)] = name
    found = []
    for ident in order:
        try:
            split = trace_gate(model, outermost[ident], example)
        except ConfigError:
            continue
        if split.cacheable:
            found.append(split.gate)
    if not found:
        raise ConfigError(f"{type(model).__name__} has no block output usable as a gate (4-D, spatial, a cut of the graph, "
                          "followed by trainable layers); name the gate explicitly")
    return tuple(found)


def forward_macs(model: nn.Module, example: torch.Tensor, names: tuple[str, ...] | None = None) -> int:
    """Multiply-accumulates of the convolutions and linear layers of one image's forward pass (eval mode).

    Args:
        model: the network.
        example: an input batch (its first image is used).
        names: count only these modules (e.g. a split's tail); None counts them all.

    Example:
        >>> forward_macs(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3)), torch.rand(1, 1, 4, 4))
        96
    """
    wanted = None if names is None else set(names)
    total = 0
    for name, module, out in _trace_outputs(model, example[:1]):
        if wanted is not None and name not in wanted:
            continue
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += out.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            total += out.numel() * module.in_features
    return int(total)


@dataclass(frozen=True)
class GateSplit:
    """A model split at a gate, found by tracing one forward pass.

    Attributes:
        gate: the gate module's name.
        gate_shape: shape of one sample's gate output (e.g. ``(C, H, W)``).
        head: names of the modules that run before the gate's output exists (the gate included); frozen and
            kept in eval mode during tail training.
        tail: names of the modules that start after the gate's output exists; the only ones trained.
        cacheable: True when the tail depends on nothing but the gate output, checked numerically, so gate
            activations can be computed once and the tail trained on them.
    """

    gate: str
    gate_shape: tuple[int, ...]
    head: tuple[str, ...]
    tail: tuple[str, ...]
    cacheable: bool

    @property
    def channels(self) -> int:
        """Number of gate channels (dimension 1 of the gate output)."""
        return int(self.gate_shape[0])

    def tail_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The parameters owned directly by tail modules."""
        modules = dict(model.named_modules())
        return [p for name in self.tail for p in modules[name].parameters(recurse=False)]

    def freeze_head(self, model: nn.Module) -> None:
        """Make only tail parameters trainable (``requires_grad``); everything else is frozen."""
        for p in model.parameters():
            p.requires_grad_(False)
        for p in self.tail_parameters(model):
            p.requires_grad_(True)

    def set_train_mode(self, model: nn.Module) -> None:
        """Tail in train mode, head in eval mode (frozen BatchNorm statistics, no dropout before the gate)."""
        model.train()
        modules = dict(model.named_modules())
        for name in self.head:
            modules[name].eval()


def trace_gate(model: nn.Module, gate: str, example: torch.Tensor) -> GateSplit:
    """Split ``model`` at ``gate`` by tracing a forward pass on ``example`` (eval mode, no gradients).

    Raises:
        ConfigError: unknown gate, a gate that does not run, a module that runs both before and after the gate
            (shared weights), or a module that wraps the gate and holds parameters of its own.
    """
    resolve_module(model, gate)
    if example.shape[0] < 2:
        raise ConfigError(f"trace_gate needs an example batch of at least 2 images, got {example.shape[0]}")
    events: list[tuple[str, str]] = []
    gate_out: list[torch.Tensor] = []
    hooks = []
    for name, module in model.named_modules():
        hooks.append(module.register_forward_pre_hook(lambda _m, _i, name=name: events.append(("start", name))))

        def _end(_m: nn.Module, _i: object, out: object, name: str = name) -> None:
            events.append(("end", name))
            if name == gate and isinstance(out, torch.Tensor):
                gate_out.append(out)
        hooks.append(module.register_forward_hook(_end))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            full = model(example)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    if not gate_out:
        raise ConfigError(f"gate {gate!r} did not run (or did not return a tensor) in a forward pass of {type(model).__name__}")
    if len(gate_out) > 1:
        raise ConfigError(f"gate {gate!r} runs {len(gate_out)} times per forward pass; choose a module that runs once")
    cut = events.index(("end", gate))
    spans: dict[str, list[list[int]]] = {}
    for i, (kind, name) in enumerate(events):
        if kind == "start":
            spans.setdefault(name, []).append([i, -1])
        else:
            open_spans = [s for s in spans[name] if s[1] < 0]
            open_spans[-1][1] = i
    head, tail = [], []
    modules = dict(model.named_modules())
    for name, runs in spans.items():
        sides = {"head" if end <= cut else "tail" if start > cut else "wrap" for start, end in runs}
        if len(sides) > 1:
            raise ConfigError(f"module {name or '<root>'!r} runs both before and after gate {gate!r} (shared weights); "
                              "choose a gate after its last use")
        side = sides.pop()
        if side == "head":
            head.append(name)
        elif side == "tail":
            tail.append(name)
        elif any(True for _ in modules[name].parameters(recurse=False)):
            raise ConfigError(f"module {name or '<root>'!r} wraps gate {gate!r} and holds parameters of its own; "
                              "choose a gate at its level")
    split = GateSplit(gate, tuple(gate_out[0].shape[1:]), tuple(head), tuple(tail), cacheable=False)
    if not tail:
        raise ConfigError(f"gate {gate!r} leaves no tail to train: it is the last module of {type(model).__name__}")
    if not split.tail_parameters(model):
        raise ConfigError(f"the tail after gate {gate!r} has no parameters to train")
    try:
        model.eval()
        with torch.no_grad():
            again = TailRunner(model, split, example[:1])(gate_out[0])
        cacheable = again.shape == full.shape and torch.allclose(again, full, rtol=1e-4, atol=1e-5 * (1 + float(full.abs().max())))
    except RuntimeError:
        cacheable = False
    finally:
        model.train(was_training)
    return GateSplit(gate, split.gate_shape, split.head, split.tail, cacheable=cacheable)


@contextlib.contextmanager
def _hook(module: nn.Module, fn: object) -> Iterator[None]:
    handle = module.register_forward_hook(fn)  # type: ignore[arg-type]
    try:
        yield
    finally:
        handle.remove()


def gate_output(model: nn.Module, gate: str, x: torch.Tensor) -> torch.Tensor:
    """The gate's output for an input batch; the forward pass stops at the gate (the tail never runs).

    Gradients flow if ``x`` requires them. The model's train/eval mode is left as it is.

    Example:
        >>> import torch
        >>> from modelshield.models import build_model
        >>> model = build_model("lenet5", in_channels=1, image_size=8, num_classes=10).eval()
        >>> tuple(gate_output(model, "body.pool2", torch.rand(3, 1, 8, 8)).shape)
        (3, 16, 2, 2)
    """
    def stop(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
        raise _GateReached(out)

    with _hook(resolve_module(model, gate), stop):
        try:
            model(x)
        except _GateReached as reached:
            return reached.output
    raise ConfigError(f"gate {gate!r} did not run in a forward pass of {type(model).__name__}")


class TailRunner:
    """Run only the tail of a model on given gate activations, using the unchanged model.

    The model is called on a one-image placeholder; a hook replaces the gate's output with the given batch
    of activations, so the head costs one image instead of a batch. Valid only for a cacheable split
    (:attr:`GateSplit.cacheable`), where the tail depends on nothing else.
    """

    def __init__(self, model: nn.Module, split: GateSplit, placeholder: torch.Tensor) -> None:
        self.model, self.split = model, split
        self.placeholder = placeholder[:1].detach().clone()
        self._gate = resolve_module(model, split.gate)

    def __call__(self, activations: torch.Tensor) -> torch.Tensor:
        def replace(_m: nn.Module, _i: object, _out: torch.Tensor) -> torch.Tensor:
            return activations

        with _hook(self._gate, replace):
            return self.model(self.placeholder)
