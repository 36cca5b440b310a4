#!/usr/bin/env python3
"""Make committed test vectors for the C Wan2.1 VAE (cpu/vae_cpu.h) from diffusers' AutoencoderKLWan.

For three small random configs (all Wan2.1-style, is_residual=False, attn_scales=[]):
  vae_a  base_dim 4, z_dim 16, dim_mult [1,2,4,4], 2 res blocks, temperal_downsample [False,True,True]
         (the Wan2.1 structure, narrow), video [3,13,24,40] -> latent [16,4,3,5]
  vae_b  base_dim 4, z_dim 4,  dim_mult [1,2,2],   1 res block,  temperal_downsample [False,False] (no temporal
         down-sampling), video [3,9,20,12] -> latent [4,9,5,3]
  vae_c  base_dim 4, z_dim 4,  dim_mult [1,2,2],   1 res block,  temperal_downsample [True,False] (the temporal
         down-sampling in the first stage), video [3,9,16,24] -> latent [4,5,4,6]
it writes, under --out (default dev/peer/vectors), with prefix vae_<x>_:
  diffusers.safetensors   fp32, exactly model.state_dict() (diffusers names)
  official.safetensors    (vae_a only) fp32, the same values under the official Wan2.1 names (wan/modules/vae.py)
  video.npy, latent.npy   inputs: video in [-1, 1] [3,T,H,W]; latent N(0,1) [z,T',h,w]
  enc_T<n>.npy            diffusers float32 encode(video[:, :n]).latent_dist.mode() (the posterior mean), n = every
                          frame count 1+4k up to T
  dec_T<n>.npy            diffusers float32 decode(latent[:, :n]).sample, n = 1 .. T'
  f64.safetensors         the same model in true float64 (see below): enc (all T frames) and dec (all T' frames)
plus vae_wan21_shapes.txt (name, diffusers name and shape of every tensor of the default AutoencoderKLWan, the real
Wan2.1 VAE) and vae_manifest.txt / vae_versions.txt.

Weights: conv weights N(0, 1/fan_in) scaled, biases N(0, 0.1), every RMS norm gamma 1 + N(0, 0.1) (no norm is
trivially one), all rounded to fp32 so the fp64 model is an exact up-cast.

float64 path: model.double() is not float64 end to end: WanUpsample.forward rounds its input with x.float() before
the nearest up-sampling and casts back. The fp64 run replaces it by the same up-sampling without the cast (a
nearest up-sampling only copies values, so nothing else changes). No other fp32 cast is on the path for float64
inputs (WanRMS_norm casts only fp16/bf16).

The official names are made here by a mapping written from the official module tree (wan/modules/vae.py:
Encoder3d.downsamples / middle / head, Decoder3d.upsamples flat, WanVAE_.conv1 / conv2) and checked against
diffusers' own convert_wan_vae_to_diffusers for vae_a (which has the Wan2.1 block structure that function assumes).

Run (CPU, about a minute, single-threaded): python dev/peer/make_vae_vectors.py --out dev/peer/vectors
Made with python 3.11.7, torch 2.15.0+cu132 (CPU), diffusers 0.42.1, safetensors 0.8.0, numpy 2.4.6.
"""
import argparse
import json
import os
import platform
import sys

import numpy as np
import torch
import torch.nn.functional as F

import diffusers
import safetensors
from safetensors.torch import save_file
from diffusers import AutoencoderKLWan
import diffusers.models.autoencoders.autoencoder_kl_wan as akw

SEED = 20251201
CONFIGS = {
    "a": dict(cfg=dict(base_dim=4, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, temperal_downsample=[False, True, True]),
              video=(13, 24, 40), latent_frames=4),
    "b": dict(cfg=dict(base_dim=4, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1, temperal_downsample=[False, False]),
              video=(9, 20, 12), latent_frames=3),
    "c": dict(cfg=dict(base_dim=4, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1, temperal_downsample=[True, False]),
              video=(9, 16, 24), latent_frames=3),
}


def official_name(name, nrb):
    """diffusers AutoencoderKLWan name -> official WanVAE_ name (wan/modules/vae.py module tree)."""
    res = {"norm1.gamma": "residual.0.gamma", "conv1.": "residual.2.", "norm2.gamma": "residual.3.gamma",
           "conv2.": "residual.6.", "conv_shortcut.": "shortcut."}

    def resblock(rest):
        for k, v in res.items():
            if rest.startswith(k):
                return v + rest[len(k):]
        raise ValueError(rest)

    p = name.split(".")
    if name.startswith("quant_conv."):
        return "conv1." + p[-1]
    if name.startswith("post_quant_conv."):
        return "conv2." + p[-1]
    side = p[0]
    if p[1] == "conv_in":
        return f"{side}.conv1.{p[2]}"
    if p[1] == "norm_out":
        return f"{side}.head.0.gamma"
    if p[1] == "conv_out":
        return f"{side}.head.2.{p[2]}"
    if p[1] == "mid_block":
        if p[2] == "resnets":
            return f"{side}.middle.{0 if p[3] == '0' else 2}." + resblock(".".join(p[4:]))
        return f"{side}.middle.1." + ".".join(p[4:])
    if p[1] == "down_blocks":
        rest = ".".join(p[3:])
        if rest.startswith("resample") or rest.startswith("time_conv"):
            return f"encoder.downsamples.{p[2]}.{rest}"
        return f"encoder.downsamples.{p[2]}." + resblock(rest)
    if p[1] == "up_blocks":
        i = int(p[2])
        if p[3] == "resnets":
            return f"decoder.upsamples.{i * (nrb + 2) + int(p[4])}." + resblock(".".join(p[5:]))
        assert p[3] == "upsamplers" and p[4] == "0"
        return f"decoder.upsamples.{i * (nrb + 2) + nrb + 1}." + ".".join(p[5:])
    raise ValueError(name)


def official_order(name):
    """sort key: the official module order (encoder, conv1, conv2, decoder; numbered children in numeric order)"""
    top = {"encoder": 0, "conv1": 1, "conv2": 2, "decoder": 3}
    key = [top[name.split(".")[0]]]
    for part in name.split(".")[1:]:
        key.append((0, int(part), "") if part.isdigit() else (1, 0, part))
    return key


def randomize(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                v = 1 + 0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float64)
            elif name.endswith("bias"):
                v = 0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float64)
            else:
                fan_in = p[0].numel()
                v = torch.randn(p.shape, generator=gen, dtype=torch.float64) / fan_in ** 0.5
            if name == "decoder.conv_out.weight":
                v = v * 0.8  # keep most decoded values inside the clamp to [-1, 1] (a few percent reach it)
            p.copy_(v.float())


def upsample_no_cast(self, x):
    return F.interpolate(x, scale_factor=self.scale_factor, mode=self.mode)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="dev/peer/vectors")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    versions = (f"python {platform.python_version()}, torch {torch.__version__}, diffusers {diffusers.__version__}, "
                f"safetensors {safetensors.__version__}, numpy {np.__version__}")
    print(versions)
    manifest = ["# Wan2.1 VAE test vectors, made by dev/peer/make_vae_vectors.py (see dev/peer/README.md)",
                f"# {versions}", "# name | shape | note"]

    def save_npy(name, t, note):
        a = t.detach().to(torch.float32).contiguous().numpy()
        np.save(os.path.join(args.out, name), a)
        manifest.append(f"{name} | {list(a.shape)} | {note}")

    # the real Wan2.1 VAE's tensors, for the C layout check
    real = AutoencoderKLWan()
    sd = real.state_dict()
    lines = [f"{official_name(k, 2)} {k} {list(v.shape)}" for k, v in sd.items()]
    with open(os.path.join(args.out, "vae_wan21_shapes.txt"), "w") as f:
        f.write(f"# AutoencoderKLWan() defaults (the Wan2.1 VAE): {len(sd)} tensors, "
                f"{sum(v.numel() for v in sd.values())} parameters; official name, diffusers name, shape\n")
        f.write("\n".join(lines) + "\n")
    manifest.append(f"vae_wan21_shapes.txt | {len(sd)} lines | official name, diffusers name, shape of every tensor of AutoencoderKLWan()")
    print(f"Wan2.1 VAE: {len(sd)} tensors, {sum(v.numel() for v in sd.values())} parameters")
    # the official-name mapping agrees with diffusers' own converter on the real structure
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers
    official = {official_name(k, 2): v for k, v in sd.items()}
    back = convert_wan_vae_to_diffusers(official)
    assert set(back.keys()) == set(sd.keys()), "official-name mapping disagrees with convert_wan_vae_to_diffusers"
    assert all(back[k] is official[official_name(k, 2)] for k in sd), "mapping is not the converter's inverse"
    print("official names: inverse of diffusers' convert_wan_vae_to_diffusers on the Wan2.1 structure: ok")
    del real, sd, official, back

    gen = torch.Generator().manual_seed(SEED)
    for tag, spec in CONFIGS.items():
        cfg = spec["cfg"]
        model = AutoencoderKLWan(**cfg, attn_scales=[], dropout=0.0).eval()
        randomize(model, gen)
        sd = {k: v.contiguous() for k, v in model.state_dict().items()}
        meta = {"config": json.dumps(cfg)}
        save_file(sd, os.path.join(args.out, f"vae_{tag}_diffusers.safetensors"), metadata=meta)
        manifest.append(f"vae_{tag}_diffusers.safetensors | {len(sd)} tensors F32 | AutoencoderKLWan({json.dumps(cfg)}) state_dict")
        if tag == "a":  # one set under official names (in the official module order) keeps the vectors small
            off = {}
            for k in sorted(sd, key=lambda k: official_order(official_name(k, cfg["num_res_blocks"]))):
                off[official_name(k, cfg["num_res_blocks"])] = sd[k]
            assert len(off) == len(sd)
            save_file(off, os.path.join(args.out, f"vae_{tag}_official.safetensors"), metadata=meta)
            manifest.append(f"vae_{tag}_official.safetensors | {len(sd)} tensors F32 | the same under official names")
        T, H, W = spec["video"]
        video = (torch.rand((1, 3, T, H, W), generator=gen, dtype=torch.float64) * 2 - 1).float()
        s = 2 ** (len(cfg["dim_mult"]) - 1)
        Tl = spec["latent_frames"]
        latent = torch.randn((1, cfg["z_dim"], Tl, H // s, W // s), generator=gen, dtype=torch.float64).float()
        save_npy(f"vae_{tag}_video.npy", video[0], "video [3,T,H,W] uniform in [-1,1]")
        save_npy(f"vae_{tag}_latent.npy", latent[0], "latent [z,T',h,w] N(0,1)")
        with torch.no_grad():
            for n in range(1, T + 1, 4):
                mu = model.encode(video[:, :, :n]).latent_dist.mode()
                save_npy(f"vae_{tag}_enc_T{n}.npy", mu[0], f"fp32 encode of the first {n} frames (posterior mean)")
            for n in range(1, Tl + 1):
                x = model.decode(latent[:, :, :n]).sample
                clamped = (x.abs() >= 1).float().mean().item()
                save_npy(f"vae_{tag}_dec_T{n}.npy", x[0], f"fp32 decode of the first {n} latent frames ({100 * clamped:.1f}% clamped)")
            model64 = model.double()
            orig = akw.WanUpsample.forward
            akw.WanUpsample.forward = upsample_no_cast
            try:
                mu64 = model64.encode(video.double()).latent_dist.mode()
                x64 = model64.decode(latent.double()).sample
            finally:
                akw.WanUpsample.forward = orig
            mu32 = model.float().encode(video).latent_dist.mode()
            x32 = model.decode(latent).sample
            e = ((mu32.double() - mu64).abs().max() / mu64.abs().max()).item()
            d = ((x32.double() - x64).abs().max() / x64.abs().max()).item()
            print(f"vae_{tag}: fp32 vs fp64 encode rel {e:.3e}, decode rel {d:.3e}; video {list(video.shape[1:])}, "
                  f"latent {list(mu64.shape[1:])}, decoded {list(x64.shape[1:])}")
            manifest.append(f"# vae_{tag}: |fp32 - fp64|max / |fp64|max: encode {e:.3e}, decode {d:.3e}")
        save_file({"enc": mu64[0].contiguous(), "dec": x64[0].contiguous()}, os.path.join(args.out, f"vae_{tag}_f64.safetensors"))
        manifest.append(f"vae_{tag}_f64.safetensors | enc {list(mu64.shape[1:])}, dec {list(x64.shape[1:])} F64 | the same model in true float64, whole video and whole latent")
    with open(os.path.join(args.out, "vae_manifest.txt"), "w") as f:
        f.write("\n".join(manifest) + "\n")
    with open(os.path.join(args.out, "vae_versions.txt"), "w") as f:
        f.write(versions + "\n")


if __name__ == "__main__":
    main()
