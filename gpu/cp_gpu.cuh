// gpu/cp_gpu.cuh: context parallelism on the device (lib/cp.h's layouts and the reasons for them): the group of ranks
// that shares each sample, the permutations around the all-to-all, and the per-token row copies. gpu/wan_gpu.cuh runs
// the DiT on a rank's tokens with these (WanGpuActOpts.cp).
//   cp_gpu_seq_to_heads   [B·Lr, H·d] (this rank's tokens, every head) -> [B, L, Hk·d] (every token, this rank's heads)
//   cp_gpu_heads_to_seq   the inverse; the backward of each is the other (an all-to-all is a permutation of the group's
//                         elements, so its adjoint is the reverse all-to-all)
// Both move bits only: the values are the serial ones, in another place.
#pragma once
#include "comm.cuh"
#include "../lib/cp.h"
#include "../kernels/precision.cuh"
#include "../kernels/patchify.cuh"

// out[j][i][c] = in[i][j][c], i < n1, j < n2, c < chunk (lib/cp.h cp_transpose12, in elements)
template <typename T> __global__ void cp_transpose12_kernel(T* out, const T* in, size_t n1, size_t n2, size_t chunk) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n1 * n2 * chunk) return;
    size_t c = idx % chunk, t = idx / chunk, i = t % n1, j = t / n1;
    out[idx] = in[(i * n2 + j) * chunk + c];
}
template <typename T>
static void cp_transpose12_gpu(T* out, const T* in, size_t n1, size_t n2, size_t chunk, cudaStream_t s) {
    size_t n = n1 * n2 * chunk;
    cp_transpose12_kernel<T><<<(unsigned)((n + 255) / 256), 256, 0, s>>>(out, in, n1, n2, chunk);
    cudaCheck(cudaGetLastError());
}

// out [B][Lo][row] rows [o0, o0+n) = in [B][Li][row] rows [i0, i0+n) (lib/cp.h cp_copy_rows)
__global__ void cp_copy_rows_kernel(float* out, int Lo, int o0, const float* in, int Li, int i0, int n, int B,
                                    size_t row) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * n * row) return;
    size_t c = idx % row, t = idx / row;
    int i = (int)(t % n), b = (int)(t / n);
    out[((size_t)b * Lo + o0 + i) * row + c] = in[((size_t)b * Li + i0 + i) * row + c];
}
static void cp_copy_rows_gpu(float* out, int Lo, int o0, const float* in, int Li, int i0, int n, int B, size_t row,
                             cudaStream_t s) {
    size_t total = (size_t)B * n * row;
    cp_copy_rows_kernel<<<(unsigned)((total + 255) / 256), 256, 0, s>>>(out, Lo, o0, in, Li, i0, n, B, row);
    cudaCheck(cudaGetLastError());
}

// the group and its scratch (one per activation plan; the layers run one after another on one stream)
// (gpu/wan_gpu.cuh wan_gpu_act_init_opts allocates it, beside the activation arena)
typedef struct {
    Comm* comm;                     // the ranks sharing each sample (comm_split of the world)
    CpLayout lay;                   // B, L, H, d; Lr and Hk a rank
    PatchGrid g, g_out;             // the whole latent's grids (the plan's own grids hold Lr tokens)
    floatX *send, *recv;            // [B·Lr·H·d] the all-to-all's send and receive layouts
    floatX *dqh, *dkh, *dvh, *daoh; // [B, L, Hk·d] the head-sharded gradients (training)
    float* dS;                      // [B, Hk, L, L] the naive attention's score gradients (training, naive only)
    float* patches; // [B, L, in_dim·P] the whole latent's patches; the backward's latent-side gradient rows
    float* y_all;   // [K2, B, Lr, out_dim·P] the head's rows all-gathered (then [B, L, ..] of d out in the backward)
    float* y;       // [B, L, out_dim·P] the head's rows in token order
    float* out;     // [B, out_dim, T, Hl, Wl] the velocity (the plan's out points here)
    char* base;     // the one allocation
} WanCp;

static CommType cp_floatx_type(void) { return sizeof(floatX) == 2 ? COMM_BF16 : COMM_F32; }

// heads [B, L, Hk, d] of this rank's heads = the group's seq [B·Lr, H, d]
static void cp_gpu_seq_to_heads(const WanCp* cp, floatX* heads, const floatX* seq, cudaStream_t s) {
    const CpLayout* p = &cp->lay;
    cp_transpose12_gpu<floatX>(cp->send, seq, (size_t)p->B * p->Lr, (size_t)p->K2, (size_t)p->Hk * p->d, s);
    comm_all_to_all(cp->comm, cp->recv, cp->send, cp_a2a_count(p), cp_floatx_type(), s);
    cp_transpose12_gpu<floatX>(heads, cp->recv, (size_t)p->K2, (size_t)p->B, (size_t)p->Lr * p->Hk * p->d, s);
}

// seq [B·Lr, H, d] of this rank's tokens = the group's heads [B, L, Hk, d]
static void cp_gpu_heads_to_seq(const WanCp* cp, floatX* seq, const floatX* heads, cudaStream_t s) {
    const CpLayout* p = &cp->lay;
    cp_transpose12_gpu<floatX>(cp->send, heads, (size_t)p->B, (size_t)p->K2, (size_t)p->Lr * p->Hk * p->d, s);
    comm_all_to_all(cp->comm, cp->recv, cp->send, cp_a2a_count(p), cp_floatx_type(), s);
    cp_transpose12_gpu<floatX>(seq, cp->recv, (size_t)p->K2, (size_t)p->B * p->Lr, (size_t)p->Hk * p->d, s);
}

// The latent-side steps around a CP model (what gpu/wan_gpu.cuh does inline for the DiT, here for other readers of a
// CP plan's grids: the TMD student's flow head, gpu/tmd_gpu.cuh). Each uses the group's scratch (patches, y_all, y)
// between two of the plan's own uses, so only one at a time, on the plan's stream.

// patches [B·Lr, in·P] = this rank's rows of patchify(x) (x the whole latent [B, C, T, Hl, Wl], the same on every rank)
static void cp_gpu_patch_rows(const WanCp* cp, float* patches, const float* x, cudaStream_t s) {
    const CpLayout* p = &cp->lay;
    patchify_forward<float>(cp->patches, x, cp->g, s);
    cp_copy_rows_gpu(patches, p->Lr, 0, cp->patches, p->L, cp_first_token(p), p->Lr, p->B, (size_t)cp->g.P, s);
}

// dx (+=) [B, C, T, Hl, Wl] = the whole latent's gradient of this rank's patch rows dpatch [B·Lr, in·P]: zero outside
// this rank's tokens (the group's parts sum to the whole; a per-token reader downstream reads only its own rows)
static void cp_gpu_patch_rows_backward(const WanCp* cp, float* dx, const float* dpatch, cudaStream_t s) {
    const CpLayout* p = &cp->lay;
    cudaCheck(cudaMemsetAsync(cp->patches, 0, sizeof(float) * p->B * p->L * cp->g.P, s));
    cp_copy_rows_gpu(cp->patches, p->L, cp_first_token(p), dpatch, p->Lr, 0, p->Lr, p->B, (size_t)cp->g.P, s);
    patchify_backward<float>(dx, cp->patches, cp->g, s);
}

// out [B, out_dim, T, Hl, Wl] (the whole latent, every rank of the group) = unpatchify of the group's head rows
// y [B·Lr, out·P] all-gathered in token order
static void cp_gpu_gather_out(const WanCp* cp, float* out, const float* y, cudaStream_t s) {
    const CpLayout* p = &cp->lay;
    size_t rows = (size_t)p->B * p->Lr * cp->g_out.P;
    comm_all_gather(cp->comm, cp->y_all, y, rows, COMM_F32, s);
    cp_transpose12_gpu<float>(cp->y, cp->y_all, (size_t)p->K2, (size_t)p->B, (size_t)p->Lr * cp->g_out.P, s);
    unpatchify_forward<float>(out, cp->y, cp->g_out, s);
}

// dy [B·Lr, out·P] = this rank's rows of unpatchify's backward of dout (the whole latent's, the same on every rank:
// the losses are)
static void cp_gpu_out_rows_backward(const WanCp* cp, float* dy, const float* dout, cudaStream_t s) {
    const CpLayout* p = &cp->lay;
    unpatchify_backward<float>(cp->y, dout, cp->g_out, s);
    cp_copy_rows_gpu(dy, p->Lr, 0, cp->y, p->L, cp_first_token(p), p->Lr, p->B, (size_t)cp->g_out.P, s);
}

// whole [B, L, row] (every rank of the group) = the group's rows local [B·Lr, row] all-gathered in token order; tmp:
// [K2·B·Lr·row] scratch (the discriminator's features: gpu/distill_gpu.cuh)
static void cp_gpu_gather_rows(const WanCp* cp, float* whole, float* tmp, const float* local, size_t row,
                               cudaStream_t s) {
    const CpLayout* p = &cp->lay;
    comm_all_gather(cp->comm, tmp, local, (size_t)p->B * p->Lr * row, COMM_F32, s);
    cp_transpose12_gpu<float>(whole, tmp, (size_t)p->K2, (size_t)p->B, (size_t)p->Lr * row, s);
}
