#!/usr/bin/env python3
"""The `transformers` (PyTorch CPU, f32) side of `tokenswift bench --transformers PYTHON`.

Same checkpoint, same filler tokens, same thread count, same table layout as the Rust side, so
both are measured in one run on the same machine.
"""
import argparse
import statistics
import time

import torch
from transformers import AutoModelForCausalLM


def filler(n, vocab):
    return [((i * 7919 + 13) % (vocab - 100) + 50) for i in range(n)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--contexts", default="512,4096")
    ap.add_argument("--q", default="1,4,16,32,64")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
    vocab = model.config.vocab_size
    contexts = [int(c) for c in a.contexts.split(",")]
    qs = [int(q) for q in a.q.split(",")]
    print(f"| context |" + "".join(f" q={q} |" for q in qs) + " q=16 / q=1 |")
    print("|---|" + "---|" * len(qs) + "---|")
    with torch.no_grad():
        for ctx in contexts:
            out = model(torch.tensor([filler(ctx, vocab)]), use_cache=True)
            past = out.past_key_values
            row = {}
            for q in qs:
                toks = torch.tensor([filler(q, vocab)])
                pos = torch.arange(ctx, ctx + q).unsqueeze(0)
                times = []
                for _ in range(a.reps + 1):
                    t = time.perf_counter()
                    model(toks, past_key_values=past, position_ids=pos, use_cache=True)
                    times.append(time.perf_counter() - t)
                    past.crop(-q)  # drop the q new tokens (works on transformers 4 and 5)
                row[q] = statistics.median(times[1:]) * 1e3
            ratio = f"{row[16] / row[1]:.2f}" if 16 in row and 1 in row else "–"
            print(f"| {ctx} |" + "".join(f" {row[q]:.1f} |" for q in qs) + f" {ratio} |")
        print()
        print("| context | prefill tok/s | decode tok/s | ms/token |")
        print("|---|---|---|---|")
        for ctx in contexts:
            ids = torch.tensor([filler(ctx, vocab)])
            t = time.perf_counter()
            out = model(ids, use_cache=True)
            prefill = time.perf_counter() - t
            past = out.past_key_values
            nxt = out.logits[0, -1].argmax().view(1, 1)
            t = time.perf_counter()
            for i in range(a.decode_tokens - 1):
                out = model(nxt, past_key_values=past, use_cache=True)
                past = out.past_key_values
                nxt = out.logits[0, -1].argmax().view(1, 1)
            dec = time.perf_counter() - t
            tps = a.decode_tokens / dec
            print(f"| {ctx} | {ctx / prefill:.0f} | {tps:.2f} | {1e3 / tps:.1f} |")


if __name__ == "__main__":
    main()
