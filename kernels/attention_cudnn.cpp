// kernels/attention_cudnn.cpp: the graphs behind kernels/attention_cudnn.h (read that first). One SDPA node forward,
// one SDPA-backward node backward, bf16 in and out, fp32 softmax and accumulation.
// API facts from cudnn-frontend's documentation and headers (docs/operations/Attention.md; graph_interface.h,
// graph_properties.h of the PyPI wheel nvidia-cudnn-frontend 1.32): Graph::sdpa returns {O, Stats}, Stats [B, H, Nq, 1]
// fp32 is the natural-log logsumexp of the scaled scores unless set_stats_use_log2; set_generate_stats (1.13+, the
// replacement of set_is_inference) asks for it; SDPA_backward_attributes::set_deterministic_algorithm picks the
// backward without atomics. Tensors are described as [B, H, N, d] with strides, so the model's interleaved
// [B, N, H, d] layout needs no transpose (the approach of llm.c's llmc/cudnn_att.cpp).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <map>
#include <memory>
#include <tuple>
#include <unordered_map>
#include <cudnn.h>
#include <cudnn_frontend.h>
#include "attention_cudnn.h"

namespace fe = cudnn_frontend;

#if CUDNN_FRONTEND_VERSION < 11300
#error "cudnn-frontend 1.13 or newer is needed (SDPA set_generate_stats): pip install -U nvidia-cudnn-frontend"
#endif

#define CUDNN_ATT_CHECK_CUDA(call)                                                                                     \
    do {                                                                                                               \
        cudaError_t e_ = (call);                                                                                       \
        if (e_ != cudaSuccess) {                                                                                       \
            fprintf(stderr, "[CUDA error] %s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_));        \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)
#define CUDNN_ATT_CHECK(call)                                                                                          \
    do {                                                                                                               \
        cudnnStatus_t s_ = (call);                                                                                     \
        if (s_ != CUDNN_STATUS_SUCCESS) {                                                                              \
            fprintf(stderr, "[cuDNN error] %s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudnnGetErrorString(s_));      \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)

// the tensors' ids in a graph's variant pack
enum { UID_Q = 1, UID_K, UID_V, UID_O, UID_STATS, UID_DO, UID_DQ, UID_DK, UID_DV };

static int cudnn_state = 0; // 0: not started; 1: on; -1: off (TMD_CUDNN=0 or no handle)
static cudnnHandle_t cudnn_handle;
static void* cudnn_workspace = NULL;
static size_t cudnn_workspace_size = 0;

int attention_cudnn_enabled(void) {
    if (cudnn_state != 0) return cudnn_state > 0;
    const char* env = getenv("TMD_CUDNN");
    if (env && strcmp(env, "0") == 0) {
        fprintf(stderr, "attention: TMD_CUDNN=0: the own flash kernels, not cuDNN\n");
        cudnn_state = -1;
        return 0;
    }
    cudnnStatus_t s = cudnnCreate(&cudnn_handle);
    if (s != CUDNN_STATUS_SUCCESS) {
        fprintf(stderr, "attention: cuDNN did not start (%s): the own flash kernels instead\n", cudnnGetErrorString(s));
        cudnn_state = -1;
        return 0;
    }
    cudnn_state = 1;
    fprintf(stderr,
            "attention: cuDNN %zu fused SDPA (cudnn-frontend %d.%d.%d), a graph per shape; TMD_CUDNN=0 for the own "
            "flash kernels\n",
            cudnnGetVersion(), CUDNN_FRONTEND_MAJOR_VERSION, CUDNN_FRONTEND_MINOR_VERSION,
            CUDNN_FRONTEND_PATCH_VERSION);
    return 1;
}

size_t attention_cudnn_workspace_bytes(void) { return cudnn_workspace_size; }

// [B, H, n, d] over the interleaved [B, n, H, d] storage
static fe::graph::Tensor_attributes bhnd(const char* name, int uid, int64_t B, int64_t H, int64_t n, int64_t d) {
    return fe::graph::Tensor_attributes()
        .set_name(name)
        .set_uid(uid)
        .set_dim({B, H, n, d})
        .set_stride({n * H * d, d, H * d, 1});
}

// Builds the forward (backward = 0) or backward graph of one shape; NULL with one line on stderr when cuDNN cannot
// run it (the caller falls back to the flash kernels for this shape and direction from then on).
static std::shared_ptr<fe::graph::Graph> build_graph(int backward, int B, int Nq, int Nk, int H, int d) {
    auto g = std::make_shared<fe::graph::Graph>();
    g->set_io_data_type(fe::DataType_t::BFLOAT16)
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
    const float scale = (float)(1.0 / sqrt((double)d));
    auto Q = g->tensor(bhnd("Q", UID_Q, B, H, Nq, d));
    auto K = g->tensor(bhnd("K", UID_K, B, H, Nk, d));
    auto V = g->tensor(bhnd("V", UID_V, B, H, Nk, d));
    const std::vector<int64_t> stats_dim = {B, H, Nq, 1}, stats_stride = {(int64_t)H * Nq, Nq, 1, 1};
    if (!backward) {
        auto opt = fe::graph::SDPA_attributes().set_name("sdpa").set_generate_stats(true).set_attn_scale(scale);
        auto [O, stats] = g->sdpa(Q, K, V, opt);
        O->set_output(true)
            .set_uid(UID_O)
            .set_dim({B, H, Nq, d})
            .set_stride({(int64_t)Nq * H * d, d, (int64_t)H * d, 1});
        stats->set_output(true)
            .set_uid(UID_STATS)
            .set_data_type(fe::DataType_t::FLOAT)
            .set_dim(stats_dim)
            .set_stride(stats_stride);
    } else {
        auto O = g->tensor(bhnd("O", UID_O, B, H, Nq, d));
        auto dO = g->tensor(bhnd("dO", UID_DO, B, H, Nq, d));
        auto stats = g->tensor(fe::graph::Tensor_attributes()
                                   .set_name("Stats")
                                   .set_uid(UID_STATS)
                                   .set_data_type(fe::DataType_t::FLOAT)
                                   .set_dim(stats_dim)
                                   .set_stride(stats_stride));
        auto opt = fe::graph::SDPA_backward_attributes()
                       .set_name("sdpa_backward")
                       .set_attn_scale(scale)
                       .set_deterministic_algorithm(true);
        auto [dQ, dK, dV] = g->sdpa_backward(Q, K, V, O, dO, stats, opt);
        dQ->set_output(true)
            .set_uid(UID_DQ)
            .set_dim({B, H, Nq, d})
            .set_stride({(int64_t)Nq * H * d, d, (int64_t)H * d, 1});
        dK->set_output(true)
            .set_uid(UID_DK)
            .set_dim({B, H, Nk, d})
            .set_stride({(int64_t)Nk * H * d, d, (int64_t)H * d, 1});
        dV->set_output(true)
            .set_uid(UID_DV)
            .set_dim({B, H, Nk, d})
            .set_stride({(int64_t)Nk * H * d, d, (int64_t)H * d, 1});
    }
    // every step can refuse the shape: say which and why, once
    const char* step = "validate";
    fe::error_t e = g->validate();
    if (e.is_good()) {
        step = "build_operation_graph";
        e = g->build_operation_graph(cudnn_handle);
    }
    if (e.is_good()) {
        step = "create_execution_plans";
        e = g->create_execution_plans({fe::HeurMode_t::A});
    }
    if (e.is_good()) {
        step = "check_support";
        e = g->check_support(cudnn_handle);
    }
    if (e.is_good()) {
        step = "build_plans";
        e = g->build_plans(cudnn_handle);
    }
    if (!e.is_good()) {
        fprintf(stderr,
                "attention: cuDNN cannot run the %s of B %d Nq %d Nk %d H %d d %d (%s: %s): the own flash kernel "
                "instead for this shape\n",
                backward ? "backward" : "forward", B, Nq, Nk, H, d, step, e.get_message().c_str());
        return nullptr;
    }
    int64_t ws = 0;
    e = g->get_workspace_size(ws);
    if (!e.is_good()) {
        fprintf(stderr, "attention: cuDNN's workspace size failed (%s): the own flash kernel instead for this shape\n",
                e.get_message().c_str());
        return nullptr;
    }
    if ((size_t)ws > cudnn_workspace_size) {
        // the old workspace may still be read by queued work of another graph: wait before freeing it
        CUDNN_ATT_CHECK_CUDA(cudaDeviceSynchronize());
        if (cudnn_workspace) CUDNN_ATT_CHECK_CUDA(cudaFree(cudnn_workspace));
        if (cudaMalloc(&cudnn_workspace, (size_t)ws) != cudaSuccess) {
            fprintf(stderr,
                    "[out of memory] cuDNN attention workspace: %.1f MiB for B %d Nq %d Nk %d H %d d %d; run with "
                    "TMD_CUDNN=0 (the own flash kernels need none) or a smaller batch\n",
                    ws / 1048576.0, B, Nq, Nk, H, d);
            exit(1);
        }
        cudnn_workspace_size = (size_t)ws;
        fprintf(stderr, "attention: cuDNN workspace %.1f MiB (the %s of B %d Nq %d Nk %d H %d d %d)\n", ws / 1048576.0,
                backward ? "backward" : "forward", B, Nq, Nk, H, d);
    }
    return g;
}

// the cached graph of (direction, shape), built on first use; NULL: cuDNN cannot run it
static fe::graph::Graph* lookup_graph(int backward, int B, int Nq, int Nk, int H, int d) {
    static std::map<std::tuple<int, int, int, int, int, int>, std::shared_ptr<fe::graph::Graph>> cache;
    const auto key = std::make_tuple(backward, B, Nq, Nk, H, d);
    auto it = cache.find(key);
    if (it == cache.end()) it = cache.emplace(key, build_graph(backward, B, Nq, Nk, H, d)).first;
    return it->second.get();
}

static void execute(fe::graph::Graph* g, std::unordered_map<int64_t, void*>& pack, cudaStream_t stream) {
    CUDNN_ATT_CHECK(cudnnSetStream(cudnn_handle, stream));
    fe::error_t e = g->execute(cudnn_handle, pack, cudnn_workspace);
    if (!e.is_good()) {
        fprintf(stderr, "[cuDNN error] %s:%d: SDPA graph execute: %s\n", __FILE__, __LINE__, e.get_message().c_str());
        exit(1);
    }
    CUDNN_ATT_CHECK_CUDA(cudaGetLastError());
}

size_t attention_cudnn_workspace_for(int B, int Nq, int Nk, int H, int d) {
    if (!attention_cudnn_enabled()) return 0;
    size_t ws = 0;
    for (int backward = 0; backward < 2; backward++) {
        fe::graph::Graph* g = lookup_graph(backward, B, Nq, Nk, H, d);
        int64_t w = 0;
        if (g && g->get_workspace_size(w).is_good() && (size_t)w > ws) ws = (size_t)w;
    }
    return ws;
}

int attention_forward_cudnn(__nv_bfloat16* out, float* lse, const __nv_bfloat16* q, const __nv_bfloat16* k,
                            const __nv_bfloat16* v, int B, int Nq, int Nk, int H, int d, cudaStream_t stream) {
    if (!attention_cudnn_enabled()) return 0;
    fe::graph::Graph* g = lookup_graph(0, B, Nq, Nk, H, d);
    if (!g) return 0;
    std::unordered_map<int64_t, void*> pack = {
        {UID_Q, (void*)q}, {UID_K, (void*)k}, {UID_V, (void*)v}, {UID_O, (void*)out}, {UID_STATS, (void*)lse}};
    execute(g, pack, stream);
    return 1;
}

int attention_backward_cudnn(__nv_bfloat16* dq, __nv_bfloat16* dk, __nv_bfloat16* dv, const __nv_bfloat16* dout,
                             const __nv_bfloat16* out, const float* lse, const __nv_bfloat16* q, const __nv_bfloat16* k,
                             const __nv_bfloat16* v, int B, int Nq, int Nk, int H, int d, cudaStream_t stream) {
    if (!attention_cudnn_enabled()) return 0;
    fe::graph::Graph* g = lookup_graph(1, B, Nq, Nk, H, d);
    if (!g) return 0;
    std::unordered_map<int64_t, void*> pack = {{UID_Q, (void*)q},   {UID_K, (void*)k},     {UID_V, (void*)v},
                                               {UID_O, (void*)out}, {UID_DO, (void*)dout}, {UID_STATS, (void*)lse},
                                               {UID_DQ, (void*)dq}, {UID_DK, (void*)dk},   {UID_DV, (void*)dv}};
    execute(g, pack, stream);
    return 1;
}
