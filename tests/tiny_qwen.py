"""A tiny, randomly initialised Qwen2 checkpoint with a matching tokenizer, built offline.

Enough for verl's workers to load a real `qwen2` model directory (config, weights, tokenizer)
in a few hundred milliseconds; the weights are random, so only the mechanics are tested.
"""

from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

PAD_TOKEN, TURN_START_TOKEN, EOS_TOKEN = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD_TOKEN, TURN_START_TOKEN, EOS_TOKEN]
VOCAB_SIZE = 128  # model vocabulary; the tokenizer uses the first 98 ids
CHAT_TEMPLATE = (  # Qwen's turn markers, as verl's Qwen-specific token handling expects
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE over printable ASCII, no merges: one token per character.

    transformers 5 loads any `qwen2` directory's tokenizer as Qwen2Tokenizer, which rebuilds a
    byte-level BPE from the saved vocabulary and merges; this tokenizer is of that kind, so it
    survives the round trip (ASCII text encodes and decodes unchanged).
    """
    # Byte-level symbols: printable ASCII maps to itself, except the space, which is 'Ġ'.
    characters = ["Ġ" if byte == ord(" ") else chr(byte) for byte in range(32, 127)]
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + characters)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(token, special=True) for token in SPECIAL_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=PAD_TOKEN, eos_token=EOS_TOKEN, chat_template=CHAT_TEMPLATE
    )


def save_tiny_qwen(directory, hidden_size: int = 32, num_layers: int = 2, seed: int = 0) -> Path:
    """Write a random Qwen2ForCausalLM (float32, tied embeddings) and its tokenizer to `directory`."""
    import torch

    directory = Path(directory)
    tokenizer = build_tokenizer()
    config = Qwen2Config(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        use_sliding_window=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        dtype="float32",
    )
    torch.manual_seed(seed)
    Qwen2ForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
