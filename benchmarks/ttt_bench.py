"""TTT benchmark: dual vs primal prefill, and decode time and memory against context length.

    python benchmarks/ttt_bench.py [--quick] [--threads N]

1. Prefill: one TTT-Linear layer (and one TTT-MLP layer), batch 1, on the same 2k-token input:
   dual form vs the token-by-token primal form. The two alternate over 5 rounds (dual: best of 3
   runs per round) and the best time of each counts. The whole layer is timed (the headline
   `dual_over_primal_speedup`: q/k/v/o projections, norms included, which cost the same in both),
   and so is the TTT recurrence alone on the same q, k, v, lr ("recurrence only").
2. Decode at contexts 1k, 4k, 16k, 32k: a TTT-Linear LM and a transformer of the same size
   (transformers' LlamaForCausalLM, KV cache on, same hidden size, layers, heads, SwiGLU width,
   vocabulary, tied embeddings), random weights, float32, batch 1. Each (model, context) runs in
   its own subprocess, so its memory figures are its own:
     * TTT: the context is really prefilled (dual form, 2k-token chunks, logits only for the last
       token), so the state is the one a prompt of that length leaves;
     * transformer: a DynamicCache filled with random key/value tensors of the right shape
       (prefilling 32k tokens of attention on a CPU takes too long; attention cost does not depend
       on the values); decoding then appends to it as usual.
   Then, in each of 3 rounds (TTT: from a copy of the prefilled state; transformer: the cache
   cropped back to the context), 4 warm-up steps and 32 timed decode steps of one token each; the
   figure is the best round's mean time per token.
   Memory: exact bytes of the cache/state tensors; peak RSS (VmHWM, reset via /proc/self/clear_refs)
   minus the RSS after building the model ("RSS growth": TTT prefill activations of one 2k chunk
   included), and peak RSS while decoding minus the RSS just before ("decoding"). Workers run with
   glibc's mmap threshold fixed and heap trimming on, so RSS follows live tensors.

Threads default to 1: on a shared machine, multi-threaded timings of small ops are dominated by
OpenMP threads waiting for each other. The last line printed is one JSON object of all figures;
they also go to the results log (``docs/results/``, ``itc.results_log``) unless ``--no-log``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from functools import partial

import torch

HIDDEN, LAYERS, HEADS, INTERMEDIATE, VOCAB = 256, 4, 4, 704, 2048
DECODE_STEPS, WARMUP_STEPS, PREFILL_CHUNK = 32, 4, 2048


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb() -> float:
    return _status_mb("VmRSS")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so later peaks exclude import and model build."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    hwm = _status_mb("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if math.isnan(hwm) else hwm


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def ttt_config(ttt_layer_type: str = "linear"):
    from itc.ttt import TTTConfig

    return TTTConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        ttt_layer_type=ttt_layer_type,
        tie_word_embeddings=True,
    )


def bench_prefill(tokens: int, rounds: int) -> dict:
    """Dual vs primal on one layer and input; rounds alternate the two, the best of each counts.

    Besides the whole layer (projections, norms and gate included), the TTT recurrence alone is
    timed on the layer's own q, k, v and learning rates (the private `_dual` / `_primal` forms).
    """
    from itc.ttt import TTTMLP, TTTLinear

    out: dict = {"prefill_tokens": tokens}
    for name, cls in (("linear", TTTLinear), ("mlp", TTTMLP)):
        torch.manual_seed(0)
        layer = cls(ttt_config(name)).eval()
        x = torch.randn(1, tokens, HIDDEN)
        H, d = layer.num_heads, layer.head_dim
        with torch.no_grad():
            q, k, v = (
                p(x).view(1, tokens, H, d).transpose(1, 2)
                for p in (layer.q_proj, layer.k_proj, layer.v_proj)
            )
            lr = (layer.eta_base * torch.sigmoid(layer.lr_proj(x)) / d).transpose(1, 2)
        times: dict[str, list[float]] = {"dual": [], "primal": [], "dual_in": [], "primal_in": []}
        with torch.no_grad():
            layer(x[:, :64])  # warm-up
            for _ in range(rounds):
                times["dual"].append(best_of(partial(layer, x), 3))
                times["primal"].append(best_of(partial(layer, x, mode="primal"), 1))
                times["dual_in"].append(best_of(partial(layer._dual, q, k, v, lr, None, None), 3))
                times["primal_in"].append(best_of(partial(layer._primal, q, k, v, lr), 1))
            diff = (layer(x) - layer(x, mode="primal")).abs().max().item()
        sfx = "" if name == "linear" else "_mlp"
        t = {key: min(val) for key, val in times.items()}
        out.update(
            {
                f"dual_s{sfx}": t["dual"],
                f"primal_s{sfx}": t["primal"],
                f"dual_tok_per_s{sfx}": tokens / t["dual"],
                f"primal_tok_per_s{sfx}": tokens / t["primal"],
                f"dual_over_primal_speedup{sfx}": t["primal"] / t["dual"],
                f"recurrence_dual_s{sfx}": t["dual_in"],
                f"recurrence_primal_s{sfx}": t["primal_in"],
                f"dual_over_primal_speedup_recurrence{sfx}": t["primal_in"] / t["dual_in"],
                f"dual_primal_max_abs_diff{sfx}": diff,
            }
        )
    return out


def worker(kind: str, context: int, rounds: int = 3, seed: int = 0) -> dict:
    """Build a model, reach `context` tokens of history, time decode steps (in a subprocess)."""
    torch.manual_seed(seed)
    ids = torch.randint(0, VOCAB, (1, context + WARMUP_STEPS + DECODE_STEPS))
    decode_ids = ids[:, context:]
    with torch.no_grad():
        if kind == "ttt":
            from itc.ttt import TTTCache, TTTForCausalLM

            model = TTTForCausalLM(ttt_config()).eval()
            base = rss_mb()
            reset_peak_rss()
            cache = TTTCache()
            t = time.perf_counter()
            for i in range(0, context, PREFILL_CHUNK):
                model(
                    ids[:, i : min(i + PREFILL_CHUNK, context)],
                    past_key_values=cache,
                    logits_to_keep=1,
                )
            prefill_s = time.perf_counter() - t
            state_bytes = cache.nbytes()

            def fresh():  # each round decodes from a copy of the prefilled state
                return cache.copy()

            def nbytes(c) -> int:
                return c.nbytes()
        else:
            from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

            cfg = LlamaConfig(
                vocab_size=VOCAB,
                hidden_size=HIDDEN,
                num_hidden_layers=LAYERS,
                num_attention_heads=HEADS,
                num_key_value_heads=HEADS,
                intermediate_size=INTERMEDIATE,
                tie_word_embeddings=True,
                max_position_embeddings=context + WARMUP_STEPS + DECODE_STEPS,
            )
            model = LlamaForCausalLM(cfg).eval()
            base = rss_mb()
            reset_peak_rss()
            cache = DynamicCache(config=cfg)
            head_dim = HIDDEN // HEADS
            for layer in range(LAYERS):
                k = torch.randn(1, HEADS, context, head_dim) * 0.1
                cache.update(k, torch.randn_like(k), layer)
            prefill_s = float("nan")

            def nbytes(c) -> int:
                return sum(
                    x.numel() * x.element_size() for lay in c.layers for x in (lay.keys, lay.values)
                )

            state_bytes = nbytes(cache)

            def fresh():  # each round decodes from the same context length
                cache.crop(context)
                return cache

        build_peak, before_decode = peak_rss_mb(), rss_mb()
        reset_peak_rss()
        per_round = []
        for _ in range(rounds):
            c = fresh()
            for i in range(WARMUP_STEPS):
                model(decode_ids[:, i : i + 1], past_key_values=c, use_cache=True)
            t = time.perf_counter()
            for i in range(WARMUP_STEPS, WARMUP_STEPS + DECODE_STEPS):
                model(decode_ids[:, i : i + 1], past_key_values=c, use_cache=True)
            per_round.append((time.perf_counter() - t) / DECODE_STEPS)
    return {
        "kind": kind,
        "context": context,
        "decode_ms": 1000 * min(per_round),
        "decode_ms_rounds": [1000 * x for x in per_round],
        "state_bytes": state_bytes,
        "state_bytes_after_decode": nbytes(c),
        "rss_base_mb": base,
        "peak_rss_mb": max(build_peak, peak_rss_mb()),
        "rss_growth_mb": max(build_peak, peak_rss_mb()) - base,
        "decode_rss_growth_mb": peak_rss_mb() - before_decode,
        "prefill_s": prefill_s,
    }


def run_worker(kind: str, context: int, threads: int) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        kind,
        "--context",
        str(context),
        "--threads",
        str(threads),
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    # Large blocks always mmapped and the heap trimmed on free, so RSS follows live tensors
    # (otherwise glibc keeps freed prefill activations resident and RSS looks like a leak).
    env.update(MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="0")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {kind} {context} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def label(context: int) -> str:
    return f"{context // 1024}k" if context % 1024 == 0 else str(context)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="512-token prefill, contexts 1k and 4k")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-log", action="store_true", help="print only; write no results-log entry")
    ap.add_argument("--worker", choices=["ttt", "llama"], help=argparse.SUPPRESS)
    ap.add_argument("--context", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, args.context)))
        return

    prefill_tokens = 512 if args.quick else 2048
    contexts = [1024, 4096] if args.quick else [1024, 4096, 16384, 32768]
    figures: dict = {
        "quick": args.quick,
        "threads": args.threads,
        "dtype": "float32",
        "hidden_size": HIDDEN,
        "num_layers": LAYERS,
        "num_heads": HEADS,
        "intermediate_size": INTERMEDIATE,
        "vocab_size": VOCAB,
        "decode_steps": DECODE_STEPS,
        "torch": torch.__version__,
    }

    print(f"Prefill: one layer (hidden {HIDDEN}, {HEADS} heads), {prefill_tokens} tokens, batch 1")
    pre = bench_prefill(prefill_tokens, rounds=5)
    figures.update(pre)
    cols = (
        ("dual s", 10),
        ("primal s", 10),
        ("dual tok/s", 12),
        ("primal tok/s", 14),
        ("speedup", 9),
        ("recurrence only", 17),
    )
    print(f"{'layer':<10}" + "".join(f"{c:>{w}}" for c, w in cols))
    for name, sfx in (("TTT-Linear", ""), ("TTT-MLP", "_mlp")):
        print(
            f"{name:<10}{pre['dual_s' + sfx]:>10.3f}{pre['primal_s' + sfx]:>10.3f}"
            f"{pre['dual_tok_per_s' + sfx]:>12.0f}{pre['primal_tok_per_s' + sfx]:>14.0f}"
            f"{pre['dual_over_primal_speedup' + sfx]:>8.1f}x"
            f"{pre['dual_over_primal_speedup_recurrence' + sfx]:>16.1f}x"
        )

    print(
        f"\nDecode: {LAYERS} layers, hidden {HIDDEN}, batch 1; ms/token: mean of {DECODE_STEPS} steps"
    )
    print("state: cache tensors; RSS growth (MiB) over the model alone, and while decoding")
    cols = ("ms/token", 10), ("state MiB", 11), ("RSS growth", 12), ("decoding", 10)
    print(f"{'context':>8}{'model':>8}" + "".join(f"{c:>{w}}" for c, w in cols))
    for ctx in contexts:
        for kind in ("ttt", "llama"):
            r = run_worker(kind, ctx, args.threads)
            lab = label(ctx)
            figures[f"{kind}_decode_ms_{lab}"] = r["decode_ms"]
            figures[f"{kind}_state_bytes_{lab}"] = r["state_bytes"]
            figures[f"{kind}_peak_rss_mb_{lab}"] = r["peak_rss_mb"]
            figures[f"{kind}_rss_growth_mb_{lab}"] = r["rss_growth_mb"]
            figures[f"{kind}_decode_rss_growth_mb_{lab}"] = r["decode_rss_growth_mb"]
            if kind == "ttt":
                figures[f"ttt_prefill_s_{lab}"] = r["prefill_s"]
                figures[f"ttt_state_bytes_after_decode_{lab}"] = r["state_bytes_after_decode"]
            print(
                f"{lab:>8}{kind:>8}{r['decode_ms']:>10.2f}{r['state_bytes'] / 2**20:>11.2f}"
                f"{r['rss_growth_mb']:>12.1f}{r['decode_rss_growth_mb']:>10.1f}",
                flush=True,
            )

    lo, hi = label(contexts[0]), label(contexts[-1])
    for kind in ("ttt", "llama"):
        figures[f"{kind}_decode_{hi}_over_{lo}"] = (
            figures[f"{kind}_decode_ms_{hi}"] / figures[f"{kind}_decode_ms_{lo}"]
        )
        figures[f"{kind}_state_{hi}_over_{lo}"] = (
            figures[f"{kind}_state_bytes_{hi}"] / figures[f"{kind}_state_bytes_{lo}"]
        )
    ttt_ratio = figures[f"ttt_decode_{hi}_over_{lo}"]
    figures["targets"] = {
        "dual_over_primal_speedup>=5": figures["dual_over_primal_speedup"] >= 5,
        "dual_over_primal_speedup_recurrence>=5": (
            figures["dual_over_primal_speedup_recurrence"] >= 5
        ),
        f"ttt_decode_{hi}_over_{lo}<=1.3": ttt_ratio <= 1.3,
        "ttt_state_flat": len({figures[f"ttt_state_bytes_{label(c)}"] for c in contexts}) == 1,
        "transformer_kv_grows": figures[f"llama_state_bytes_{hi}"]
        > figures[f"llama_state_bytes_{lo}"],
    }
    llama_ratio = figures[f"llama_decode_{hi}_over_{lo}"]
    print(
        f"\nper-token decode {hi} / {lo}: TTT {ttt_ratio:.2f}x, transformer {llama_ratio:.2f}x; "
        f"dual / primal prefill: {figures['dual_over_primal_speedup']:.1f}x"
    )
    print(f"targets: {figures['targets']}")
    if not args.no_log:
        from itc.results_log import write_entry

        print(f"results log: {write_entry('ttt_bench' + (' (quick)' if args.quick else ''), entry_body(figures, contexts))}")
    print(json.dumps(figures))


def entry_body(figures: dict, contexts: list[int]) -> str:
    """The headline figures as a results-log body (Markdown); every figure in a JSON block."""
    labs = [label(c) for c in contexts]
    mib = 2**20

    def row(key: str, fmt) -> str:
        return " | ".join(fmt(figures[key.format(lab=lab)]) for lab in labs)

    lines = [
        f"{figures['threads']} thread(s), float32, batch 1; hidden {figures['hidden_size']}, "
        f"{figures['num_layers']} layers, {figures['num_heads']} heads.",
        "",
        f"Prefill of one layer, {figures['prefill_tokens']} tokens, dual over primal (whole layer / "
        f"recurrence only): TTT-Linear {figures['dual_over_primal_speedup']:.1f}x / "
        f"{figures['dual_over_primal_speedup_recurrence']:.1f}x; TTT-MLP "
        f"{figures['dual_over_primal_speedup_mlp']:.1f}x / {figures['dual_over_primal_speedup_recurrence_mlp']:.1f}x.",
        "",
        "| figure | " + " | ".join(labs) + " |",
        "|---|" + "---|" * len(labs),
        "| TTT decode ms/token | " + row("ttt_decode_ms_{lab}", lambda x: f"{x:.2f}") + " |",
        "| transformer decode ms/token | " + row("llama_decode_ms_{lab}", lambda x: f"{x:.2f}") + " |",
        "| TTT state MiB | " + row("ttt_state_bytes_{lab}", lambda x: f"{x / mib:.2f}") + " |",
        "| transformer KV cache MiB | " + row("llama_state_bytes_{lab}", lambda x: f"{x / mib:.2f}") + " |",
        "| TTT RSS growth while decoding, MiB | " + row("ttt_decode_rss_growth_mb_{lab}", lambda x: f"{x:.1f}") + " |",
        "| transformer RSS growth while decoding, MiB | "
        + row("llama_decode_rss_growth_mb_{lab}", lambda x: f"{x:.1f}") + " |",
        "",
        f"Targets: {', '.join(f'{k}: {v}' for k, v in figures['targets'].items())}.",
        "",
        "```json",
        json.dumps(figures),
        "```",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
