"""Export a saved model (dense, masked or compacted) with its task heads to ONNX, check it, quantize it to int8.

The graph (:class:`HeadsGraph`) runs the encoder once and every task head: inputs ``input_ids``,
``attention_mask`` [, ``token_type_ids``] ``(batch, sequence)`` int64 (both axes dynamic), outputs
``logits_<task>`` ``(batch, num_labels)`` from the pooled vector, or for span (question answering) tasks
``(batch, sequence, 2)``: every token's start and end logit (``PAD_LOGIT`` at padding), which ``mtl-predict``
turns into answers by the same rules as for the PyTorch model. It is traced with ``torch.onnx.export``
(the ``torch.export`` based exporter: the Python control flow of the attention-mask code is captured
for any shape, which the TorchScript tracer is not). Compacted encoders export as they are: their layers
keep different numbers of heads and neurons, and a layer without heads or FFN neurons is a
zero-width MatMul that returns the bias.

After export the weight transposes the exporter leaves in the graph (``Transpose(W)`` feeding
``MatMul``) are folded into the weights, so ONNX Runtime's dynamic quantization finds every
``MatMul`` with a constant weight. The fp32 graph is checked against PyTorch on a padded batch (max
|logit difference| <= :data:`CHECK_TOLERANCE`, else a bug). ``int8``: ``onnxruntime.quantization.
quantize_dynamic`` (int8 weights with one scale per output channel, activations quantized per batch at
run time) of every MatMul/Gemm, except the zero-width ones of compacted layers (see :func:`zero_width_nodes`),
after ONNX Runtime's transformer fusions (:func:`quantize_int8`); that file runs in ONNX Runtime only.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from basics.errors import UserError
from basics.io import atomic_write_json, atomic_write_text
from mtl.compact_run import find_model_dir
from mtl.model import CARD_FILE, MultiTaskModel, load_multitask_model, read_model_info, task_to_json
from mtl.onnx_runtime import FP32_FILE, INT8_FILE, ONNX_FORMAT, require, session

CHECK_TOLERANCE = 1e-4  # fp32 ONNX vs PyTorch logits; observed ~1e-6
CHECK_TEXTS = (("A man is playing a guitar on the stage.", "Someone performs music."),
               ("The company said profits fell sharply in the third quarter, analysts expected more.", "Profits rose."),
               ("Short one.", "Another sentence that is quite a bit longer than the first of the pair."))
OPSET = 18
SPAN_SETTINGS = ("doc_stride", "max_answer_length", "null_threshold")  # copied from the source's model.json


class HeadsGraph(nn.Module):
    """The encoder once, then every task head: ``(input_ids, attention_mask[, token_type_ids])`` -> logits per task
    (:meth:`mtl.model.MultiTaskModel.head_logits`)."""

    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.model = model
        self.task_names = list(model.tasks)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        out = self.model.encoder(**kwargs)
        pooled = None
        if any(self.model.tasks[t].head != "span" for t in self.task_names):
            pooled = self.model.pool(out, attention_mask)  # (B, hidden), once for every pooled head
        # each (B, num_labels), or (B, T, 2) for a span task
        return tuple(self.model.head_logits(t, out, attention_mask, pooled) for t in self.task_names)


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote and measured."""

    out_dir: Path
    fp32_path: Path
    int8_path: Path | None
    max_logit_difference: float  # fp32 ONNX vs PyTorch on CHECK_TEXTS
    int8_max_logit_difference: float | None
    fp32_bytes: int
    int8_bytes: int | None


def check_batch(tokenizer, input_names: list[str]) -> dict[str, torch.Tensor]:
    """:data:`CHECK_TEXTS` tokenized and padded: the export's example and check inputs."""
    batch = tokenizer([a for a, _ in CHECK_TEXTS], [b for _, b in CHECK_TEXTS], padding=True, return_tensors="pt")
    return {name: batch[name].to(torch.int64) for name in input_names}


def graph_inputs(model: MultiTaskModel, tokenizer) -> list[str]:
    """The graph's inputs: what the tokenizer gives and the encoder takes (DistilBERT: no token_type_ids)."""
    takes = inspect.signature(model.encoder.forward).parameters
    given = tokenizer("a", "b")
    return [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in given and name in takes]


def fold_weight_transposes(proto) -> int:
    """Replace every ``Transpose`` of an initializer by the transposed initializer (in place); return how many."""
    numpy_helper = require("onnx").numpy_helper
    graph = proto.graph
    initializers = {init.name: init for init in graph.initializer}
    kept, folded = [], 0
    for node in graph.node:
        if node.op_type == "Transpose" and node.input[0] in initializers:
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            array = numpy_helper.to_array(initializers[node.input[0]])
            graph.initializer.append(numpy_helper.from_array(array.transpose(perm).copy(), node.output[0]))
            folded += 1
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    live = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(live)
    return folded


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's progress prints, registration warnings and deprecation notes are noise for a user."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(None):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_graph(model: MultiTaskModel, tokenizer, path: Path, opset: int = OPSET) -> list[str]:
    """Write the fp32 ONNX graph of ``model`` (eval mode, CPU, fp32) to ``path``; return its input names."""
    onnx = require("onnx")
    require("onnxscript")
    if model.task_gating is not None:
        raise UserError("this model is gated by per-task masks: each task runs a different encoder, so there is no "
                        "single graph; merge the masks (construct_mtl_mask.py --mode union) or export a compacted model")
    names = graph_inputs(model, tokenizer)
    example = check_batch(tokenizer, names)
    batch = torch.export.Dim("batch")
    sequence = torch.export.Dim("sequence", max=int(model.encoder.config.max_position_embeddings))
    graph = HeadsGraph(model.float().eval().cpu())
    with _quiet_exporter(), torch.inference_mode(False):
        program = torch.onnx.export(graph, tuple(example[n] for n in names), dynamo=True, opset_version=opset,
                                    input_names=names, output_names=[f"logits_{t}" for t in graph.task_names],
                                    dynamic_shapes={n: {0: batch, 1: sequence} for n in names}, verbose=False)
    proto = program.model_proto
    fold_weight_transposes(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return names


def max_difference(model: MultiTaskModel, tokenizer, path: Path, names: list[str]) -> float:
    """max |logits(ONNX Runtime) - logits(PyTorch)| over every task on :data:`CHECK_TEXTS`."""
    batch = check_batch(tokenizer, names)
    sess = session(path, threads=1)
    got = sess.run([f"logits_{t}" for t in model.tasks], {n: batch[n].numpy() for n in names})
    with torch.no_grad():
        want = HeadsGraph(model.eval())(*(batch[n] for n in names))
    return max(float((torch.from_numpy(g) - w).abs().max()) for g, w in zip(got, want, strict=True))


def zero_width_nodes(proto) -> list[str]:
    """MatMul/Gemm nodes whose weight has a zero dimension: a compacted layer without heads or FFN neurons.
    Quantizing an empty weight gives a meaningless scale (and garbage outputs), so they stay fp32 (they
    compute nothing anyway: the output is the bias)."""
    empty = {init.name for init in proto.graph.initializer if 0 in init.dims}
    return [n.name for n in proto.graph.node if n.op_type in ("MatMul", "Gemm") and empty & set(n.input)]


def quantize_int8(fp32_path: Path, int8_path: Path) -> None:
    """ONNX Runtime's transformer fusions, then dynamic int8 quantization of every MatMul/Gemm with a weight.

    Fusions (``onnxruntime.transformers.optimizer``, model type ``bert``): residual + LayerNorm into
    ``SkipLayerNormalization``, bias + GELU into ``BiasGelu``. The quantized graph's MatMuls hide these
    patterns from the session's own optimizer, so fusing first saves the elementwise passes that int8
    leaves dominant (measured: ~10 % faster on MiniLM, more on compacted ones). Quantization: int8
    weights with one scale per output channel; activations quantized per batch at run time (uint8).
    """
    onnx = require("onnx")
    quantization = require("onnxruntime.quantization")
    optimizer = require("onnxruntime.transformers.optimizer")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the fusion report and "consider pre-processing" notes
    fused = int8_path.with_name(int8_path.name + ".fused.tmp")
    try:
        with _quiet_exporter():
            optimizer.optimize_model(str(fp32_path), model_type="bert", num_heads=0, hidden_size=0).save_model_to_file(
                str(fused))
        skip = zero_width_nodes(onnx.load(str(fused), load_external_data=False))
        quantization.quantize_dynamic(str(fused), str(int8_path), weight_type=quantization.QuantType.QInt8,
                                      per_channel=True, nodes_to_exclude=skip)
    finally:
        fused.unlink(missing_ok=True)
        root.setLevel(level)


def export_model(run_or_model_dir: Path, out_dir: Path, *, int8: bool = True, opset: int = OPSET) -> ExportResult:
    """Export the saved model of a run (``RUN/model``) or a model directory (also a compacted one) to ``out_dir``:
    ``model.onnx`` [+ ``model.int8.onnx``], the tokenizer, ``model.json`` and the model card ``README.md``.

    The fp32 graph must match PyTorch within :data:`CHECK_TOLERANCE` (RuntimeError otherwise: a bug).
    Nothing is left in ``out_dir`` when a check fails.
    """
    source = find_model_dir(run_or_model_dir)
    out_dir = Path(out_dir)
    if out_dir.resolve() == source.resolve():
        raise UserError(f"--out {out_dir} is the source model directory; choose a new directory")
    if out_dir.exists() and (not out_dir.is_dir() or any(p.name not in EXPORT_FILES for p in out_dir.iterdir())):
        raise UserError(f"--out {out_dir} exists and is not an earlier export; choose a new directory")
    for module in ("onnx", "onnxscript", "onnxruntime"):
        require(module)
    info = read_model_info(source)
    model, tokenizer = load_multitask_model(source)
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        fp32 = staging / FP32_FILE
        names = export_graph(model, tokenizer, fp32, opset)
        diff = max_difference(model, tokenizer, fp32, names)
        if diff > CHECK_TOLERANCE:
            raise RuntimeError(f"the ONNX graph differs from the PyTorch model by {diff:.3g} (> {CHECK_TOLERANCE}); "
                               "this is a bug, please report it")
        int8_diff = None
        if int8:
            quantize_int8(fp32, staging / INT8_FILE)
            int8_diff = max_difference(model, tokenizer, staging / INT8_FILE, names)
        tokenizer.save_pretrained(staging)
        export_info = {"format": ONNX_FORMAT, "source": str(source), "model": info.get("model", ""),
                       "max_seq_length": int(info.get("max_seq_length", 128)), "pooling": model.pooling,
                       **{k: info[k] for k in SPAN_SETTINGS if k in info},
                       "tasks": [task_to_json(t) for t in model.tasks.values()], "inputs": names,
                       "outputs": {t: f"logits_{t}" for t in model.tasks}, "opset": opset,
                       "files": {"fp32": FP32_FILE, **({"int8": INT8_FILE} if int8 else {})},
                       "max_logit_difference": diff, "int8_max_logit_difference": int8_diff}
        atomic_write_json(staging / "model.json", export_info)
        atomic_write_text(staging / CARD_FILE, export_card(source, export_info))
        shutil.rmtree(out_dir, ignore_errors=True)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    size = (out_dir / INT8_FILE).stat().st_size if int8 else None
    return ExportResult(out_dir, out_dir / FP32_FILE, out_dir / INT8_FILE if int8 else None, diff, int8_diff,
                        (out_dir / FP32_FILE).stat().st_size, size)


EXPORT_FILES = {FP32_FILE, INT8_FILE, "model.json", CARD_FILE, "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt", "added_tokens.json"}


def export_card(source: Path, info: dict) -> str:
    """The source model's card with a section on the export (files, check, how to run it)."""
    card_path = source / CARD_FILE
    card = card_path.read_text(encoding="utf-8").rstrip() if card_path.is_file() else f"# {source.name}"
    int8 = info["files"].get("int8")
    spans = {t["name"] for t in info["tasks"] if t.get("head") == "span"}
    lines = ["", "## ONNX export", "",
             f"Exported from `{source}` with `mtl-export` (opset {info['opset']}): `{FP32_FILE}` (fp32"
             + (f") and `{int8}` (int8 dynamic quantization of every MatMul/Gemm)." if int8 else ")."),
             f"Inputs {', '.join(info['inputs'])} (batch, sequence); outputs "
             + "; ".join(f"{name} {'(batch, sequence, 2: start and end)' if task in spans else '(batch, labels)'}"
                         for task, name in info["outputs"].items()) + ".",
             f"Max |logit difference| vs PyTorch: fp32 {info['max_logit_difference']:.2g}"
             + (f", int8 {info['int8_max_logit_difference']:.2g}" if int8 else "") + ".",
             "", "```bash"]
    pooled = [t for t in info["outputs"] if t not in spans]
    for task in pooled[:1] + [t for t in info["outputs"] if t in spans]:  # one example of each kind of input
        files = "--input dev.json --output predictions.json" if task in spans else "--input data.tsv --output predictions.tsv"
        lines.append(f"mtl-predict --model THIS_DIR/{int8 or FP32_FILE} --task {task} {files}")
    lines += ["```", ""]
    return card + "\n" + "\n".join(lines)
