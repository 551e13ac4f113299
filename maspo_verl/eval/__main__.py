"""`python -m maspo_verl.eval --model DIR --data FILE.parquet [...] --out DIR`: Avg@k / Pass@k of a checkpoint.

Generates k samples per problem through verl's own rollout replicas (`--backend vllm` on GPUs,
`--backend hf` for small models and CPU), scores them with the project's rewards, and writes
per-sample JSONL plus a per-benchmark summary. Re-running with the same settings resumes.
"""

from __future__ import annotations

import argparse
import json
import sys

from maspo_verl.eval.data import EvalInputError
from maspo_verl.eval.runner import (
    DEFAULT_K,
    DEFAULT_MAX_RESPONSE_LENGTH,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    EvalConfig,
    evaluate,
)
from maspo_verl.refusal import debugging, refuse


def _default_backend() -> str:
    import importlib.util

    from maspo_verl.eval.generate import cuda_device_count

    return "vllm" if cuda_device_count() and importlib.util.find_spec("vllm") else "hf"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m maspo_verl.eval", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    p.add_argument("--model", required=True, help="Hugging Face model dir, or a verl checkpoint dir (merged, cached)")
    p.add_argument("--data", required=True, nargs="+", help="prepared eval parquet file(s) in verl's layout")
    p.add_argument("--out", required=True, help="output dir (samples.jsonl, settings.json, summary.json/.md)")
    p.add_argument("-k", "--k", type=int, default=DEFAULT_K, help="samples per problem")
    p.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE, help="DeepSeek-R1-Distill convention")
    p.add_argument("--top-p", type=float, default=DEFAULT_TOP_P, help="DeepSeek-R1-Distill convention")
    p.add_argument("--top-k", type=int, default=-1, help="-1: no top-k")
    p.add_argument("--max-response-length", type=int, default=DEFAULT_MAX_RESPONSE_LENGTH, help="tokens")
    p.add_argument(
        "--backend",
        choices=["vllm", "hf"],
        default=None,
        help="verl rollout backend; default vllm when a GPU and vLLM are present, else hf",
    )
    p.add_argument("--dtype", default=None, help="default bfloat16 on GPU, float32 on CPU")
    p.add_argument("--tensor-parallel-size", type=int, default=1)
    p.add_argument(
        "--num-replicas", type=int, default=None, help="data-parallel replicas; default GPUs / TP (1 on CPU)"
    )
    p.add_argument("--max-num-seqs", type=int, default=256, help="concurrent requests per replica")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85, help="vllm only")
    p.add_argument("--seed", type=int, default=0, help="per-request seeds derive from it (honoured by vllm)")
    p.add_argument(
        "--chat-template-kwargs", type=json.loads, default={}, help="JSON, e.g. '{\"enable_thinking\": true}'"
    )
    p.add_argument("--prompt-key", default="prompt")
    p.add_argument(
        "--reward-fn",
        default=None,
        help="PATH:NAME or module:NAME scoring every sample (default: by data_source, see docs)",
    )
    p.add_argument("--merge-cache", default=None, help="where merged checkpoints are cached")
    p.add_argument("--max-new-samples", type=int, default=None, help="generate at most this many samples, then stop")
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap resamples for the CI")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster instead of starting one")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--debug", action="store_true", help="a refusal shows its traceback")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    config = EvalConfig(
        model=args.model, data=args.data, out=args.out, k=args.k, temperature=args.temperature, top_p=args.top_p,
        top_k=args.top_k, max_response_length=args.max_response_length, backend=args.backend or _default_backend(),
        dtype=args.dtype, tensor_parallel_size=args.tensor_parallel_size, num_replicas=args.num_replicas,
        max_num_seqs=args.max_num_seqs, gpu_memory_utilization=args.gpu_memory_utilization, seed=args.seed,
        chat_template_kwargs=args.chat_template_kwargs, prompt_key=args.prompt_key, reward_fn=args.reward_fn,
        merge_cache=args.merge_cache, max_new_samples=args.max_new_samples, confidence=args.confidence,
        n_bootstrap=args.bootstrap, ray_address=args.ray_address, progress=not args.no_progress,
    )  # fmt: skip
    try:
        summary = evaluate(config)
    except EvalInputError as exc:
        if debugging(args.debug):
            raise
        return refuse("maspo_verl.eval", exc)
    return 0 if summary["complete"] else 3


if __name__ == "__main__":
    sys.exit(main())
