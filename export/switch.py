"""One ONNX graph that runs only the paths a call needs.

Colorize calls run the generator with the style vector (1, 0, 0, 0, 0): the blend weight of the
style path is 0, yet a plain export computes it. Stylize calls at full strength, e.g.
(0, 1, 0, 0, 0), weight the colour decoder 0, yet a plain export computes it and the whole
encoder (the style path reads only the luminance). This module builds the graph from exported
pieces and joins them:

    luma, style ─► all(style[:, 0] == 0) ─► If ─ then: zeros of the features' shapes   (no decoder reads them)
                                              └ else: encoder ─► f4, f8, f16, f32
                   all(style[:, 0] == 1) ─► If ─ then: colour decoder only           (Generator.decode_natural)
                                              └ else: style path ─► styled          (Generator.decode_styled)
                                                     all(style[:, 0] == 0) ─► If ─► natural
                                                     │  ├─ then: zeros              (no natural weight to blend)
                                                     │  └─ else: colour decoder
                                                     blend(natural, styled)         (Generator.blend: styled where g = 1)

Every branch gives the numbers of the blend for its inputs (the blend is exact at g = 0 and
g = 1), so the SDK contract does not change: inputs ``luma``/``style``, output ``ycbcr``, one
file. The encoder's and the style path's weights are held once; the colour decoder's twice (its
branch and the blend), so ONNX Runtime optimises each branch fully (branch bodies reading the
main graph's weights measured ~5 ms slower per call).

Example:
    >>> model = switched_model(G, opset=17, work=Path(tmp), simplify=True)
    >>> onnx.save(model, "model.onnx")
"""

from __future__ import annotations

import warnings
from pathlib import Path

FEATURES = ("enc_f4", "enc_f8", "enc_f16", "enc_f32")
"""Names of the encoder outputs (strides 4, 8, 16, 32) inside the joined graph."""

STYLED = "switch_styled"
"""The style path's output inside the joined graph (read by the blend)."""

ENCODER_INPUT = "switch_encoder_input"
"""The luminance as the encoder's If bodies read it (an Identity of the graph input)."""

NATURAL = "switch_natural_part"
"""The colour decoder's output (or zeros) inside the painting branch (read by the blend)."""

SPLIT_NODE = "switch_if_encoder"
"""The If that runs the encoder only for batches with natural weight."""


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


def _rename_input(graph, old: str, new: str):
    """``graph`` (a branch body) with its nodes' reads of the outer name ``old`` renamed ``new``."""
    for node in graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
    return graph


def switched_model(G, opset: int, work: Path, simplify: bool = True):
    """The generator as one ONNX model whose natural-only calls skip the style path and whose
    calls without natural weight skip the encoder and the colour decoder.

    Args:
        G: a :class:`training.model.Generator` in eval mode.
        opset: ONNX opset (If is in every opset used here).
        work: a folder for the intermediate exports (seven).
        simplify: run onnxslim on each piece.

    Returns:
        The joined ``onnx.ModelProto`` (checked), inputs ``luma``/``style``, output ``ycbcr``.
    """
    import onnx
    import torch
    from onnx import TensorProto, helper

    from sdk import contract
    from training.encoder import FEATURE_CHANNELS

    (luma_name, style_name), (out_name,) = contract.INPUT_NAMES, contract.OUTPUT_NAMES

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.G = G

        def forward(self, x):
            return tuple(self.G.encoder(x))  # luma -> [N,24,H/4], [N,32,H/8], [N,96,H/16], [N,320,H/32]

    class Skipped(torch.nn.Module):
        """luma -> zeros of the four features' shapes: what the If's then branch gives when no
        decoder reads them. Zero strided 1x1 convolutions (472 weights) rather than ConstantOfShape:
        both branches then end in a Conv, so TensorRT sees equal shapes and the FP16 converter equal types."""

        def __init__(self) -> None:
            super().__init__()
            self.convs = torch.nn.ModuleList(torch.nn.Conv2d(1, FEATURE_CHANNELS[k], 1, stride=k, bias=False) for k in (4, 8, 16, 32))
            for c in self.convs:
                torch.nn.init.zeros_(c.weight)

        def forward(self, luma):
            return tuple(c(luma) for c in self.convs)

    class Head(torch.nn.Module):
        def __init__(self, mode: str) -> None:
            super().__init__()
            self.G = G
            self.mode = mode

        def forward(self, f4, f8, f16, f32, luma, style):
            feats = [f4, f8, f16, f32]
            if self.mode == "natural":
                return self.G.decode_natural(feats, luma)
            if self.mode == "natural_part":
                return self.G.natural(feats, luma)[0]
            return self.G.decode_styled(luma, style)

    class NoNatural(torch.nn.Module):
        """luma -> zeros [N,3,H,W]: the natural part when no image has natural weight (a zero 1x1 convolution, as Skipped)."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 3, 1, bias=False)
            torch.nn.init.zeros_(self.conv.weight)

        def forward(self, luma):
            return self.conv(luma)

    class Blend(torch.nn.Module):
        def forward(self, natural, styled, style):
            return G.blend(natural, styled, style)

    luma = torch.rand(1, 1, 64, 64)
    style = torch.zeros(1, G.cfg.n_styles)
    style[0, 0] = 1.0
    with torch.no_grad():
        feats = tuple(G.encoder(luma))
        encoder = export_checked(Encoder(), (luma,), work / "encoder.onnx", [luma_name], list(FEATURES), opset, simplify)
        skipped = export_checked(Skipped().eval(), (luma,), work / "skipped.onnx", [luma_name], list(FEATURES), opset, simplify)
    inputs = list(FEATURES) + [luma_name, style_name]
    natural = export_checked(Head("natural"), (*feats, luma, style), work / "natural.onnx", inputs, [out_name], opset, simplify)
    styled = export_checked(Head("styled"), (*feats, luma, style), work / "styled.onnx", inputs, [STYLED], opset, simplify)
    part = export_checked(Head("natural_part"), (*feats, luma, style), work / "natural_part.onnx", inputs, [NATURAL], opset, simplify)
    with torch.no_grad():
        zeros = export_checked(NoNatural().eval(), (luma,), work / "no_natural.onnx", [luma_name], [NATURAL], opset, simplify)
        x = G.decode_styled(luma, style)
    full = export_checked(Blend(), (x, x, style), work / "blend.onnx", [NATURAL, STYLED, style_name], [out_name], opset, simplify)

    outer = set(inputs)
    consts = [helper.make_tensor("switch_index0", TensorProto.INT64, [1], [0]), helper.make_tensor("switch_one", TensorProto.FLOAT, [], [1.0]),
              helper.make_tensor("switch_zero", TensorProto.FLOAT, [], [0.0])]
    out = next(o for o in full.graph.output if o.name == out_name)
    # The painting branch: the style path (its weights once), the colour decoder only where an image
    # has natural weight (zeros otherwise: the blend then gives the styled output exactly), the blend.
    path = _branch(styled, "styled_", outer, STYLED)
    blend = _branch(full, "blend_", {NATURAL, STYLED, style_name}, out_name)
    painting = helper.make_graph(list(path.node) + [
        helper.make_node("If", ["switch_no_natural"], [NATURAL], name="switch_if_styled",
                         then_branch=_branch(zeros, "zeros_", {luma_name}, NATURAL), else_branch=_branch(part, "part_", outer, NATURAL)),
    ] + list(blend.node), "painting_branch", [], [out], initializer=list(path.initializer) + list(blend.initializer))
    nodes = [
        helper.make_node("Gather", [style_name, "switch_index0"], ["switch_natural"], axis=1, name="switch_gather"),  # [N,1]
        helper.make_node("ReduceMax", ["switch_natural"], ["switch_max"], keepdims=0, name="switch_max"),  # scalar
        helper.make_node("Equal", ["switch_max", "switch_zero"], ["switch_no_natural"], name="switch_equal_zero"),  # bool scalar
        # The encoder's bodies read the luminance through a node of the main graph, not the graph input:
        # the FP16 converter then hands them its FP16 tensor (a body's direct read of an input stays FP32).
        helper.make_node("Identity", [luma_name], [ENCODER_INPUT], name="switch_encoder_input"),
        helper.make_node("If", ["switch_no_natural"], list(FEATURES), name=SPLIT_NODE,  # the encoder only where a colour decoder reads it
                         then_branch=_rename_input(_branch(skipped, "skipped_", {luma_name}, FEATURES), luma_name, ENCODER_INPUT),
                         else_branch=_rename_input(_branch(encoder, "encoder_", {luma_name}, FEATURES), luma_name, ENCODER_INPUT)),
        helper.make_node("ReduceMin", ["switch_natural"], ["switch_min"], keepdims=0, name="switch_min"),  # scalar
        helper.make_node("Equal", ["switch_min", "switch_one"], ["switch_all_natural"], name="switch_equal"),  # bool scalar
        helper.make_node("If", ["switch_all_natural"], [out_name], name="switch_if",
                         then_branch=_branch(natural, "natural_", outer, out_name), else_branch=painting),
    ]
    graph_inputs = [next(i for i in encoder.graph.input if i.name == luma_name), next(i for i in styled.graph.input if i.name == style_name)]
    graph = helper.make_graph(nodes, "chromaforge", graph_inputs, list(full.graph.output), initializer=consts)
    model = helper.make_model(graph, opset_imports=list(full.opset_import))
    model.ir_version = full.ir_version
    onnx.checker.check_model(model, full_check=True)
    return model
