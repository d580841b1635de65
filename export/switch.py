"""One ONNX graph that runs only the decoder a call needs.

Colorize calls run the generator with the style vector (1, 0, 0, 0, 0): the blend weight of the
style branch is 0, yet a plain export computes that branch (about half the graph's time at 256²).
Stylize calls at full strength, e.g. (0, 1, 0, 0, 0), weight the colour decoder 0, yet compute it.
This module builds the graph in four exported pieces (five with an ink read-out) and joins them:

    luma ─► encoder ─► f4, f8, f16, f32 ─┐
    style ─► all(style[:, 0] == 1) ──► If ├─ then: colour decoder only        (Generator.decode_natural)
                                          └─ else: all(style[:, 0] == 0) ─► If
                                                ├─ then: style branch only    (Generator.decode_styled)
                                                └─ else: both, blended        (Generator.decode)

With an ink read-out (``GeneratorConfig.ink_style``) the style-branch-only case has a third level:
``all(style[:, ink] == 0)`` runs the branch without the ink step (the other painting styles), else with it.

Every branch gives the numbers of the blend for its inputs (the blend is exact at g = 0 and
g = 1), so the SDK contract does not change: inputs ``luma``/``style``, output ``ycbcr``, one
file. The encoder stays in the main graph (ONNX Runtime optimises it as before); each branch
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


def _branch(model, prefix: str, outer: set[str], output: str):
    """The body of an If branch: ``model``'s nodes and weights, names prefixed except those of the
    main graph it reads (``outer``) and its ``output``."""
    import onnx
    from onnx import helper

    def rename(name: str) -> str:
        return name if name in outer or name in ("", output) else prefix + name

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
    out = next(o for o in model.graph.output if o.name == output)
    return helper.make_graph(nodes, prefix + "branch", [], [out], initializer=weights)


def switched_model(G, opset: int, work: Path, simplify: bool = True):
    """The generator as one ONNX model whose natural-only calls skip the style branch and whose
    calls without natural weight skip the colour decoder.

    Args:
        G: a :class:`training.model.Generator` in eval mode.
        opset: ONNX opset (If is in every opset used here).
        work: a folder for the intermediate exports (four; five with an ink read-out).
        simplify: run onnxslim on each piece.

    Returns:
        The joined ``onnx.ModelProto`` (checked), inputs ``luma``/``style``, output ``ycbcr``.
    """
    import onnx
    import torch
    from onnx import TensorProto, helper

    from sdk import contract

    (luma_name, style_name), (out_name,) = contract.INPUT_NAMES, contract.OUTPUT_NAMES
    n_styles = G.cfg.n_styles

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.G = G

        def forward(self, luma):
            return tuple(self.G.encoder(luma))  # [N,24,H/4], [N,32,H/8], [N,96,H/16], [N,320,H/32]

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
    encoder = export_checked(Encoder(), (luma,), work / "encoder.onnx", [luma_name], list(FEATURES), opset, simplify)
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
        helper.make_node("ReduceMax", ["switch_natural"], ["switch_max"], keepdims=0, name="switch_max"),  # scalar
        helper.make_node("Equal", ["switch_max", "switch_zero"], ["switch_no_natural"], name="switch_equal_zero"),  # bool scalar
        helper.make_node("If", ["switch_no_natural"], [out_name], name="switch_if_styled",
                         then_branch=styled_branch, else_branch=_branch(full, "full_", outer, out_name)),
    ], "painting_branch", [], [out])
    nodes = list(encoder.graph.node) + [
        helper.make_node("Gather", [style_name, "switch_index0"], ["switch_natural"], axis=1, name="switch_gather"),  # [N,1]
        helper.make_node("ReduceMin", ["switch_natural"], ["switch_min"], keepdims=0, name="switch_min"),  # scalar
        helper.make_node("Equal", ["switch_min", "switch_one"], ["switch_all_natural"], name="switch_equal"),  # bool scalar
        helper.make_node("If", ["switch_all_natural"], [out_name], name="switch_if",
                         then_branch=_branch(natural, "natural_", outer, out_name),
                         else_branch=painting),
    ]
    graph_inputs = [next(i for i in encoder.graph.input if i.name == luma_name), next(i for i in full.graph.input if i.name == style_name)]
    graph = helper.make_graph(nodes, "chromaforge", graph_inputs, list(full.graph.output),
                              initializer=list(encoder.graph.initializer) + consts)
    model = helper.make_model(graph, opset_imports=list(full.opset_import))
    model.ir_version = full.ir_version
    onnx.checker.check_model(model, full_check=True)
    return model
