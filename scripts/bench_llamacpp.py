#!/usr/bin/env python3
"""The llama.cpp side of `tokenswift bench --llamacpp PYTHON`, through its PyPI client
`llama-cpp-python`.

Same GGUF file the default model is converted from, same filler tokens, same thread count and the
same table layout as the Rust side, so both are measured in one run on the same machine. Flash
attention is off (with it on, decode at depth 4096 collapses on this CPU). The last line is a JSON
summary the Rust side reads to print ratios.

On CPUs whose AMX kernels crash (the 2-core reference machine), install the client with
    CMAKE_ARGS="-DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' \
                -DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'" \
      pip install llama-cpp-python==0.3.36
"""
import argparse
import json
import statistics
import sys
import time

try:
    import llama_cpp
except ImportError:
    sys.exit(
        "bench_llamacpp.py: this Python has no `llama_cpp`; install the PyPI package "
        "llama-cpp-python (see this script's header for the build flags)"
    )


def filler(n, vocab):
    return [((i * 7919 + 13) % (vocab - 100) + 50) for i in range(n)]


def rollback(llm, n):
    """Drops every cached token from position n on."""
    llm._ctx.kv_cache_seq_rm(0, n, -1)
    llm.n_tokens = n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--contexts", default="512,4096")
    ap.add_argument("--q", default="1,2,4,8,16")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    contexts = [int(c) for c in a.contexts.split(",")]
    qs = [int(q) for q in a.q.split(",")]
    n_ctx = max(contexts) + max(max(qs), a.decode_tokens) + 8
    llm = llama_cpp.Llama(
        model_path=a.gguf,
        n_ctx=n_ctx,
        n_batch=512,
        n_threads=a.threads,
        n_threads_batch=a.threads,
        flash_attn=False,
        logits_all=False,
        verbose=False,
    )
    vocab = llm.n_vocab()
    print(f"llama.cpp (llama-cpp-python {llama_cpp.__version__}), {a.gguf}, {a.threads} threads")
    print()
    print("| context |" + "".join(f" q={q} |" for q in qs) + " q=16 / q=1 |")
    print("|---|" + "---|" * len(qs) + "---|")
    summary = {"forward_ms": {}, "decode_tps": {}, "prefill_tps": {}}
    for ctx in contexts:
        llm.reset()
        rollback(llm, 0)
        llm.eval(filler(ctx, vocab))
        row = {}
        for q in qs:
            toks = filler(q, vocab)
            times = []
            for _ in range(a.reps + 1):
                t = time.perf_counter()
                llm.eval(toks)
                times.append(time.perf_counter() - t)
                rollback(llm, ctx)
            row[q] = statistics.median(times[1:]) * 1e3
        summary["forward_ms"][str(ctx)] = {str(q): row[q] for q in qs}
        ratio = f"{row[16] / row[1]:.2f}" if 16 in row and 1 in row else "–"
        print(f"| {ctx} |" + "".join(f" {row[q]:.1f} |" for q in qs) + f" {ratio} |")
    print()
    print("| context | prefill tok/s | decode tok/s | ms/token |")
    print("|---|---|---|---|")
    for ctx in contexts:
        llm.reset()
        rollback(llm, 0)
        t = time.perf_counter()
        llm.eval(filler(ctx, vocab))
        prefill = time.perf_counter() - t
        toks = filler(a.decode_tokens, vocab)
        t = time.perf_counter()
        for tok in toks:
            llm.eval([tok])
        dec = time.perf_counter() - t
        tps = a.decode_tokens / dec
        summary["prefill_tps"][str(ctx)] = ctx / prefill
        summary["decode_tps"][str(ctx)] = tps
        print(f"| {ctx} | {ctx / prefill:.0f} | {tps:.2f} | {1e3 / tps:.1f} |")
    print("JSON " + json.dumps(summary))


if __name__ == "__main__":
    main()
