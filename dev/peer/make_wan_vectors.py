#!/usr/bin/env python3
"""Make committed test vectors for the C/CUDA Wan2.1 DiT from diffusers' WanTransformer3DModel.

What it makes (all in --out, default dev/peer/vectors):
  * a tiny random Wan2.1 T2V DiT (D=64, 2 heads of 32, ffn 96, text_dim 32, 2 layers, patch (1,2,2)),
    every parameter overwritten with seeded random values of sensible scale (no trivial 0 or 1), saved as
      wan_tiny_diffusers.safetensors   fp32, diffusers names (exactly model.state_dict())
      wan_tiny_official.safetensors    fp32, official Wan2.1 names (69 tensors = 15 + 2*27)
      wan_tiny_comfy_bf16/             bf16, official names prefixed "model.diffusion_model.", 2 shards + index
  * inputs: x [16,2,6,10] (C,T,H,W; grid 2x3x5 = 30 tokens), timestep 731.0, caption context [5,32]
    (zero-padded to 16 rows before the model, not masked, as the Wan pipelines do), cotangent g [16,2,6,10]
  * outputs: v_fp32 (stock diffusers, fp32), v_fp64 (diffusers run in float64 with the fp32 casts inside
    diffusers removed -- see "fp64 path" below), and fp64 gradients of sum(v * g) w.r.t. x, the unpadded
    context and every parameter (parameter gradients under official names).
  * manifest.txt, versions.txt.

fp64 path: `model.double()` alone is NOT fp64 end to end in diffusers (this script measures it and prints
the breakdown). diffusers keeps these in fp32 even after .double():
  - the sinusoidal timestep embedding (fp32 arange / exp / t*w in get_timestep_embedding),
  - the RoPE cos/sin tables (computed in fp64 but stored with .float()),
  - every `.float()` in WanTransformerBlock / the head: the residual stream is rounded to fp32 before each
    gated add, FP32LayerNorm (norm1, norm2, norm3, norm_out) runs in fp32, and temb is rounded by
    `temb.float()` before adding scale_shift_table.
The saved fp64 reference therefore runs diffusers' own module code with three precision-only patches
(Tensor.float() is the identity on float64 tensors, an fp64 sinusoid with the same formula, fp64 RoPE tables
with the same formula).  It is cross-checked against an independent fp64 re-implementation of the official
WanModel math written from dev notes (`ref_forward` below, which consumes the OFFICIAL names), forward and
all gradients.

All random inputs and weights are rounded to fp32, so the fp64 model / inputs are exact up-casts of the saved
fp32 values.

Run (CPU only, a few seconds):
    python dev/peer/make_wan_vectors.py --out dev/peer/vectors
Run with (also written to versions.txt): python 3.11, torch 2.15.0+cu132 (CPU), diffusers 0.42.1,
safetensors 0.8.0, numpy 2.4.6 (transformers 5.23.0, accelerate 1.15.0 installed, not used).
"""
import argparse
import contextlib
import json
import math
import os
import platform
import sys

import numpy as np
import torch
import torch.nn.functional as F

import diffusers
import safetensors
from safetensors.torch import save_file
from diffusers import WanTransformer3DModel
import diffusers.models.embeddings as dembed

SEED = 20250731
CFG = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=32, in_channels=16, out_channels=16,
    text_dim=32, freq_dim=256, ffn_dim=96, num_layers=2, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024, image_dim=None, added_kv_proj_dim=None,
)
X_SHAPE = (16, 2, 6, 10)      # C, T, Hl, Wl
TIMESTEP = 731.0
LT, TEXT_LEN = 5, 16
D = CFG["num_attention_heads"] * CFG["attention_head_dim"]
NL = CFG["num_layers"]
EPS = CFG["eps"]


# ----------------------------------------------------------------------------------------------------------
# name mapping diffusers -> official (diffusers' convert_wan_to_diffusers key map), written as explicit rules, checked below
# ----------------------------------------------------------------------------------------------------------
_TOP = {
    "patch_embedding.": "patch_embedding.",
    "condition_embedder.text_embedder.linear_1.": "text_embedding.0.",
    "condition_embedder.text_embedder.linear_2.": "text_embedding.2.",
    "condition_embedder.time_embedder.linear_1.": "time_embedding.0.",
    "condition_embedder.time_embedder.linear_2.": "time_embedding.2.",
    "condition_embedder.time_proj.": "time_projection.1.",
    "proj_out.": "head.head.",
}
_BLK = {
    "attn1.to_q.": "self_attn.q.", "attn1.to_k.": "self_attn.k.", "attn1.to_v.": "self_attn.v.",
    "attn1.to_out.0.": "self_attn.o.", "attn1.norm_q.": "self_attn.norm_q.", "attn1.norm_k.": "self_attn.norm_k.",
    "attn2.to_q.": "cross_attn.q.", "attn2.to_k.": "cross_attn.k.", "attn2.to_v.": "cross_attn.v.",
    "attn2.to_out.0.": "cross_attn.o.", "attn2.norm_q.": "cross_attn.norm_q.", "attn2.norm_k.": "cross_attn.norm_k.",
    "norm2.": "norm3.",                      # diffusers norm2 (cross-attn affine LN) == official norm3
    "ffn.net.0.proj.": "ffn.0.", "ffn.net.2.": "ffn.2.",
}


def diffusers_to_official(name):
    if name == "scale_shift_table":
        return "head.modulation"
    for a, b in _TOP.items():
        if name.startswith(a):
            return b + name[len(a):]
    if name.startswith("blocks."):
        _, n, rest = name.split(".", 2)
        if rest == "scale_shift_table":
            return f"blocks.{n}.modulation"
        for a, b in _BLK.items():
            if rest.startswith(a):
                return f"blocks.{n}.{b}{rest[len(a):]}"
    raise KeyError(f"no official name for diffusers tensor {name!r}")


def official_expected():
    """Official WanModel state_dict order and shapes, written from the official WanModel's module registration order and the official
    module structure (a module's own Parameters precede its children's in state_dict)."""
    Fd, Tdim, fq = CFG["ffn_dim"], CFG["text_dim"], CFG["freq_dim"]
    out = 16 * 1 * 2 * 2
    lst = [("patch_embedding.weight", (D, 16, 1, 2, 2)), ("patch_embedding.bias", (D,)),
           ("text_embedding.0.weight", (D, Tdim)), ("text_embedding.0.bias", (D,)),
           ("text_embedding.2.weight", (D, D)), ("text_embedding.2.bias", (D,)),
           ("time_embedding.0.weight", (D, fq)), ("time_embedding.0.bias", (D,)),
           ("time_embedding.2.weight", (D, D)), ("time_embedding.2.bias", (D,)),
           ("time_projection.1.weight", (6 * D, D)), ("time_projection.1.bias", (6 * D,))]
    for n in range(NL):
        b = f"blocks.{n}."
        lst.append((b + "modulation", (1, 6, D)))
        for a in ("self_attn", "cross_attn"):
            for p in "qkvo":
                lst += [(f"{b}{a}.{p}.weight", (D, D)), (f"{b}{a}.{p}.bias", (D,))]
            lst += [(f"{b}{a}.norm_q.weight", (D,)), (f"{b}{a}.norm_k.weight", (D,))]
            if a == "self_attn":
                lst += [(b + "norm3.weight", (D,)), (b + "norm3.bias", (D,))]
        lst += [(b + "ffn.0.weight", (Fd, D)), (b + "ffn.0.bias", (Fd,)),
                (b + "ffn.2.weight", (D, Fd)), (b + "ffn.2.bias", (D,))]
    lst += [("head.modulation", (1, 2, D)), ("head.head.weight", (out, D)), ("head.head.bias", (out,))]
    return lst


# ----------------------------------------------------------------------------------------------------------
# deterministic parameter fill
# ----------------------------------------------------------------------------------------------------------
def init_rule(name, shape):
    if name.endswith("scale_shift_table"):
        return "N(0,0.3)"
    if (".norm_q." in name or ".norm_k." in name or ".norm2." in name) and name.endswith(".weight"):
        return "1+N(0,0.1)"
    if name.endswith(".bias"):
        return "N(0,0.1)"
    if name.endswith(".weight") and len(shape) >= 2:
        return "N(0,1/sqrt(fan_in))"
    raise ValueError(f"no init rule for {name} {shape}")


def fill_params(model, gen):
    rules = {}
    with torch.no_grad():
        for name, p in model.state_dict(keep_vars=True).items():
            r = init_rule(name, tuple(p.shape))
            z = torch.randn(tuple(p.shape), generator=gen, dtype=torch.float64)
            if r == "N(0,0.3)":
                v = 0.3 * z
            elif r == "1+N(0,0.1)":
                v = 1.0 + 0.1 * z
            elif r == "N(0,0.1)":
                v = 0.1 * z
            else:
                v = z / math.sqrt(math.prod(p.shape[1:]))
            p.copy_(v.to(p.dtype))
            rules[name] = r
    return rules


# ----------------------------------------------------------------------------------------------------------
# precision patches that make diffusers' .double() path truly fp64
# ----------------------------------------------------------------------------------------------------------
def _timestep_embedding_fp64(timesteps, embedding_dim, flip_sin_to_cos=False, downscale_freq_shift=1,
                             scale=1, max_period=10000):
    # same formula as diffusers.get_timestep_embedding, evaluated in float64
    assert timesteps.ndim == 1 and embedding_dim % 2 == 0
    half = embedding_dim // 2
    k = torch.arange(half, dtype=torch.float64)
    w = torch.exp(-math.log(max_period) * k / (half - downscale_freq_shift))
    a = scale * timesteps.to(torch.float64)[:, None] * w[None, :]
    emb = torch.cat([torch.sin(a), torch.cos(a)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    return emb


def _rope_tables_fp64(rope):
    cos, sin = [], []
    for dim in (rope.t_dim, rope.h_dim, rope.w_dim):
        fr = 1.0 / (10000.0 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
        ang = torch.outer(torch.arange(rope.max_seq_len, dtype=torch.float64), fr)
        cos.append(ang.cos().repeat_interleave(2, dim=1))
        sin.append(ang.sin().repeat_interleave(2, dim=1))
    return torch.cat(cos, 1), torch.cat(sin, 1)


@contextlib.contextmanager
def fp64_patches(model, keep_float=True, sinusoid=True, rope=True):
    orig_float = torch.Tensor.float
    orig_te = dembed.get_timestep_embedding
    orig_cos, orig_sin = model.rope.freqs_cos, model.rope.freqs_sin
    if keep_float:
        def _float(self, *a, **k):
            return self if self.dtype == torch.float64 else orig_float(self, *a, **k)
        torch.Tensor.float = _float
    if sinusoid:
        dembed.get_timestep_embedding = _timestep_embedding_fp64
    if rope:
        model.rope.freqs_cos, model.rope.freqs_sin = _rope_tables_fp64(model.rope)
    try:
        yield
    finally:
        torch.Tensor.float = orig_float
        dembed.get_timestep_embedding = orig_te
        model.rope.freqs_cos, model.rope.freqs_sin = orig_cos, orig_sin


# ----------------------------------------------------------------------------------------------------------
# independent fp64 reference of the official WanModel math (from the official wan/modules/model.py), official names
# ----------------------------------------------------------------------------------------------------------
def ref_forward(P, x, t, ctx_pad):
    H, d = CFG["num_attention_heads"], CFG["attention_head_dim"]
    C, T, Hl, Wl = x.shape
    Fp, Hp, Wp = T, Hl // 2, Wl // 2
    L = Fp * Hp * Wp
    lin = lambda a, n: a @ P[n + ".weight"].T + P[n + ".bias"]

    def ln(a, w=None, b=None):
        mu = a.mean(-1, keepdim=True)
        var = ((a - mu) ** 2).mean(-1, keepdim=True)
        y = (a - mu) / torch.sqrt(var + EPS)
        return y * w + b if w is not None else y

    rms = lambda a, w: a / torch.sqrt((a * a).mean(-1, keepdim=True) + EPS) * w
    gelu = lambda a: 0.5 * a * (1 + torch.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a ** 3)))
    silu = lambda a: a * torch.sigmoid(a)

    # patch embedding: token (f,i,j), vector index c*4 + dh*2 + dw
    p = x.reshape(C, Fp, 1, Hp, 2, Wp, 2).permute(1, 3, 5, 0, 2, 4, 6).reshape(L, C * 4)
    h = p @ P["patch_embedding.weight"].reshape(D, C * 4).T + P["patch_embedding.bias"]
    # time: [cos | sin], w_k = 10000^(-k/128)
    half = CFG["freq_dim"] // 2
    wk = 10000.0 ** (-torch.arange(half, dtype=torch.float64) / half)
    s = torch.cat([torch.cos(t * wk), torch.sin(t * wk)])
    e = lin(silu(lin(s, "time_embedding.0")), "time_embedding.2")
    e0 = lin(silu(e), "time_projection.1").reshape(6, D)
    c = lin(gelu(lin(ctx_pad, "text_embedding.0")), "text_embedding.2")
    # rope angles: pairs split c-2(c//3), c//3, c//3 ; axis dims d-4(d//6), 2(d//6), 2(d//6)
    cp = d // 2
    splits = [cp - 2 * (cp // 3), cp // 3, cp // 3]
    dims = [d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6)]
    ff, ii, jj = torch.meshgrid(torch.arange(Fp), torch.arange(Hp), torch.arange(Wp), indexing="ij")
    pos = [ff.reshape(-1).double(), ii.reshape(-1).double(), jj.reshape(-1).double()]
    ang = torch.cat([torch.outer(pos[a], 10000.0 ** (-2 * torch.arange(splits[a], dtype=torch.float64) / dims[a]))
                     for a in range(3)], 1)                                  # [L, 32]
    cs, sn = torch.cos(ang), torch.sin(ang)

    def rope(q):                                                             # q [L, H, d]
        q0, q1 = q[..., 0::2], q[..., 1::2]
        return torch.stack([q0 * cs[:, None] - q1 * sn[:, None], q0 * sn[:, None] + q1 * cs[:, None]], -1).reshape(q.shape)

    def attn(q, k, v):                                                       # [Lq,H,d],[Lk,H,d]
        lg = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(d)
        return torch.einsum("hqk,khd->qhd", torch.softmax(lg, -1), v).reshape(q.shape[0], D)

    for n in range(NL):
        b = f"blocks.{n}."
        m = P[b + "modulation"][0] + e0
        y = ln(h) * (1 + m[1]) + m[0]
        q = rms(lin(y, b + "self_attn.q"), P[b + "self_attn.norm_q.weight"]).reshape(L, H, d)
        k = rms(lin(y, b + "self_attn.k"), P[b + "self_attn.norm_k.weight"]).reshape(L, H, d)
        v = lin(y, b + "self_attn.v").reshape(L, H, d)
        h = h + lin(attn(rope(q), rope(k), v), b + "self_attn.o") * m[2]
        y = ln(h, P[b + "norm3.weight"], P[b + "norm3.bias"])
        q = rms(lin(y, b + "cross_attn.q"), P[b + "cross_attn.norm_q.weight"]).reshape(L, H, d)
        k = rms(lin(c, b + "cross_attn.k"), P[b + "cross_attn.norm_k.weight"]).reshape(-1, H, d)
        v = lin(c, b + "cross_attn.v").reshape(-1, H, d)
        h = h + lin(attn(q, k, v), b + "cross_attn.o")
        y = ln(h) * (1 + m[4]) + m[3]
        h = h + lin(gelu(lin(y, b + "ffn.0")), b + "ffn.2") * m[5]
    hm = P["head.modulation"][0] + e
    y = lin(ln(h) * (1 + hm[1]) + hm[0], "head.head")                       # [L, 64], index (dh*2+dw)*16 + c
    return y.reshape(Fp, Hp, Wp, 1, 2, 2, C).permute(6, 0, 3, 1, 4, 2, 5).reshape(C, T, Hl, Wl)


# ----------------------------------------------------------------------------------------------------------
def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def run_model(model, x, t, ctx5, dtype):
    ctx_pad = torch.cat([ctx5, torch.zeros(TEXT_LEN - LT, ctx5.shape[1], dtype=dtype)])[None]
    return model(hidden_states=x[None], timestep=torch.tensor([t], dtype=dtype),
                 encoder_hidden_states=ctx_pad, return_dict=False)[0][0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="dev/peer/vectors")
    args = ap.parse_args()
    out = args.out
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    versions = {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
                "safetensors": safetensors.__version__, "numpy": np.__version__}
    for k, v in versions.items():
        print(f"{k} {v}")

    # ---------------- model + weights ----------------
    torch.manual_seed(0)
    model = WanTransformer3DModel(**CFG).eval()
    gen = torch.Generator().manual_seed(SEED)
    rules = fill_params(model, gen)
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    assert all(v.dtype == torch.float32 for v in sd.values())
    names_official = {k: diffusers_to_official(k) for k in sd}
    exp = official_expected()
    assert len(sd) == 15 + NL * 27 == len(exp) == 69, len(sd)
    assert len(set(names_official.values())) == len(sd), "mapping is not injective"
    assert set(names_official.values()) == {n for n, _ in exp}, "mapped names != official names"
    for n, shp in exp:
        dn = [k for k, v in names_official.items() if v == n][0]
        assert tuple(sd[dn].shape) == shp, (n, dn, sd[dn].shape, shp)
    off2dif = {v: k for k, v in names_official.items()}
    official_order = [n for n, _ in exp]
    sd_off = {n: sd[off2dif[n]] for n in official_order}

    print("\n# diffusers state_dict order -> official name, shape, init")
    for k, v in sd.items():
        print(f"  {k:55s} -> {names_official[k]:36s} {list(v.shape)} {rules[k]}")
    print("\n# official order (WanModel.state_dict())")
    for n in official_order:
        print(f"  {n:36s} {list(sd_off[n].shape)}")

    # ---------------- inputs (rounded to fp32) ----------------
    gi = torch.Generator().manual_seed(SEED + 1)
    x32 = torch.randn(X_SHAPE, generator=gi, dtype=torch.float64).float()
    ctx32 = torch.randn((LT, CFG["text_dim"]), generator=gi, dtype=torch.float64).float()
    g32 = torch.randn(X_SHAPE, generator=gi, dtype=torch.float64).float()

    # ---------------- fp32 forward (stock diffusers) ----------------
    with torch.no_grad():
        v32 = run_model(model, x32, TIMESTEP, ctx32, torch.float32)
    assert v32.dtype == torch.float32 and tuple(v32.shape) == X_SHAPE

    # ---------------- fp64 ----------------
    model.double()
    x64, ctx64, g64 = x32.double(), ctx32.double(), g32.double()
    with torch.no_grad():
        v64_stock = run_model(model, x64, TIMESTEP, ctx64, torch.float64)     # plain model.double()
        # error of each fp32 source on its own: patch all the others
        parts = {}
        srcs = ["keep_float", "sinusoid", "rope"]
        for s in srcs:
            with fp64_patches(model, **{k: (k != s) for k in srcs}):
                parts[s] = run_model(model, x64, TIMESTEP, ctx64, torch.float64)

    ctx_leaf = ctx64.clone().requires_grad_(True)
    x_leaf = x64.clone().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    with fp64_patches(model):
        v64 = run_model(model, x_leaf, TIMESTEP, ctx_leaf, torch.float64)
        (v64 * g64).sum().backward()
    assert v64.dtype == torch.float64
    grad_x = x_leaf.grad.detach().clone()
    grad_ctx = ctx_leaf.grad.detach().clone()
    grads_off = {names_official[k]: p.grad.detach().clone().contiguous() for k, p in model.named_parameters()}
    assert set(grads_off) == set(official_order) and all(g.dtype == torch.float64 for g in grads_off.values())
    grads_off = {n: grads_off[n] for n in official_order}
    v64 = v64.detach()

    # ---------------- independent reference check (official names, fp64) ----------------
    P = {n: sd_off[n].double().clone().requires_grad_(True) for n in official_order}
    xr = x64.clone().requires_grad_(True)
    cr = ctx64.clone().requires_grad_(True)
    ctx_pad = torch.cat([cr, torch.zeros(TEXT_LEN - LT, CFG["text_dim"], dtype=torch.float64)])
    vr = ref_forward(P, xr, torch.tensor(TIMESTEP, dtype=torch.float64), ctx_pad)
    (vr * g64).sum().backward()
    print("\n# checks")
    r_ref = rel(v64, vr.detach())
    print(f"fp64 diffusers(patched) vs independent official-math ref: fwd max|d|/max|v| = {r_ref:.3e}")
    worst = max([rel(grads_off[n], P[n].grad) for n in official_order] + [rel(grad_x, xr.grad), rel(grad_ctx, cr.grad)])
    print(f"  gradients (x, ctx, all 69 params) worst max|d|/max|g| = {worst:.3e}")
    assert r_ref < 1e-12 and worst < 1e-10
    r32 = rel(v32, v64)
    print(f"v_fp32 vs v_fp64: max|d| = {np.abs(v32.double().numpy() - v64.numpy()).max():.3e}, "
          f"max|d|/max|v| = {r32:.3e}, max|v| = {v64.abs().max().item():.4f}, rms(v) = {v64.pow(2).mean().sqrt().item():.4f}")
    print(f"stock model.double() vs true fp64: max|d|/max|v| = {rel(v64_stock, v64):.3e}  (so stock .double() is ~fp32)")
    for s in srcs:
        print(f"  only '{s}' left in fp32: max|d|/max|v| = {rel(parts[s], v64):.3e}")
    gnorm = {n: g.abs().max().item() for n, g in grads_off.items()}
    nz = [n for n, v in gnorm.items() if v == 0.0]
    assert not nz, f"zero gradients: {nz}"
    print(f"smallest max|grad| over params: {min(gnorm.values()):.3e} ({min(gnorm, key=gnorm.get)})")

    # ---------------- write files ----------------
    meta = {"format": "pt"}   # one key only: safetensors orders __metadata__ keys randomly (byte-reproducibility)
    save_file(sd, os.path.join(out, "wan_tiny_diffusers.safetensors"), metadata=meta)
    save_file(sd_off, os.path.join(out, "wan_tiny_official.safetensors"), metadata=meta)
    cdir = os.path.join(out, "wan_tiny_comfy_bf16")
    os.makedirs(cdir, exist_ok=True)
    pre = "model.diffusion_model."
    bf = {pre + n: sd_off[n].to(torch.bfloat16).contiguous() for n in official_order}
    total = sum(t.numel() * 2 for t in bf.values())
    shard1, acc = [], 0
    for n in bf:                                       # first shard: tensors in official order until half the bytes
        if acc >= total // 2:
            break
        shard1.append(n)
        acc += bf[n].numel() * 2
    fn = ["diffusion_pytorch_model-00001-of-00002.safetensors", "diffusion_pytorch_model-00002-of-00002.safetensors"]
    s1 = {n: bf[n] for n in shard1}
    s2 = {n: bf[n] for n in bf if n not in s1}
    save_file(s1, os.path.join(cdir, fn[0]), metadata={"format": "pt"})
    save_file(s2, os.path.join(cdir, fn[1]), metadata={"format": "pt"})
    wm = {n: (fn[0] if n in s1 else fn[1]) for n in bf}
    with open(os.path.join(cdir, "diffusion_pytorch_model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": wm}, f, indent=2)
        f.write("\n")

    npys = {
        "x.npy": (x32.numpy(), "latent input [C,T,H,W] (fp32; fp64 run uses the exact up-cast)"),
        "context.npy": (ctx32.numpy(), f"caption context, true length {LT} rows x text_dim; model sees it zero-padded to {TEXT_LEN} rows, unmasked"),
        "g.npy": (g32.numpy(), "cotangent for sum(v*g) (fp32; exact up-cast used in fp64)"),
        "v_fp32.npy": (v32.numpy(), "stock diffusers forward in float32"),
        "v_fp64.npy": (v64.float().numpy(), "true-fp64 forward (patched diffusers), rounded to fp32"),
    }
    # float64 references go into one safetensors file (F64), which the C loader reads without a float64 .npy path
    ref64 = {"v": v64.contiguous(), "grad_x": grad_x.contiguous(), "grad_context": grad_ctx.contiguous()}
    save_file(ref64, os.path.join(out, "reference_f64.safetensors"), metadata={"format": "pt"})
    for name, (arr, _) in npys.items():
        np.save(os.path.join(out, name), np.ascontiguousarray(arr))
    with open(os.path.join(out, "timestep.txt"), "w") as f:
        f.write(f"{TIMESTEP!r}\n")
    save_file(grads_off, os.path.join(out, "grads_official.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out, "versions.txt"), "w") as f:
        for k, v in versions.items():
            f.write(f"{k} {v}\n")

    # ---------------- manifest ----------------
    L = []
    L.append("# Wan2.1 tiny DiT test vectors, made by dev/peer/make_wan_vectors.py (see dev/peer/README.md)")
    L.append(f"# diffusers WanTransformer3DModel config: {json.dumps(CFG)}")
    L.append(f"# D={D} heads={CFG['num_attention_heads']} head_dim={CFG['attention_head_dim']} grid (F',H',W')="
             f"({X_SHAPE[1]},{X_SHAPE[2]//2},{X_SHAPE[3]//2}) L={X_SHAPE[1]*X_SHAPE[2]*X_SHAPE[3]//4} tokens, "
             f"text_len={TEXT_LEN} (Lt={LT} real rows, rest zeros, no mask), timestep={TIMESTEP!r}, seed={SEED}")
    L.append("# v = velocity output [C,T,H,W]; loss for gradients = sum(v * g); all .npy are C order")
    L.append(f"# check: |v_fp32 - v_fp64|max / |v_fp64|max = {r32:.3e}; patched-diffusers fp64 vs independent ref = {r_ref:.1e}")
    L.append("# name | shape | dtype | note")
    for name, (arr, note) in npys.items():
        L.append(f"{name} | {list(arr.shape)} | {arr.dtype} | {note}")
    L.append(f"timestep.txt | scalar | text | {TIMESTEP!r}, fed to diffusers as a float tensor [1]")
    L.append(f"wan_tiny_diffusers.safetensors | {len(sd)} tensors | F32 | exactly model.state_dict(), diffusers names")
    L.append(f"wan_tiny_official.safetensors | {len(sd_off)} tensors | F32 | same values, official Wan2.1 names")
    L.append(f"wan_tiny_comfy_bf16/{fn[0]} | {len(s1)} tensors | BF16 | prefix '{pre}', official names, RNE-rounded from F32")
    L.append(f"wan_tiny_comfy_bf16/{fn[1]} | {len(s2)} tensors | BF16 | second shard")
    L.append(f"wan_tiny_comfy_bf16/diffusion_pytorch_model.safetensors.index.json | {len(wm)} entries | json | weight_map name->shard, metadata.total_size={total}")
    L.append(f"reference_f64.safetensors | v {list(v64.shape)}, grad_x {list(grad_x.shape)}, grad_context {list(grad_ctx.shape)} | F64 | "
             f"true-fp64 forward, d sum(v*g)/d x, d sum(v*g)/d context (the {LT} real rows only)")
    L.append(f"grads_official.safetensors | {len(grads_off)} tensors | F64 | d sum(v*g) / d param (true fp64), official names")
    L.append("versions.txt | - | text | package versions used")
    L.append("")
    L.append("# tensors: official name | diffusers name | shape | init | bf16 shard")
    for n in official_order:
        L.append(f"{n} | {off2dif[n]} | {list(sd_off[n].shape)} | {rules[off2dif[n]]} | {1 if pre + n in s1 else 2}")
    with open(os.path.join(out, "manifest.txt"), "w") as f:
        f.write("\n".join(L) + "\n")

    tot = 0
    for root, _, files in os.walk(out):
        for fname in files:
            os.chmod(os.path.join(root, fname), 0o644)      # safetensors writes 0600
            tot += os.path.getsize(os.path.join(root, fname))
    print(f"\nwrote {out}: {tot} bytes total")


if __name__ == "__main__":
    sys.exit(main())
