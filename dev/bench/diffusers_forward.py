#!/usr/bin/env python3
"""dev/bench/diffusers_forward.py: the reference timing for dev/gpu_check.sh: one forward pass of diffusers'
WanTransformer3DModel (the Wan2.1 T2V 1.3B config, random weights, bf16, PyTorch SDPA attention, eager mode) on the
same input shape as `./sample_tmd --preset wan2.1-t2v-1.3b --bench N` (batch 1, latent [16, 21, 60, 104] = 32,760
tokens, 512 text rows). Prints one line: "diffusers eager forward: median S s over N passes".
Installs torch and diffusers from PyPI into a venv next to this script when they are missing (needs the network)."""
import os, subprocess, sys, venv

HERE = os.path.dirname(os.path.abspath(__file__))

def ensure_env():
    try:
        import torch, diffusers  # noqa: F401
        return sys.executable
    except ImportError:
        pass
    env = os.path.join(HERE, ".venv")
    py = os.path.join(env, "bin", "python")
    if not os.path.exists(py):
        venv.create(env, with_pip=True)
    subprocess.check_call([py, "-m", "pip", "install", "-q", "torch", "diffusers", "transformers", "accelerate"])
    return py

def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    py = ensure_env()
    if py != sys.executable:
        os.execv(py, [py, __file__] + sys.argv[1:])
    import torch
    from diffusers import WanTransformer3DModel
    torch.manual_seed(0)
    # Wan2.1 T2V 1.3B (the official config.json of Wan-AI/Wan2.1-T2V-1.3B-Diffusers)
    model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                                  out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30,
                                  cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
    model = model.to("cuda", torch.bfloat16).eval()
    x = torch.randn(1, 16, 21, 60, 104, device="cuda", dtype=torch.bfloat16)
    ctx = torch.randn(1, 512, 4096, device="cuda", dtype=torch.bfloat16)
    t = torch.tensor([500], device="cuda")
    times = []
    with torch.no_grad():
        for i in range(reps + 2):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            model(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)
            b.record(); torch.cuda.synchronize()
            if i >= 2:
                times.append(a.elapsed_time(b) / 1e3)
    times.sort()
    print(f"diffusers eager forward: median {times[len(times) // 2]:.4f} s over {reps} passes "
          f"(torch {torch.__version__}, {torch.cuda.get_device_name()})")

if __name__ == "__main__":
    main()
