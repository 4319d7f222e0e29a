"""Model surgery: find and replace layers, adapt the first convolution, probe shapes, cut a model in two.

Everything here works on any ``nn.Module`` and is used by the torchvision and timm builders and by
:meth:`~activelab.models.heads.ActiveModel.from_classifier`.

Cutting a model in two (:func:`split_at`) uses ``torch.fx``: the model's ``forward`` is traced
symbolically into a graph of operations, the named layer is kept as one opaque step, and the graph is cut
right after it. The *trunk* is every operation up to and including that layer, the *rest* every operation
after it, fed by the layer's output alone. This works for any model fx can trace, whatever the Python in
its ``forward`` (``torch.flatten``, ``x.view(x.size(0), -1)``, residual additions inside the trunk, ...),
and fails with one sentence when

* fx cannot trace the model (control flow that depends on tensor values, for example);
* the layer is not called in ``forward``, or called more than once;
* something after the layer also uses a value computed before it (a skip connection crossing the cut,
  the input image reused at the end): the rest would then need more than the layer's output;
* a layer with weights is used on both sides of the cut (its weights could not belong to one side).
"""

from __future__ import annotations

import contextlib
import difflib
import warnings
from typing import Callable, Iterator

import torch
import torch.fx
from torch import nn

from activelab.errors import ConfigError


def set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule of ``root`` called ``name`` (dotted, as in ``named_modules``) by ``module``."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The name and module of the first ``nn.Conv2d`` of ``model`` (in the order the layers were defined)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ConfigError(f"{type(model).__name__} has no Conv2d layer whose input channels activelab could adapt.")


def adapt_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of ``conv`` taking ``in_channels`` inputs: filters averaged over channels, repeated, rescaled.

    The filters are scaled by ``conv.in_channels / in_channels``, so an image whose channels are all equal
    gives exactly the response of the original convolution on that image replicated to its channels.
    """
    if conv.groups != 1:
        raise ConfigError(f"the first convolution is grouped (groups={conv.groups}), so activelab cannot "
                          f"adapt it to {in_channels} input channels.")
    adapted = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                        conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode,
                        device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        mean = conv.weight.mean(dim=1, keepdim=True)
        adapted.weight.copy_(mean.repeat(1, in_channels, 1, 1) * (conv.in_channels / in_channels))
        if conv.bias is not None:
            adapted.bias.copy_(conv.bias)
    return adapted


def adapt_input_channels(model: nn.Module, in_channels: int) -> str:
    """Give ``model``'s first convolution ``in_channels`` inputs (see :func:`adapt_first_conv`); its name."""
    name, conv = first_conv(model)
    if conv.in_channels != in_channels:
        set_module(model, name, adapt_first_conv(conv, in_channels))
    return name


def output_layer(model: nn.Module) -> tuple[str, nn.Module]:
    """The name and module of the last ``nn.Linear`` or ``nn.Conv2d`` of ``model``: its classifier layer."""
    found = None
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            found = (name, module)
    if found is None:
        raise ConfigError(f"{type(model).__name__} has no Linear or Conv2d layer to remove as its classifier.")
    return found


@contextlib.contextmanager
def evaluation(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block ``module`` is in eval mode with gradients off; every layer's mode is restored after."""
    modes = [(layer, layer.training) for layer in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        for layer, training in modes:
            layer.training = training


def probe(module: nn.Module, input_shape: tuple[int, ...], what: str = "the model", *, batch: int = 2) -> object:
    """The output of ``module`` (in eval mode, without gradients) for ``batch`` blank images of ``input_shape``.

    The images are made on the device and in the floating dtype of the module's first parameter. Nothing
    in the module changes (no BatchNorm statistics, no modes). When the module refuses images of that
    shape, a ConfigError says so, naming the module as ``what``.
    """
    shape = tuple(int(size) for size in input_shape)
    parameter = next(module.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    try:
        with evaluation(module):
            return module(torch.zeros(batch, *shape, device=device, dtype=dtype))
    except Exception as error:  # noqa: BLE001 - a module refuses an input size with any exception type
        raise refused(what, shape, reason(error)) from None


def refused(what: str, input_shape: tuple[int, ...], why: str) -> ConfigError:
    """The error for a network (``what``) that does not take images of ``input_shape``, ``why`` in brackets."""
    return ConfigError(f"{what} cannot take images of shape {'x'.join(map(str, input_shape))} ({why}).")


def features_width(output: object, what: str) -> int:
    """The number of features per item in ``output`` (a ``[N, ...]`` tensor), or a one-sentence error."""
    if not isinstance(output, torch.Tensor) or output.dim() < 2:
        kind = f"a {output.dim()}-d tensor" if isinstance(output, torch.Tensor) else type(output).__name__
        raise ConfigError(f"{what} must return one [N, features] tensor per batch, but returns {kind}.")
    return int(output[0].numel())


def feature_width(module: nn.Module, input_shape: tuple[int, ...], what: str = "the backbone") -> int:
    """The number of features per item that ``module`` returns for images of ``input_shape``."""
    return features_width(probe(module, input_shape, what), what)


def reason(error: BaseException) -> str:
    """``error``'s message on one line, shortened: the part of an exception worth one sentence."""
    text = " ".join(line.strip() for line in str(error).strip().splitlines()) or type(error).__name__
    text = text.rstrip(".:")
    return text if len(text) <= 160 else text[:157] + "..."


def meta_output_shape(build: Callable[[], nn.Module], input_shape: tuple[int, int, int]) -> torch.Size | None:
    """The output shape of the model ``build()`` makes, for a batch of 2 images, found on the meta device.

    On the meta device tensors have shapes but no data, so neither building nor the forward pass costs
    memory or time. Returns None when the model cannot be built or run there (some architectures read
    tensor values while they are built); raises :class:`ValueError` (with the model's own message) when
    the forward pass refuses images of ``input_shape``.
    """
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            model = build()
    except Exception:  # noqa: BLE001 - any failure here means "cannot check cheaply", not "invalid"
        return None
    model.eval()
    try:
        with torch.no_grad():
            output = model(torch.zeros(2, *input_shape, device="meta"))
    except NotImplementedError:
        return None
    except Exception as error:  # noqa: BLE001 - a model signals a bad input size with any exception type
        if "meta" in str(error).lower():
            return None
        raise ValueError(reason(error)) from None
    return output.shape if isinstance(output, torch.Tensor) else None


# ---------------------------------------------------------------------------------------------- splitting


class _Tracer(torch.fx.Tracer):
    """An fx tracer that keeps the module called ``leaf`` as one step instead of tracing into it."""

    def __init__(self, leaf: str):
        super().__init__()
        self.leaf = leaf

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return qualified_name == self.leaf or super().is_leaf_module(module, qualified_name)


def split_at(model: nn.Module, layer: str) -> tuple[torch.fx.GraphModule, torch.fx.GraphModule]:
    """Cut ``model`` right after the submodule named ``layer``: ``(trunk, rest)``.

    ``rest(trunk(x))`` computes what ``model(x)`` computes, ``trunk(x)`` is the output of ``layer``. Both
    parts share their layers (and so their weights) with ``model``. See the module docstring for what
    can be cut.

    Parameters
    ----------
    model : torch.nn.Module
        A model whose ``forward`` takes one image tensor.
    layer : str
        The dotted name of a submodule, as in ``model.named_modules()`` (``"avgpool"``, ``"features.7"``).
    """
    names = [name for name, _ in model.named_modules() if name]
    if layer not in names:
        close = difflib.get_close_matches(layer, names, n=1, cutoff=0.6)
        listed = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        hint = f"did you mean {close[0]}?" if close else f"its layers are {listed}."
        raise ConfigError(f"{type(model).__name__} has no layer '{layer}'; {hint}")
    what = f"{type(model).__name__}"
    tracer = _Tracer(layer)
    try:
        graph = tracer.trace(model)
    except Exception as error:  # noqa: BLE001 - fx raises many types for code it cannot trace
        raise ConfigError(f"torch.fx cannot trace {what} ({reason(error)}), so activelab cannot cut it at "
                          f"'{layer}'; build ActiveModel(trunk, ClassifierHead(rest, width)) by hand.") from None
    nodes = list(graph.nodes)
    placeholders = [node for node in nodes if node.op == "placeholder"]
    if len(placeholders) != 1:
        raise ConfigError(f"{what}.forward takes {len(placeholders)} inputs, but activelab feeds it one image batch.")
    cuts = [node for node in nodes if node.op == "call_module" and node.target == layer]
    if len(cuts) != 1:
        times = "never" if not cuts else f"{len(cuts)} times"
        raise ConfigError(f"{what} calls layer '{layer}' {times} in forward, so it cannot be cut there.")
    cut = cuts[0]
    position = nodes.index(cut)
    before, after = nodes[:position + 1], nodes[position + 1:]
    if len(after) < 2:  # only the output node follows
        raise ConfigError(f"nothing follows layer '{layer}' in {what}, so there would be no classifier after the cut.")
    earlier = set(before)
    for node in after:
        for source in node.all_input_nodes:
            if source in earlier and source is not cut and source.op != "get_attr":
                raise ConfigError(f"{what} cannot be cut at '{layer}': a later step ({node.name}) also uses "
                                  f"{source.name}, computed before the cut.")
    trunk_graph, rest_graph = torch.fx.Graph(), torch.fx.Graph()
    copied: dict[torch.fx.Node, torch.fx.Node] = {}
    for node in before:
        copied[node] = trunk_graph.node_copy(node, lambda source: copied[source])
    trunk_graph.output(copied[cut])
    moved: dict[torch.fx.Node, torch.fx.Node] = {cut: rest_graph.placeholder("features")}
    for node in after:
        for source in node.all_input_nodes:
            if source not in moved:  # a parameter or buffer (get_attr) read before the cut
                moved[source] = rest_graph.node_copy(source, lambda _: None)
        moved[node] = rest_graph.node_copy(node, lambda source: moved[source])
    trunk = torch.fx.GraphModule(model, trunk_graph, class_name=f"{type(model).__name__}Trunk")
    trunk.graph.eliminate_dead_code()  # steps before the cut that the layer does not need
    trunk.recompile()
    trunk.delete_all_unused_submodules()
    _check_nothing_shared(model, trunk.graph, rest_graph, layer)
    rest = torch.fx.GraphModule(model, rest_graph, class_name=f"{type(model).__name__}Rest")
    return trunk, rest


def _check_nothing_shared(model: nn.Module, trunk: torch.fx.Graph, rest: torch.fx.Graph, layer: str) -> None:
    """Refuse a cut when a layer or tensor with weights is used on both sides of it."""
    def used(graph: torch.fx.Graph) -> set[str]:
        return {str(node.target) for node in graph.nodes if node.op in ("call_module", "get_attr")}

    for name in sorted(used(trunk) & used(rest)):
        target = model.get_submodule(name) if name in dict(model.named_modules()) else None
        has_state = target is None or any(True for _ in target.parameters()) or any(True for _ in target.buffers())
        if has_state:
            raise ConfigError(f"{type(model).__name__} uses '{name}' both before and after '{layer}', so its "
                              "weights cannot belong to one side of the cut.")


__all__ = ["adapt_first_conv", "adapt_input_channels", "evaluation", "feature_width", "features_width", "first_conv",
           "meta_output_shape", "output_layer", "probe", "reason", "refused", "set_module", "split_at"]
