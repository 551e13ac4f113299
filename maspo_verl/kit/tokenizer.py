"""A Qwen2-shaped, character-level tokenizer for the tiny arithmetic model.

Why Qwen2-shaped: the model is a ``qwen2`` checkpoint, and transformers 5
always loads a ``qwen2`` directory's tokenizer as ``Qwen2Tokenizer``, which
rebuilds a byte-level BPE (Qwen's split regex, byte-level pre-tokenizer and
decoder) from the saved vocabulary and merges. So we build exactly that kind
of tokenizer, just with a tiny vocabulary: the 256 byte-level symbols (every
text round-trips, each digit is its own token) plus merges that spell the chat
role names as single tokens. verl picks its rollout token builder from the
``model_type`` too, and that builder requires Qwen's ``<|im_end|>``, so the
special tokens and chat template are Qwen2's as well.
"""

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "<|endoftext|>"  # Qwen2 uses it as pad and (in the model config) bos
TURN_START_TOKEN = "<|im_start|>"
TURN_END_TOKEN = "<|im_end|>"  # closes every turn, hence the eos of a response
SPECIAL_TOKENS = [PAD_TOKEN, TURN_START_TOKEN, TURN_END_TOKEN]

# Spelled as single tokens through BPE merges, so the chat scaffold costs few positions.
ROLE_NAMES = ["system", "user", "assistant"]

# Qwen2's own pre-tokenization regex (transformers' Qwen2Tokenizer rebuilds with it).
QWEN2_SPLIT_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

# Qwen2-style turns. Content may be a string or a list of {"type": "text"} parts
# (verl's fallback rendering path sends the latter).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)


def spelling_merges(word: str) -> list[tuple[str, str]]:
    """BPE merges that glue ``word`` together left to right: (w, o), (wo, r), (wor, d)."""
    return [(word[:end], word[end]) for end in range(1, len(word))]


def vocabulary_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Token ids in a fixed order (the order is part of the model) and the merges."""
    tokens = list(SPECIAL_TOKENS) + sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = [merge for name in ROLE_NAMES for merge in spelling_merges(name)]
    for left, right in merges:
        if left + right not in tokens:
            tokens.append(left + right)
    return {token: index for index, token in enumerate(tokens)}, merges


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Build the tokenizer wrapped so ``AutoTokenizer`` reloads it unchanged."""
    vocab, merges = vocabulary_and_merges()
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, continuing_subword_prefix="", end_of_word_suffix=""))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=PAD_TOKEN,
        eos_token=TURN_END_TOKEN,
        pad_token=PAD_TOKEN,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=256,
    )
