#!/usr/bin/env python3
"""Builds src/normalize/words.txt: the most frequent lowercase English words of the benign
English rows of the training data, one per line, most frequent first. The normalizer uses it to
judge whether a decoded candidate reads like English and to split run-together words.

Usage: scripts/gen_wordlist.py TRAIN.jsonl [N] > src/normalize/words.txt
"""
import collections
import json
import re
import sys

path = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 12000
counts = collections.Counter()
word = re.compile(r"[a-z]+")
with open(path, encoding="utf-8") as f:
    for line in f:
        row = json.loads(line)
        if row.get("label") != "benign" or row.get("lang") != "en":
            continue
        counts.update(word.findall(row["text"].lower()))
# Single letters other than "a" and "i" are noise for segmentation.
keep = [w for w, c in counts.most_common() if c >= 3 and (len(w) > 1 or w in ("a", "i"))]
sys.stdout.write("\n".join(keep[:n]) + "\n")
