#!/usr/bin/env python3
"""Golden outputs of the tiny formula-weight BERT (src/testing.rs) from transformers.

Rebuilds the tiny model from the same weight formula, runs a padded batch of fixed id
sequences through transformers' BertModel and stores ids, mask, last hidden states and mean
pooling in tests/golden/tiny.safetensors. Usage: python3 scripts/golden_tiny.py tests/golden
"""
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel

# Must match tiny_config() and tiny_vocab() in src/testing.rs.
CONFIG = dict(vocab_size=91, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=64, hidden_act="gelu", max_position_embeddings=64,
              type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0)
IDS = [
    [2, 57, 58, 59, 60, 61, 62, 63, 64, 65, 3],
    [2, 70, 71, 3],
    [2, 3],
    [2] + [5 + (7 * k) % 86 for k in range(40)] + [3],
]


M64 = (1 << 64) - 1


def mix(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def formula(name, n):
    seed = 0xCBF29CE484222325
    for b in name.encode():
        seed = ((seed ^ b) * 0x100000001B3) & M64
    if name.endswith("LayerNorm.weight"):
        scale, offset = 0.1, 1.0
    elif name.endswith(".bias"):
        scale, offset = 0.02, 0.0
    else:
        scale, offset = 0.2, 0.0
    vals = []
    for i in range(n):
        z = mix((seed + i * 0x9E3779B97F4A7C15) & M64)
        u = (z >> 11) / float(1 << 53) * 2.0 - 1.0
        vals.append(scale * u + offset)
    return torch.tensor(vals, dtype=torch.float32)


def main(out_dir):
    model = BertModel(BertConfig(**CONFIG, attn_implementation="eager"), add_pooling_layer=False).eval()
    state = model.state_dict()
    for name, t in state.items():
        if name.endswith("position_ids") or "buffer" in name or t.dtype != torch.float32:
            continue
        state[name] = formula(name, t.numel()).reshape(t.shape)
    model.load_state_dict(state)
    t = max(len(x) for x in IDS)
    ids = torch.tensor([x + [0] * (t - len(x)) for x in IDS], dtype=torch.int64)
    mask = torch.tensor([[1] * len(x) + [0] * (t - len(x)) for x in IDS], dtype=torch.int64)
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).float()
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    os.makedirs(out_dir, exist_ok=True)
    save_file({"ids": ids, "mask": mask, "hidden": hidden.contiguous(), "pooled": pooled.contiguous()},
              os.path.join(out_dir, "tiny.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
