#!/usr/bin/env python3
"""Tiny random umT5 encoders and what transformers' UMT5EncoderModel gives for them, for cpu/umt5_tests.h.

  vectors/umt5_a/     config A: d_model 48, 3 heads of 16, d_ff 80, 2 layers, vocab 560 (= spm_nfkc_bf.model, so
                      the tokenizer's ids can be fed), F32, one model.safetensors (save_pretrained)
  vectors/umt5_b/     config B: d_model 40, 4 heads of 12 (inner 48 != d_model), d_ff 72, 3 layers, vocab 300,
                      weights rounded to bfloat16 and stored as BF16 in 2 shards + model.safetensors.index.json
  vectors/umt5_io.safetensors   per case <c>: ids_<c> (F64 holding ints), out32_<c> [L, d] from the stock fp32
                      model, out64_<c> [L, d] from a true-fp64 run; bucket: transformers' bucket of every relative
                      position -600..600 (32 buckets, max distance 128, bidirectional)
Cases: a_len1, a_len7, a_prompt (the ids lib/sentencepiece.h and sentencepiece give for a VBench-style prompt plus
</s>), b_len7, b_len500 (500 valid tokens padded to 512 with attention_mask, as Wan runs it; only the 500 valid rows
are stored).
"true fp64": model.double() is not fp64 throughout, because UMT5LayerNorm squares the input in float32; the fp64
run patches that one line (precision only). The stock fp32 model vs the fp64 run is printed.
Usage: python dev/peer/make_umt5_vectors.py --out dev/peer/vectors   (a few seconds on one core)
"""
import argparse, os, sys

import numpy as np
import torch
import transformers
from transformers import UMT5Config, UMT5EncoderModel
from transformers.models.umt5 import modeling_umt5
import safetensors
from safetensors.torch import save_file


def make(cfg_kw, seed, bf16):
    cfg = UMT5Config(**cfg_kw, feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                     relative_attention_max_distance=128, layer_norm_epsilon=1e-6, dropout_rate=0.0,
                     is_encoder_decoder=False, use_cache=False, tie_word_embeddings=False)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    m = UMT5EncoderModel(cfg).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "layer_norm" in name: v = 1 + 0.1 * torch.randn(p.shape, generator=g)
            elif "relative_attention_bias" in name: v = 0.5 * torch.randn(p.shape, generator=g)
            elif "shared" in name or "embed_tokens" in name: v = torch.randn(p.shape, generator=g)
            else: v = torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5
            if bf16: v = v.to(torch.bfloat16).float()
            p.copy_(v)
    return m


def fp64_norm_forward(self, h):   # UMT5LayerNorm.forward with the variance in the input's own precision
    var = h.pow(2).mean(-1, keepdim=True)
    return self.weight * (h * torch.rsqrt(var + self.variance_epsilon))


def run(m, ids, pad_to=None):
    L = len(ids)
    x = torch.tensor([ids + [0] * ((pad_to or L) - L)])
    mask = torch.tensor([[1] * L + [0] * ((pad_to or L) - L)])
    with torch.no_grad():
        o32 = m(input_ids=x, attention_mask=mask).last_hidden_state[0, :L].numpy().astype(np.float64)
        m64 = m.double()
        stock = modeling_umt5.UMT5LayerNorm.forward
        modeling_umt5.UMT5LayerNorm.forward = fp64_norm_forward
        o64 = m64(input_ids=x, attention_mask=mask).last_hidden_state[0, :L].numpy()
        modeling_umt5.UMT5LayerNorm.forward = stock
        m.float()
    return o32, o64


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="dev/peer/vectors")
    a = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    A = make(dict(vocab_size=560, d_model=48, d_kv=16, num_heads=3, d_ff=80, num_layers=2), 10, False)
    B = make(dict(vocab_size=300, d_model=40, d_kv=12, num_heads=4, d_ff=72, num_layers=3), 20, True)
    A.save_pretrained(os.path.join(a.out, "umt5_a"), safe_serialization=True)
    B.to(torch.bfloat16).save_pretrained(os.path.join(a.out, "umt5_b"), safe_serialization=True, max_shard_size="20KB")
    B.float()
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=os.path.join(a.out, "spm_nfkc_bf.model"))
    prompt = "A panda drinking coffee in a cafe in Paris, in Van Gogh style"
    rng = np.random.default_rng(3)
    cases = {"a_len1": (A, [1], None), "a_len7": (A, rng.integers(3, 560, 7).tolist(), None),
             "a_prompt": (A, sp.encode(prompt) + [sp.eos_id()], None),
             "b_len7": (B, rng.integers(3, 300, 7).tolist(), None), "b_len500": (B, rng.integers(3, 300, 500).tolist(), 512)}
    out = {}
    for c, (m, ids, pad) in cases.items():
        o32, o64 = run(m, ids, pad)
        out["ids_" + c] = torch.tensor(ids, dtype=torch.float64)
        out["out32_" + c] = torch.from_numpy(o32.astype(np.float32))
        out["out64_" + c] = torch.from_numpy(o64)
        print(f"  {c}: {len(ids)} tokens, fp32 vs fp64 max|d|/max|ref| = {np.abs(o32 - o64).max() / np.abs(o64).max():.2e}")
    att = A.encoder.block[0].layer[0].SelfAttention
    rel = torch.arange(-600, 601)
    out["bucket"] = att._relative_position_bucket(rel).to(torch.float64)
    out["prompt_utf8"] = torch.tensor(list(prompt.encode("utf-8")), dtype=torch.float64)
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(a.out, "umt5_io.safetensors"))
    vers = (f"python {sys.version.split()[0]}\ntorch {torch.__version__}\ntransformers {transformers.__version__}\n"
            f"safetensors {safetensors.__version__}\nnumpy {np.__version__}\nsentencepiece {spm.__version__}\n")
    with open(os.path.join(a.out, "umt5_versions.txt"), "w") as f: f.write(vers)
    print(vers, end="")
    for d in ("umt5_a", "umt5_b"): print(" ", d, sorted(os.listdir(os.path.join(a.out, d))))


if __name__ == "__main__":
    main()
