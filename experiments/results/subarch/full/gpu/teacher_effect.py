"""What rounding the teacher's matrices to fp16 for the trip to the GPU machine (half_model.py) changes in its
outputs, measured on this CPU: the packaged MiniLM against its fp16 copy expanded back to fp32, on 512 GLUE
training sentences, in fp32 and under bf16 autocast (the study's precision). Writes teacher_effect.json.

    GLUE_DIR=../shared/glue python experiments/results/subarch/full/gpu/teacher_effect.py .device/minilm16
"""

import json
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[5]))
from half_model import convert  # noqa: E402

from mtl.corpus import glue_sentences, subsample  # noqa: E402
from mtl.model import load_encoder  # noqa: E402


def outputs(encoder, batches, autocast: bool) -> list[torch.Tensor]:
    out = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        for batch in batches:
            out.append(encoder(**batch).last_hidden_state.float() * batch["attention_mask"][..., None])
    return out


def main(half_dir: str) -> None:
    torch.manual_seed(0)
    texts = subsample(glue_sentences(Path(os.environ["GLUE_DIR"]), None), 512, 1)
    reference, tokenizer = load_encoder("minilm")
    with tempfile.TemporaryDirectory() as tmp:
        convert(Path(half_dir), Path(tmp), "fp32")
        rounded, _ = load_encoder(tmp)
    batches = [tokenizer(texts[i:i + 32], padding=True, truncation=True, max_length=128, return_tensors="pt")
               for i in range(0, len(texts), 32)]
    report = {"texts": len(texts), "what": "last hidden state (padding zeroed), fp16-rounded teacher vs the packaged one"}
    for name, autocast in (("fp32", False), ("bf16_autocast", True)):
        a, b = outputs(reference.eval(), batches, autocast), outputs(rounded.eval(), batches, autocast)
        diff = torch.cat([(x - y).abs().flatten() for x, y in zip(a, b, strict=True)])
        scale = torch.cat([x.abs().flatten() for x in a])
        report[name] = {"max_abs": diff.max().item(), "mean_abs": diff.mean().item(), "mean_abs_value": scale.mean().item(),
                        "relative_mean": (diff.mean() / scale.mean()).item()}
    # for scale: bf16 autocast against fp32 at the same (packaged) weights
    a, b = outputs(reference.eval(), batches, False), outputs(reference.eval(), batches, True)
    diff = torch.cat([(x - y).abs().flatten() for x, y in zip(a, b, strict=True)])
    report["bf16_vs_fp32_same_weights"] = {"max_abs": diff.max().item(), "mean_abs": diff.mean().item()}
    out = Path(__file__).with_name("teacher_effect.json")
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(sys.argv[1])
