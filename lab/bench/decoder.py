"""The transformers sampler's direct decoder against the model's own forward, in one run.

    python -m lab.bench.decoder [--device cpu|cuda] [--models tiny,100m] [--prompts 64] [--n 8]
                                [--max-new-tokens 128] [--dtype fp32|bf16] [--repeats 3]

`sampling.hf_decoder=auto` decodes Qwen2 / Llama models with `core.sampling.hf.decoder` (fused
projections, KV written in place); `transformers` runs the model's forward with a
`DynamicCache`. Both sample the same prompts with the same seed through `HFSampler.generate`,
interleaved `--repeats` times after one warm-up each; tokens per second is generated tokens /
wall seconds (median). Models as in `lab.bench.sampling`: the embedded tiny Qwen2 (random
weights, or `--tiny PATH`; its rows end at sampled EOS) and a random ~98M Qwen2 whose rows
never end. The last stdout line is JSON with `ratio_<model>` (decoder / transformers tokens/s).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace

from lab.bench.sampling import SEED, model_100m, tiny_model


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", default="tiny,100m")
    p.add_argument("--tiny", help="a trained embedded checkpoint instead of random weights")
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--n", type=int, default=8, help="samples per prompt")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    import torch

    from core.config import SamplingConfig
    from core.sampling.hf import HFSampler

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    out: dict = {"device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
                 "dtype": args.dtype, "prompts": args.prompts, "n": args.n, "max_new_tokens": args.max_new_tokens}
    for name in args.models.split(","):
        model, tok, prompts = tiny_model(args.tiny) if name == "tiny" else model_100m()
        dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
        model = model.to(device=args.device, dtype=dtype).eval()
        sampler = HFSampler(model, tok)
        base = SamplingConfig(temperature=1.0, max_new_tokens=args.max_new_tokens, batch_size=4096)
        rates: dict[str, list[float]] = {"auto": [], "transformers": []}
        for rep in range(args.repeats + 1):
            for mode in rates:
                params = replace(base, hf_decoder=mode)
                sync()
                t0 = time.perf_counter()
                groups = sampler.generate(prompts[: args.prompts], params, seed=SEED, n=args.n)
                sync()
                seconds = time.perf_counter() - t0
                if rep:  # the first round warms both up
                    rates[mode].append(sum(c.num_tokens for g in groups for c in g) / seconds)
        med = {mode: statistics.median(r) for mode, r in rates.items()}
        print(f"{name}: decoder {med['auto']:.0f} tokens/s, transformers {med['transformers']:.0f} tokens/s "
              f"({med['auto'] / med['transformers']:.2f}x); per repeat "
              f"{[round(a / b, 2) for a, b in zip(rates['auto'], rates['transformers'])]}", flush=True)
        out |= {f"decoder_tokens_per_s_{name}": round(med["auto"], 1),
                f"transformers_tokens_per_s_{name}": round(med["transformers"], 1),
                f"ratio_{name}": round(med["auto"] / med["transformers"], 3)}
        del model, sampler
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
