"""CLIP tokenizers for SDXL's two text encoders, rebuilt offline from open_clip's BPE table.

open_clip ships the BPE merges CLIP was trained with (``bpe_simple_vocab_16e6.txt.gz``);
this module converts them once into the ``vocab.json`` + ``merges.txt`` a transformers
``CLIPTokenizer`` reads, so no tokenizer download is ever needed. Ids match open_clip's.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path

from carlos.errors import InvalidInputError

CLIP_CONTEXT_LENGTH = 77
CLIP_VOCAB_SIZE = 49408
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
#: SDXL's second tokenizer (OpenCLIP bigG) pads with "!" (id 0), as open_clip does.
TOKENIZER_2_PAD = "!"
_N_MERGES = 49152 - 256 - 2  # what CLIP keeps of the BPE table (open_clip and OpenAI alike)
_TOKENIZER_FORMAT = "carlos-clip-bpe-v1"  # bump when the written files change


def _default_tokenizer_cache() -> Path:
    from carlos.config import default_paths

    return default_paths().cache_dir / "clip_tokenizer"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode map (the first 256 vocabulary entries)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(range(ord("\xae"), ord("\xff") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def clip_tokenizer_dir(cache_dir: str | Path | None = None) -> Path:
    """Write (once) ``vocab.json`` + ``merges.txt`` converted from open_clip's BPE table.

    The vocabulary order is CLIP's: 256 byte symbols, the same with ``</w>``, one entry per
    merge, then the start/end tokens (ids 49406/49407), so ids match open_clip's tokenizer.
    """
    from open_clip.tokenizer import default_bpe

    folder = Path(cache_dir) if cache_dir is not None else _default_tokenizer_cache()
    folder = folder / _TOKENIZER_FORMAT
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return folder
    with gzip.open(default_bpe()) as fh:
        lines = fh.read().decode("utf-8").split("\n")
    merges = lines[1 : _N_MERGES + 1]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += [BOS_TOKEN, EOS_TOKEN]
    if len(vocab) != CLIP_VOCAB_SIZE or len(set(vocab)) != CLIP_VOCAB_SIZE:
        raise InvalidInputError(f"open_clip's BPE table gave {len(vocab)} tokens, expected {CLIP_VOCAB_SIZE}; reinstall open_clip_torch")
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "vocab.json": json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "\n".join(merges) + "\n",
    }
    for name, text in files.items():  # atomic: concurrent builders never see half a file
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, folder / name)
    return folder


def load_clip_tokenizer(pad_token: str = EOS_TOKEN, cache_dir: str | Path | None = None):
    """A transformers ``CLIPTokenizer`` (77 tokens) from the converted open_clip vocabulary."""
    from transformers import CLIPTokenizer

    folder = clip_tokenizer_dir(cache_dir)
    return CLIPTokenizer(
        vocab=str(folder / "vocab.json"),
        merges=str(folder / "merges.txt"),
        pad_token=pad_token,
        model_max_length=CLIP_CONTEXT_LENGTH,
    )
