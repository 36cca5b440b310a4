// gpu/tmd_math.cuh: the latent-space arithmetic of TMD on the GPU (the lines of cpu/tmd_cpu.h and cpu/distill_cpu.h
// that act on whole latents, not on the DiT): every one of them is a per-sample linear combination of up to three
// latents, or a per-sample reduction.
//
//   combine3           out[b] = ca[b]·a[b] + cb[b]·b[b] + cc[b]·c[b]   (c may be NULL)
//     x_t = (1 − t)·x + t·x1,  y_s = (1 − s)·y + s·y1,  v = y1 − y,  u = y1 − head          (App. A.2, Eq. 14)
//     inner step  y_r = y_s − (s − r)·(y1 − head)  = y_s − (s − r)·y1 + (s − r)·head        (paper Eq. 13-14)
//     outer step  x ← x − (t_i − t_{i−1})·ŷ  (Eq. 4);  x̂ = x_t − t·ŷ  (Eq. 17 for the student)
//     guidance    v_g = w·v + (1 − w)·u_∅ ;  the teacher's CFG  v = v_∅ + w·(v_c − v_∅)
//     JVP target  û = v_g − (s − r)·(u₊ − u₋)/(2δ)  (one-sided: (u₊ − u)/δ or (u − u₋)/δ)
//   sum_sq_diff        out[b] = Σ_i (a − b)²     (TM-MF's ‖u − û‖², the fake score's DSM; b NULL: Σ a²)
//   sum_abs_diff       out[b] = Σ_i |a − b|      (the VSD normaliser mean|x̂ − g_teacher|)  double, deterministic
//
// Coefficients are per sample, passed by value (Coef3: up to TMD_MAX_BATCH samples), computed on the host in
// double (time in double: paper Table 7, "time t in FP64") and rounded to fp32 once. Latents are fp32 [B, n].
// Overwritten: out. Deterministic: fixed grids, per-block partials summed in a fixed order (kernels/reduce.cuh).
#pragma once
#include "../kernels/common.cuh"
#include "../kernels/reduce.cuh"

#define TMD_MAX_BATCH  64
#define TMD_RED_BLOCKS 128

typedef struct {
    float a[TMD_MAX_BATCH], b[TMD_MAX_BATCH], c[TMD_MAX_BATCH];
} Coef3;

// all samples share the coefficients (ca, cb, cc)
static inline Coef3 coef3_all(int B, double ca, double cb, double cc) {
    Coef3 k;
    memset(&k, 0, sizeof(k));
    for (int i = 0; i < B && i < TMD_MAX_BATCH; i++) {
        k.a[i] = (float)ca;
        k.b[i] = (float)cb;
        k.c[i] = (float)cc;
    }
    return k;
}

__global__ void combine3_kernel(float* out, Coef3 k, const float* a, const float* b, const float* c, size_t n,
                                size_t total) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    int s = (int)(i / n);
    float v = k.a[s] * a[i] + k.b[s] * b[i];
    if (c) v += k.c[s] * c[i];
    out[i] = v;
}

// out may alias a, b or c (each element reads its own index only)
static inline void combine3(float* out, const Coef3& k, const float* a, const float* b, const float* c, int B, size_t n,
                            cudaStream_t st) {
    if (B > TMD_MAX_BATCH) {
        fprintf(stderr, "combine3: batch %d > TMD_MAX_BATCH %d; lower --batch\n", B, TMD_MAX_BATCH);
        exit(1);
    }
    size_t total = (size_t)B * n;
    combine3_kernel<<<(unsigned)((total + 255) / 256), 256, 0, st>>>(out, k, a, b, c, n, total);
    cudaCheck(cudaGetLastError());
}

// grid (TMD_RED_BLOCKS, B), block 256: partials[b, blk] = Σ over the block's strided elements of f(a − b)
template <int ABS> __global__ void diff_partials_kernel(double* partials, const float* a, const float* b, size_t n) {
    __shared__ double red[32];
    const float* x = a + (size_t)blockIdx.y * n;
    const float* y = b ? b + (size_t)blockIdx.y * n : NULL;
    double s = 0.0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        double d = (double)x[i] - (y ? (double)y[i] : 0.0);
        s += ABS ? fabs(d) : d * d;
    }
    s = block_sum(s, red);
    if (threadIdx.x == 0) partials[(size_t)blockIdx.y * gridDim.x + blockIdx.x] = s;
}
__global__ void partials_final_kernel(double* out, const double* partials, int nparts) {
    __shared__ double red[32];
    double s = 0.0;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x) s += partials[(size_t)blockIdx.x * nparts + i];
    s = block_sum(s, red);
    if (threadIdx.x == 0) out[blockIdx.x] = s;
}

// out [B] doubles (device); scratch: B·TMD_RED_BLOCKS doubles
static inline void sum_sq_diff(double* out, double* scratch, const float* a, const float* b, int B, size_t n,
                               cudaStream_t st) {
    diff_partials_kernel<0><<<dim3(TMD_RED_BLOCKS, B), 256, 0, st>>>(scratch, a, b, n);
    cudaCheck(cudaGetLastError());
    partials_final_kernel<<<B, 256, 0, st>>>(out, scratch, TMD_RED_BLOCKS);
    cudaCheck(cudaGetLastError());
}
static inline void sum_abs_diff(double* out, double* scratch, const float* a, const float* b, int B, size_t n,
                                cudaStream_t st) {
    diff_partials_kernel<1><<<dim3(TMD_RED_BLOCKS, B), 256, 0, st>>>(scratch, a, b, n);
    cudaCheck(cudaGetLastError());
    partials_final_kernel<<<B, 256, 0, st>>>(out, scratch, TMD_RED_BLOCKS);
    cudaCheck(cudaGetLastError());
}
