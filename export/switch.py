"""One ONNX graph that runs only the decoder a call needs.

Colorize calls run the generator with the style vector (1, 0, 0, 0, 0): the blend weight of the
style branch is 0, yet a plain export computes that branch (about half the graph's time at 256²).
Stylize calls at full strength, e.g. (0, 1, 0, 0, 0), weight the colour decoder 0, yet compute it.
The style branch reads only the encoder's stride-4 and -8 features, yet a plain export computes
its stride-16/32 blocks for every call (~10 % of stylize 512²). This module builds the graph in six
exported pieces (seven with an ink read-out) and joins them:

    luma ─► encoder to stride 8 ─► f4, f8
    style ─► all(style[:, 0] == 0) ─► If ─ then: zeros of their shapes      (no decoder reads them)
                                         └ else: encoder past stride 8 ─► f16, f32
            all(style[:, 0] == 1) ─► If ─ then: colour decoder only        (Generator.decode_natural)
                                         └ else: all(style[:, 0] == 0) ─► If
                                                ├─ then: style branch only    (Generator.decode_styled)
                                                └─ else: both, blended        (Generator.decode)

With an ink read-out (``GeneratorConfig.ink_style``) the style-branch-only case has a third level:
``all(style[:, ink] == 0)`` runs the branch without the ink step (the other painting styles), else with it.

Every branch gives the numbers of the blend for its inputs (the blend is exact at g = 0 and
g = 1), so the SDK contract does not change: inputs ``luma``/``style``, output ``ycbcr``, one
file. The encoder's first stages stay in the main graph (ONNX Runtime optimises them as before); each branch
carries its own copy of its decoders' weights (~0.2 M parameters for the colour decoder), so ONNX
Runtime also optimises the branches fully (branch bodies reading the main graph's weights
measured ~5 ms slower per call).

Example:
    >>> model = switched_model(G, opset=17, work=Path(tmp), simplify=True)
    >>> onnx.save(model, "model.onnx")
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

FEATURES = ("enc_f4", "enc_f8", "enc_f16", "enc_f32")
"""Names of the encoder outputs (strides 4, 8, 16, 32) inside the joined graph."""

SPLIT_NODE = "switch_if_colour_features"
"""The If that runs the encoder past stride 8 only for batches with natural weight (its absence
marks the layout of releases up to 11)."""


def export_checked(module, args: tuple, path: Path, inputs: list[str], outputs: list[str], opset: int, simplify: bool):
    """torch.onnx.export with dynamic batch/height/width on every tensor, checked and optionally slimmed.

    The model's luma input and YCbCr output share the symbols N, H, W (the output has the input's
    size); other tensors get their own height and width symbols.
    """
    import onnx
    import torch

    from sdk import contract

    shared = {contract.INPUT_NAMES[0], contract.OUTPUT_NAMES[0]}
    dynamic = {name: ({0: "N"} if name == contract.INPUT_NAMES[1] else
                      {0: "N", 2: "H", 3: "W"} if name in shared else {0: "N", 2: f"H_{name}", 3: f"W_{name}"})
               for name in inputs + outputs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, opset_version=opset, dynamo=False,
                          do_constant_folding=True, dynamic_axes=dynamic)
    model = onnx.load(str(path))
    if simplify:
        import onnxslim

        model = onnxslim.slim(model)
    onnx.checker.check_model(model, full_check=True)
    return model


def _branch(model, prefix: str, outer: set[str], output: str | tuple[str, ...]):
    """The body of an If branch: ``model``'s nodes and weights, names prefixed except those of the
    main graph it reads (``outer``) and its ``output`` (one name or several)."""
    import onnx
    from onnx import helper

    outputs = (output,) if isinstance(output, str) else tuple(output)

    def rename(name: str) -> str:
        return name if name in outer or name in ("", *outputs) else prefix + name

    nodes = []
    for node in model.graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.input[:] = [rename(i) for i in node.input]
        copy.output[:] = [rename(o) for o in node.output]
        copy.name = prefix + node.name
        nodes.append(copy)
    weights = []
    for tensor in model.graph.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        copy.name = prefix + tensor.name
        weights.append(copy)
    outs = [next(o for o in model.graph.output if o.name == name) for name in outputs]
    return helper.make_graph(nodes, prefix + "branch", [], outs, initializer=weights)


def switched_model(G, opset: int, work: Path, simplify: bool = True, split_encoder: bool = True):
    """The generator as one ONNX model whose natural-only calls skip the style branch and whose
    calls without natural weight skip the colour decoder and the encoder past stride 8.

    Args:
        G: a :class:`training.model.Generator` in eval mode.
        opset: ONNX opset (If is in every opset used here).
        work: a folder for the intermediate exports (six; seven with an ink read-out).
        simplify: run onnxslim on each piece.
        split_encoder: run the encoder's stride-16/32 blocks only for batches with natural
            weight (False: the whole encoder in the main graph, the layout of releases up to 11,
            which :mod:`training.from_onnx` rebuilds to read those models back).

    Returns:
        The joined ``onnx.ModelProto`` (checked), inputs ``luma``/``style``, output ``ycbcr``.
    """
    import onnx
    import torch
    from onnx import TensorProto, helper

    from sdk import contract
    from training.encoder import FEATURE_CHANNELS

    (luma_name, style_name), (out_name,) = contract.INPUT_NAMES, contract.OUTPUT_NAMES
    n_styles = G.cfg.n_styles

    class Encoder(torch.nn.Module):
        def __init__(self, part: str) -> None:
            super().__init__()
            self.G = G
            self.part = part

        def forward(self, x):
            if self.part == "low":
                return tuple(self.G.encoder.low(x))  # luma -> [N,24,H/4], [N,32,H/8]
            if self.part == "high":
                return tuple(self.G.encoder.high(x))  # f8 -> [N,96,H/16], [N,320,H/32]
            return tuple(self.G.encoder(x))  # luma -> all four

    class Skipped(torch.nn.Module):
        """f8 -> zeros of the stride-16/32 features' shapes: what the If's else branch gives when no
        decoder reads them. Zero 1x1 convolutions (a few thousand MACs) rather than ConstantOfShape:
        both branches then end in a Conv, so TensorRT sees equal shapes and the FP16 converter equal
        types."""

        def __init__(self) -> None:
            super().__init__()
            c = FEATURE_CHANNELS[8]  # grouped: 416 weights in all
            self.to16 = torch.nn.Conv2d(c, FEATURE_CHANNELS[16], 1, stride=2, groups=c, bias=False)
            self.to32 = torch.nn.Conv2d(c, FEATURE_CHANNELS[32], 1, stride=4, groups=c, bias=False)
            torch.nn.init.zeros_(self.to16.weight)
            torch.nn.init.zeros_(self.to32.weight)

        def forward(self, f8):
            return self.to16(f8), self.to32(f8)  # [N,96,H/16,W/16], [N,320,H/32,W/32]

    class Head(torch.nn.Module):
        def __init__(self, mode: str) -> None:
            super().__init__()
            self.G = G
            self.decode = {"natural": G.decode_natural, "styled": G.decode_styled, "full": G.decode,
                           "styled_no_ink": functools.partial(G.decode_styled, ink=False)}[mode]

        def forward(self, f4, f8, f16, f32, luma, style):
            return self.decode([f4, f8, f16, f32], luma, style)

    luma = torch.rand(1, 1, 64, 64)
    style = torch.zeros(1, n_styles)
    style[0, 0] = 1.0
    with torch.no_grad():
        feats = tuple(G.encoder(luma))
    inputs = list(FEATURES) + [luma_name, style_name]
    if split_encoder:
        encoder = export_checked(Encoder("low"), (luma,), work / "encoder.onnx", [luma_name], list(FEATURES[:2]), opset, simplify)
        high = export_checked(Encoder("high"), (feats[1],), work / "encoder_high.onnx", [FEATURES[1]], list(FEATURES[2:]), opset, simplify)
        with torch.no_grad():
            skipped = export_checked(Skipped().eval(), (feats[1],), work / "skipped.onnx", [FEATURES[1]], list(FEATURES[2:]), opset, simplify)
    else:
        encoder = export_checked(Encoder("all"), (luma,), work / "encoder.onnx", [luma_name], list(FEATURES), opset, simplify)
    natural = export_checked(Head("natural"), (*feats, luma, style), work / "natural.onnx", inputs, [out_name], opset, simplify)
    styled = export_checked(Head("styled"), (*feats, luma, style), work / "styled.onnx", inputs, [out_name], opset, simplify)
    full = export_checked(Head("full"), (*feats, luma, style), work / "full.onnx", inputs, [out_name], opset, simplify)

    outer = set(inputs)
    consts = [helper.make_tensor("switch_index0", TensorProto.INT64, [1], [0]), helper.make_tensor("switch_one", TensorProto.FLOAT, [], [1.0]),
              helper.make_tensor("switch_zero", TensorProto.FLOAT, [], [0.0])]
    out = next(o for o in full.graph.output if o.name == out_name)
    styled_branch = _branch(styled, "styled_", outer, out_name)
    if G.cfg.ink_style:  # no weight on the inked style anywhere in the batch: the style branch without its ink step
        plain = export_checked(Head("styled_no_ink"), (*feats, luma, style), work / "styled_no_ink.onnx", inputs, [out_name], opset, simplify)
        consts.append(helper.make_tensor("switch_index_ink", TensorProto.INT64, [1], [contract.STYLES.index(G.cfg.ink_style)]))
        styled_branch = helper.make_graph([
            helper.make_node("Gather", [style_name, "switch_index_ink"], ["switch_ink"], axis=1, name="switch_gather_ink"),  # [N,1]
            helper.make_node("ReduceMax", ["switch_ink"], ["switch_ink_max"], keepdims=0, name="switch_ink_max"),  # scalar
            helper.make_node("Equal", ["switch_ink_max", "switch_zero"], ["switch_no_ink"], name="switch_equal_no_ink"),  # bool scalar
            helper.make_node("If", ["switch_no_ink"], [out_name], name="switch_if_ink",
                             then_branch=_branch(plain, "plain_", outer, out_name), else_branch=styled_branch),
        ], "styled_branch", [], [out])
    painting = helper.make_graph([  # no natural weight anywhere in the batch (stylize at full strength): style branch only
        helper.make_node("If", ["switch_no_natural"], [out_name], name="switch_if_styled",
                         then_branch=styled_branch, else_branch=_branch(full, "full_", outer, out_name)),
    ], "painting_branch", [], [out])
    nodes = list(encoder.graph.node) + [
        helper.make_node("Gather", [style_name, "switch_index0"], ["switch_natural"], axis=1, name="switch_gather"),  # [N,1]
        helper.make_node("ReduceMax", ["switch_natural"], ["switch_max"], keepdims=0, name="switch_max"),  # scalar
        helper.make_node("Equal", ["switch_max", "switch_zero"], ["switch_no_natural"], name="switch_equal_zero"),  # bool scalar
    ]
    initializers = list(encoder.graph.initializer)
    if split_encoder:  # the stride-16/32 blocks only where a colour decoder reads them
        nodes.append(helper.make_node("If", ["switch_no_natural"], list(FEATURES[2:]), name=SPLIT_NODE,
                                      then_branch=_branch(skipped, "skipped_", {FEATURES[1]}, FEATURES[2:]),
                                      else_branch=_branch(high, "high_", {FEATURES[1]}, FEATURES[2:])))
    nodes += [
        helper.make_node("ReduceMin", ["switch_natural"], ["switch_min"], keepdims=0, name="switch_min"),  # scalar
        helper.make_node("Equal", ["switch_min", "switch_one"], ["switch_all_natural"], name="switch_equal"),  # bool scalar
        helper.make_node("If", ["switch_all_natural"], [out_name], name="switch_if",
                         then_branch=_branch(natural, "natural_", outer, out_name),
                         else_branch=painting),
    ]
    graph_inputs = [next(i for i in encoder.graph.input if i.name == luma_name), next(i for i in full.graph.input if i.name == style_name)]
    graph = helper.make_graph(nodes, "chromaforge", graph_inputs, list(full.graph.output), initializer=initializers + consts)
    model = helper.make_model(graph, opset_imports=list(full.opset_import))
    model.ir_version = full.ir_version
    onnx.checker.check_model(model, full_check=True)
    return model
