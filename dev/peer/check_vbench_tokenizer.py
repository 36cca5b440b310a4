#!/usr/bin/env python3
"""By-hand check (not part of `make test`): every prompt of a VBench prompt list through lib/sentencepiece.h
(`./test_tmd encode --ids-only`) and through the sentencepiece package, for the committed test models and for a
larger model trained here on the prompt list itself (so that most words are whole pieces, as with umT5's
vocabulary). Both the raw ids (`--raw`) and Wan's pipeline (cleaning, </s>, 512) are compared; it also reports
which prompts ftfy.fix_text (Wan's first cleaning step, not reproduced in C) would change.
Usage: python dev/peer/check_vbench_tokenizer.py --prompts VBench/prompts/all_dimension.txt [--work /tmp/vb]
"""
import argparse, html, os, subprocess

import regex
import sentencepiece as spm

ap = argparse.ArgumentParser()
ap.add_argument("--prompts", required=True)
ap.add_argument("--work", default="/tmp/vb")
ap.add_argument("--vectors", default="dev/peer/vectors")
a = ap.parse_args()
os.makedirs(a.work, exist_ok=True)
prompts = open(a.prompts, encoding="utf-8").read().split("\n")
if prompts and prompts[-1] == "": prompts.pop()
big = os.path.join(a.work, "vbench_unigram")
spm.SentencePieceTrainer.train(input=a.prompts, model_prefix=big, model_type="unigram", vocab_size=2000, hard_vocab_limit=False,
                               byte_fallback=True, num_threads=1, minloglevel=2, unk_id=2, eos_id=1, bos_id=-1, pad_id=0)
models = [os.path.join(a.vectors, f"spm_{n}.model") for n in ("nfkc_bf", "nfkc", "identity_bf", "identity")] + [big + ".model"]


def clean(t):
    t = html.unescape(html.unescape(t)).strip()
    return regex.sub(r"\s+", " ", t).strip()


for mp in models:
    sp = spm.SentencePieceProcessor(model_file=mp)
    for raw in (True, False):
        cmd = ["./test_tmd", "encode", "--tokenizer", mp, "--prompts", a.prompts, "--ids-only"] + (["--raw"] if raw else [])
        got = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split("\n")[: len(prompts)]
        want = [sp.encode(p) if raw else (sp.encode(clean(p))[:511] + [sp.eos_id()]) for p in prompts]
        bad = [i for i, (g, w) in enumerate(zip(got, want)) if g.split() != [str(x) for x in w]]
        n_ids = sum(len(w) for w in want)
        unk = sum(1 for w in want if any(sp.id_to_piece(x).startswith("<0x") or x == sp.unk_id() for x in w))
        print(f"{os.path.basename(mp):24s} {'raw' if raw else 'wan'}: {len(prompts)} prompts, {n_ids} ids, {unk} prompts with <unk>/bytes: {len(bad)} mismatched {bad[:5]}")
try:
    import ftfy
    ch = [p for p in prompts if ftfy.fix_text(p) != p]
    print(f"ftfy {ftfy.__version__} would change {len(ch)} of {len(prompts)} prompts", ch[:3])
except ImportError:
    print("ftfy not installed: not checked")
