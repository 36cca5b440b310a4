// kernels/gemm.cuh: the Linear layers as cuBLASLt matmuls (PyTorch nn.Linear semantics, cpu/layers.h linear_*)
//
//   matmul_forward    out [N, OC] = inp [N, IC] · weight [OC, IC]ᵀ (+ bias [OC]) (then GELU-tanh when gelu = 1)
//   matmul_backward   dinp [N, IC] = dout · weight               (then ⊙ gelu'(pre_gelu) when pre_gelu is given)
//                     dweight [OC, IC] += doutᵀ · inp ;  dbias [OC] += Σ_n dout
//
// Row-major everywhere. T = floatX (bf16 in, fp32 accumulate, bf16 out: the official autocast numerics) or float
// (the head and time embedding, which the official code runs in fp32, and the -DENABLE_FP32 build; CUBLAS_COMPUTE_32F
// without TF32). Parameter gradients are fp32 whatever T is: cuBLASLt reads bf16 A, B and writes fp32 C = D.
//
// Overwritten: out, pre_gelu (forward). dinp (backward) unless accumulate_dinp = 1 (then +=, e.g. the q, k, v
// projections that share one input). Accumulated (+=): dweight, dbias.
// GELU fusion: forward with gelu = 1 and pre_gelu != NULL stores the pre-activation [N, OC] for the backward
// (cuBLASLt GELU_AUX_BIAS; needs OC % 8 == 0); the next layer's backward passes it as pre_gelu (DGELU epilogue) so
// its dinp is already the gradient before the GELU. cuBLASLt's GELU is the tanh form (checked against the CPU twin
// in dev/cuda/gemm.cu).
// dbias is a deterministic column sum (kernels/reduce.cuh), not the BGRADB epilogue. cuBLASLt itself gives the same
// bits on every run for the same sizes, pointers' alignment and GPU.
//
// Row-major X [r, c] is column-major Xᶜ [c, r], so each call below is written for cuBLASLt's column-major view:
//   forward      outᶜ [OC, N]  = Wᶜᵀ [OC, IC] · inpᶜ [IC, N]         (A = W, transposed)
//   dinp         dinpᶜ [IC, N] = Wᶜ [IC, OC] · doutᶜ [OC, N]
//   dweight      dWᶜ [IC, OC] += inpᶜ [IC, N] · doutᶜᵀ [N, OC]       (B = dout, transposed)
// Version 1 (the simple one), checked and timed by dev/cuda/gemm.cu; not yet run on a GPU (dev/cuda/README.md).
#pragma once
#include <stdint.h>
#include <cublasLt.h>
#include "common.cuh"
#include "precision.cuh"
#include "reduce.cuh"
#include "gemm_algo_cache.h" // the heuristic's answer per shape
#include "bench_prof.cuh"    // --bench: the GEMMs' time and FLOPs

// every cuBLAS(Lt) call: file, line and the library's message, then exit
#define cublasCheck(call)                                                                                              \
    do {                                                                                                               \
        cublasStatus_t s_ = (call);                                                                                    \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                                             \
            fprintf(stderr, "[cuBLAS error] %s:%d: %s: %s (%s)\n", __FILE__, __LINE__, #call,                          \
                    cublasLtGetStatusName(s_), cublasLtGetStatusString(s_));                                           \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)

#define GEMM_WORKSPACE_BYTES (32u << 20) // 32 MiB: what cuBLAS recommends for Hopper

static cublasLtHandle_t gemm_handle = NULL;
static void* gemm_workspace = NULL;
static GemmAlgoCache gemm_cache; // zero: empty

static inline void gemm_init(void) {
    if (gemm_handle) return;
    cublasCheck(cublasLtCreate(&gemm_handle));
    gemm_workspace = cuda_malloc_named(GEMM_WORKSPACE_BYTES, "cuBLASLt workspace", "it is a fixed 32 MiB");
}
static inline void gemm_free(void) {
    if (!gemm_handle) return;
    cublasCheck(cublasLtDestroy(gemm_handle));
    cudaCheck(cudaFree(gemm_workspace));
    gemm_handle = NULL;
    gemm_workspace = NULL;
    memset(&gemm_cache, 0, sizeof(gemm_cache)); // algorithms belong to the handle's device
}

template <typename T> struct gemm_type;
template <> struct gemm_type<float> { static constexpr cudaDataType_t value = CUDA_R_32F; };
template <> struct gemm_type<__nv_bfloat16> { static constexpr cudaDataType_t value = CUDA_R_16BF; };

// largest power of two (at most 256) that divides the address: cuBLASLt must only pick kernels that work with it
static inline uint32_t gemm_alignment(const void* p) {
    uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 1 && (a % al) != 0) al >>= 1;
    return al;
}

// D [m, n] (column-major, ld ldd) = op(A)·op(B) + beta·D, then the epilogue.
// A is stored [k, m] when transa else [m, k]; B is stored [n, k] when transb else [k, n] (column-major, ld lda/ldb).
static inline void gemm_lt(void* d, cudaDataType_t d_type, int ldd, const void* a, int transa, int lda, const void* b,
                           int transb, int ldb, cudaDataType_t ab_type, int m, int n, int k, float beta,
                           cublasLtEpilogue_t epilogue, const void* bias, const void* aux, int ldaux,
                           cudaStream_t stream) {
    if (!gemm_handle) {
        fprintf(stderr, "gemm_lt: call gemm_init() first\n");
        exit(1);
    }
    cublasLtMatmulDesc_t desc;
    cublasCheck(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t opa = transa ? CUBLAS_OP_T : CUBLAS_OP_N, opb = transb ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasCheck(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa)));
    cublasCheck(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb)));
    cublasCheck(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
    if (bias) {
        cublasCheck(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
        int32_t bias_type = d_type; // the bias has the output's type
        cublasCheck(
            cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)));
    }
    if (aux) {
        int64_t ld = ldaux;
        cublasCheck(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof(aux)));
        cublasCheck(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof(ld)));
    }
    cublasLtMatrixLayout_t la, lb, ld;
    cublasCheck(cublasLtMatrixLayoutCreate(&la, ab_type, transa ? k : m, transa ? m : k, lda));
    cublasCheck(cublasLtMatrixLayoutCreate(&lb, ab_type, transb ? n : k, transb ? k : n, ldb));
    cublasCheck(cublasLtMatrixLayoutCreate(&ld, d_type, m, n, ldd));

    cublasLtMatmulPreference_t pref;
    cublasCheck(cublasLtMatmulPreferenceCreate(&pref));
    size_t ws = GEMM_WORKSPACE_BYTES;
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    uint32_t al_a = gemm_alignment(a), al_b = gemm_alignment(b), al_d = gemm_alignment(d);
    cublasCheck(
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof(al_a)));
    cublasCheck(
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof(al_b)));
    cublasCheck(
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d, sizeof(al_d)));
    cublasCheck(
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d, sizeof(al_d)));

    // the heuristic once per shape (kernels/gemm_algo_cache.h); its status is read here, not by cublasCheck, so that
    // "no algorithm" (CUBLAS_STATUS_NOT_SUPPORTED, or found == 0) prints what was asked before exiting
    static_assert(sizeof(cublasLtMatmulAlgo_t) <= GEMM_ALGO_BYTES, "cublasLtMatmulAlgo_t grew: raise GEMM_ALGO_BYTES");
    const GemmKey key = gemm_key(m, n, k, transa, transb, lda, ldb, ldd, (int)ab_type, (int)d_type, (int)epilogue,
                                 bias != NULL, aux != NULL, ldaux, beta != 0.f, al_a, al_b, al_d);
    cublasLtMatmulAlgo_t algo;
    const void* cached = gemm_cache_find(&gemm_cache, &key);
    if (cached) {
        memcpy(&algo, cached, sizeof(algo));
    } else {
        cublasLtMatmulHeuristicResult_t heur;
        int found = 0;
        cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(gemm_handle, desc, la, lb, ld, ld, pref, 1, &heur, &found);
        if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
            fprintf(
                stderr,
                "[cuBLASLt] no algorithm for m %d n %d k %d (transa %d transb %d, A/B type %d, D type %d, epilogue %d, "
                "alignments %u %u %u; heuristic: %s); GELU fusion needs the output width divisible by 8\n",
                m, n, k, transa, transb, (int)ab_type, (int)d_type, (int)epilogue, al_a, al_b, al_d,
                cublasLtGetStatusName(st));
            exit(1);
        }
        algo = heur.algo;
        gemm_cache_insert(&gemm_cache, &key, &algo, sizeof(algo));
    }
    const float alpha = 1.f;
    const int prof = bench_prof_begin(PROF_GEMM, stream);
    cublasCheck(cublasLtMatmul(gemm_handle, desc, &alpha, a, la, b, lb, &beta, d, ld, d, ld, &algo, gemm_workspace, ws,
                               stream));
    bench_prof_end(prof, 2.0 * m * n * k, stream);

    cublasCheck(cublasLtMatmulPreferenceDestroy(pref));
    cublasCheck(cublasLtMatrixLayoutDestroy(la));
    cublasCheck(cublasLtMatrixLayoutDestroy(lb));
    cublasCheck(cublasLtMatrixLayoutDestroy(ld));
    cublasCheck(cublasLtMatmulDescDestroy(desc));
}

// out [N, OC] = inp [N, IC] · weight [OC, IC]ᵀ + bias (bias may be NULL); gelu = 1 applies GELU-tanh after the bias
// and, when pre_gelu is not NULL, stores the pre-activation there [N, OC] for the backward.
template <typename T>
static void matmul_forward(T* out, T* pre_gelu, const T* inp, const T* weight, const T* bias, int N, int IC, int OC,
                           int gelu, cudaStream_t stream) {
    cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
    if (gelu)
        epi = pre_gelu ? (bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX)
                       : (bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU);
    else if (bias)
        epi = CUBLASLT_EPILOGUE_BIAS;
    gemm_lt(out, gemm_type<T>::value, OC, weight, 1, IC, inp, 0, IC, gemm_type<T>::value, OC, N, IC, 0.f, epi, bias,
            gelu ? pre_gelu : NULL, OC, stream);
}

static inline size_t matmul_backward_scratch_floats(int N, int OC) { return column_sum_scratch_floats(N, OC); }

// inverts out = inp·weightᵀ + bias (and out = gelu(...) of the layer before, through pre_gelu):
//   dinp  = dout·weight            (⊙ gelu'(pre_gelu) when pre_gelu != NULL; += when accumulate_dinp)
//   dweight += doutᵀ·inp   [OC, IC] fp32 ;   dbias += Σ_n dout   [OC] fp32
// Any of dinp, dweight, dbias may be NULL (a frozen layer still passes dinp). pre_gelu is the GELU input of `inp`
// ([N, IC]: inp = gelu(pre_gelu)), and cannot be combined with accumulate_dinp.
// scratch: matmul_backward_scratch_floats(N, OC) floats when dbias is not NULL.
template <typename T>
static void matmul_backward(T* dinp, float* dweight, float* dbias, float* scratch, const T* dout, const T* inp,
                            const T* weight, const T* pre_gelu, int N, int IC, int OC, int accumulate_dinp,
                            cudaStream_t stream) {
    if (dinp) {
        if (pre_gelu && accumulate_dinp) {
            fprintf(stderr, "matmul_backward: pre_gelu (DGELU) cannot accumulate into dinp\n");
            exit(1);
        }
        gemm_lt(dinp, gemm_type<T>::value, IC, weight, 0, IC, dout, 0, OC, gemm_type<T>::value, IC, N, OC,
                accumulate_dinp ? 1.f : 0.f, pre_gelu ? CUBLASLT_EPILOGUE_DGELU : CUBLASLT_EPILOGUE_DEFAULT, NULL,
                pre_gelu, IC, stream);
    }
    if (dweight)
        gemm_lt(dweight, CUDA_R_32F, IC, inp, 0, IC, dout, 1, OC, gemm_type<T>::value, IC, OC, N, 1.f,
                CUBLASLT_EPILOGUE_DEFAULT, NULL, NULL, 0, stream);
    if (dbias) column_sum(dbias, scratch, dout, N, OC, stream);
}
