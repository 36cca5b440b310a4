#!/usr/bin/env python3
"""Convert the official Wan2.1 VAE checkpoint (Wan2.1_VAE.pth, a pickled state_dict of WanVAE_ in
wan/modules/vae.py) to .safetensors with the official names unchanged, so the C code never unpickles anything.

    python dev/peer/convert_vae_pth.py Wan2.1-T2V-1.3B/Wan2.1_VAE.pth wan21_vae.safetensors
    ./test_tmd vae info --weights wan21_vae.safetensors

torch.load runs with weights_only=True (tensors only, no arbitrary code). Tensors are saved as they are (float32 in
the release); non-contiguous ones are made contiguous. The diffusers release (vae/diffusion_pytorch_model.safetensors)
needs no conversion.
"""
import sys

import torch
from safetensors.torch import save_file


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: convert_vae_pth.py Wan2.1_VAE.pth out.safetensors")
    sd = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        sys.exit(f"{sys.argv[1]}: not a plain state_dict (non-tensor entries: {bad[:3]})")
    save_file({k: v.contiguous() for k, v in sd.items()}, sys.argv[2])
    n = sum(v.numel() for v in sd.values())
    print(f"wrote {sys.argv[2]}: {len(sd)} tensors, {n} parameters")


if __name__ == "__main__":
    main()
