import pytest
import torch


def pytest_collection_modifyitems(config, items):
    """GPU tests are skipped cleanly, with a reason, on machines without CUDA (CI)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# ---- tiny_assets: a random 2-layer Qwen2, a byte-level tokenizer with a chat template and a toy
# parquet task in verl's format, built locally (no hub access) once per session; used by the
# hf-rollout / CPU-platform tests and their end-to-end runs of verl's trainer.
import random  # noqa: E402
from pathlib import Path  # noqa: E402

REWARD_SOURCE = '''
def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    """1 for the right sum, else 0.1 per digit (up to 5) so a random model gets some signal."""
    text = solution_str.strip()
    if text.startswith(ground_truth):
        return 1.0
    return 0.1 * min(sum(c.isdigit() for c in text), 5)
'''


def _save_tokenizer(out: Path):
    """Byte-level BPE without merges (one token per byte) plus Qwen's chat special tokens.

    transformers 5 always reloads a qwen2 directory's tokenizer as ``Qwen2Tokenizer``, which
    rebuilds a byte-level BPE from the saved vocabulary, so any other tokenizer kind is lost.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    template = (
        "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>{% endif %}"
    )
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>", chat_template=template
    )
    hf_tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    hf_tok.save_pretrained(out)
    return vocab


def _write_task(out: Path):
    import pandas as pd

    rng = random.Random(0)
    for split, n in (("train", 32), ("test", 8)):
        rows = []
        for i in range(n):
            a, b = rng.randint(0, 9), rng.randint(0, 9)
            rows.append(
                dict(
                    data_source="tiny_add",
                    prompt=[{"role": "user", "content": f"{a}+{b}="}],
                    ability="math",
                    reward_model={"style": "rule", "ground_truth": str(a + b)},
                    extra_info={"split": split, "index": i},
                )
            )
        pd.DataFrame(rows).to_parquet(out / f"{split}.parquet")
    (out / "reward.py").write_text(REWARD_SOURCE)


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory) -> Path:
    """Directory with the model+tokenizer, train/test.parquet and reward.py (compute_score)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out = tmp_path_factory.mktemp("tiny_assets")
    vocab = _save_tokenizer(out)
    cfg = Qwen2Config(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
        tie_word_embeddings=True, eos_token_id=vocab["<|im_end|>"], pad_token_id=0, bos_token_id=None,
    )  # fmt: skip
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(out)
    _write_task(out)
    return out
