"""The ONNX graph parsed into a TensorRT network definition, and the precision of its layers.

Both need no GPU: in strongly typed mode the parsed network already says what precision every
layer will run in (an FP16 graph gives HALF convolutions), so this is the check that an `--fp16`
engine really is FP16, made before any build and on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import SRExportError
from ..onnx_export import INPUT_NAME
from .flavours import Flavour
from .logger import errors_since, logger_for

_DTYPES = {"FLOAT": "FP32", "HALF": "FP16", "BF16": "BF16", "INT8": "INT8", "INT32": "INT32", "INT64": "INT64",
           "BOOL": "BOOL", "UINT8": "UINT8", "FP8": "FP8", "INT4": "INT4", "FP4": "FP4"}
COMPUTE_TYPES = ("CONVOLUTION", "DECONVOLUTION", "MATRIX_MULTIPLY")


@dataclass
class ParsedNetwork:
    """A parsed network with the builder and parser it belongs to (they must outlive it)."""

    flavour: Flavour
    builder: object
    network: object
    parser: object
    logger: object


def network_from_onnx(flavour: Flavour, onnx_path: Path) -> ParsedNetwork:
    """Parse `onnx_path` into a strongly typed network; a parser error names the ONNX node."""
    trt = flavour.trt
    logger = logger_for(trt)
    mark = logger.mark()
    builder = trt.Builder(logger)
    network = flavour.create_network(builder)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise SRExportError(f"{onnx_path}: {flavour.label} cannot parse it: "
                            + (" | ".join(errors) or errors_since(logger, mark) or "no parser error was reported"))
    if network.num_inputs != 1 or network.get_input(0).name != INPUT_NAME:
        raise SRExportError(f"{onnx_path}: {flavour.label} sees inputs "
                            f"{[network.get_input(i).name for i in range(network.num_inputs)]}, expected [{INPUT_NAME!r}]")
    return ParsedNetwork(flavour, builder, network, parser, logger)


def _parser_error(error) -> str:
    """"node 3 'node_conv2d' (Conv): <what is wrong>", or the description alone for graph-level errors."""
    desc = " ".join(str(error.desc()).split())
    node = error.node()
    if node is None or node < 0:
        return desc
    return f"node {node} {error.node_name()!r} ({error.node_operator()}): {desc}"


def _dtype(value) -> str:
    name = getattr(value, "name", None) or str(value).rsplit(".", 1)[-1]
    return _DTYPES.get(name, name)


def network_precisions(parsed: ParsedNetwork) -> dict:
    """Every layer's output precision, read back from the parsed network.

    Returns {"layers", "by_type": {LayerType: {precision: count}}, "compute_layers",
    "compute_by_precision", "fp16_share"}: compute layers are the convolutions, transposed
    convolutions and matrix multiplies, and fp16_share the share of them whose output is FP16.
    """
    network = parsed.network
    by_type: dict[str, dict[str, int]] = {}
    compute: dict[str, int] = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        kind = getattr(layer.type, "name", str(layer.type).rsplit(".", 1)[-1])
        outputs = {_dtype(layer.get_output_type(j)) for j in range(layer.num_outputs)}
        dtype = outputs.pop() if len(outputs) == 1 else "mixed" if outputs else "none"
        counts = by_type.setdefault(kind, {})
        counts[dtype] = counts.get(dtype, 0) + 1
        if kind in COMPUTE_TYPES:
            compute[dtype] = compute.get(dtype, 0) + 1
    n_compute = sum(compute.values())
    return {
        "source": f"parsed network ({parsed.flavour.label})",
        "layers": network.num_layers,
        "by_type": {k: dict(sorted(v.items())) for k, v in sorted(by_type.items())},
        "compute_layers": n_compute,
        "compute_by_precision": dict(sorted(compute.items())),
        "fp16_share": round(compute.get("FP16", 0) / n_compute, 4) if n_compute else None,
    }


def check_precisions(precisions: dict, graph_precision: str, where) -> None:
    """With an FP16 graph every compute layer must be FP16; with an FP32 graph every one FP32."""
    compute = precisions["compute_by_precision"]
    want = {"fp16": "FP16", "bf16": "BF16"}.get(graph_precision, "FP32")
    wrong = {k: v for k, v in compute.items() if k != want}
    if not compute or wrong:
        raise SRExportError(f"{where}: the {graph_precision.upper()} graph parses to compute layers {compute or 'none'}; "
                            f"expected every convolution in {want}", exit_code=3)
