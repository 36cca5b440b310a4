# Makefile for the TMD reference implementation.
#   make test        build and run the CPU reference tests, every fast group (needs only a C compiler; ~5 CPU-seconds)
#                    then the GPU-vs-CPU parity (test_gpu) when nvcc is found: it runs on a GPU and prints one
#                    "skipped" line without one
#   make test-distill the tiny distillation with the paper's claim in miniature (several CPU-minutes)
#   make asan        the fast tests built with AddressSanitizer and UndefinedBehaviorSanitizer, and run
#   make fuzz        the libFuzzer harnesses of dev/fuzz (clang), each run FUZZ_SECONDS (default 60) under ASan + UBSan
#   ./test_tmd test --list   the test groups; ./test_tmd test io grad ... runs some of them
#   make             the tests' binary, plus the CUDA programs when nvcc is found
#   make train_tmd   the GPU trainer (nvcc, cuBLAS)      make sample_tmd   the GPU sampler      make test_gpu   the parity test
#   PRECISION=FP32   the all-fp32 build (default BF16; without --use_fast_math, for the 1e-5 parity)   GPU_ARCH="sm_90 sm_80"   the GPUs to build for (default both)
#   GEMM=own         the in-repo tiled GEMM instead of cuBLASLt (no cuBLAS needed)   ATTN=naive   the naive attention
#   CUDNN=0          the own flash attention instead of cuDNN's fused SDPA (default: cuDNN where found, bf16 builds)
#   CUDNN_FRONTEND_PATH=dir   cudnn-frontend's include/ (default: the pip package nvidia-cudnn-frontend, found by python3)
#   CUDNN_PATH=dir   a cuDNN outside the CUDA toolkit (include/, lib/; default: the toolkit's, else PyTorch's nvidia-cudnn-cu13/12)
#   CUDART=shared    link the CUDA runtime dynamically (what a functional simulator such as GPGPU-Sim intercepts)
#   NVEXTRA="..."    extra nvcc flags (CI: -Werror all-warnings -Xcompiler -Werror)
#   make train_tmd_sim sample_tmd_sim   the builds for the GPGPU-Sim functional simulator (dev/sim.md)
#   make world       generate the built-in world's datasets and a contact sheet into data/
#   make test-mpi    lib/comm.h's collectives under mpirun (2 and 3 ranks) against a serial computation, the sharded
#                    optimizer step against the replicated one, context parallelism's groups and layouts (lib/cp.h), and a failing rank's abort (needs OpenMPI: apt-get install openmpi-bin libopenmpi-dev)
# Every dependency is detected by compiling against it, and reported on one line.

CC      ?= gcc
CFLAGS  ?= -O2
CFLAGS  += -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Wshadow -Wno-unused-function
LDLIBS  += -lm
NVCC    ?= nvcc
NVFLAGS ?= -O3 --use_fast_math
NVEXTRA ?=
NVDEFS  :=
PRECISION ?= BF16
GPU_ARCH  ?= sm_90 sm_80
GEMM      ?= cublas
ATTN      ?= flash
CUDNN     ?= 1
CUDART    ?= static
# each arch gets its machine code and its PTX (the PTX is what a simulator runs, and what a newer GPU JIT-compiles)
NVARCH := $(foreach a,$(GPU_ARCH),-gencode arch=compute_$(subst sm_,,$(a)),code=[$(a),compute_$(subst sm_,,$(a))])
NVFLAGS_ALL = $(NVFLAGS) -std=c++17 $(NVARCH) -cudart $(CUDART) -Xcompiler -Wall,-Wno-unused-function,-Wno-unknown-pragmas $(NVDEFS) $(NVEXTRA)

# ---- dependency probes: try to compile, say what was found --------------------------------------------------
PROBE_DIR := $(shell mktemp -d 2>/dev/null || echo /tmp)
OPENMP := $(shell printf '#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n' > $(PROBE_DIR)/omp.c && \
            $(CC) -fopenmp $(PROBE_DIR)/omp.c -o $(PROBE_DIR)/omp 2>/dev/null && echo yes)
ifeq ($(OPENMP),yes)
  CFLAGS += -fopenmp
  $(info [deps] OpenMP: found (CPU reference runs on all cores; set OMP_NUM_THREADS to change))
else
  $(info [deps] OpenMP: not found (CPU reference runs on one core))
endif
NVCC_PATH := $(shell command -v $(NVCC) 2>/dev/null)

# MPI (OpenMPI's mpicc): the collectives' host backend (lib/comm.h, gpu/comm.cuh) and the launcher's ranks; probed for
# the targets that use it. The CUDA programs get its include and library flags (nvcc takes -I, -L and -l as they are),
# without the deprecated C++ bindings (OpenMPI's mpicxx.h declares names of its own, e.g. CommType).
MPICC ?= mpicc
MPI_GOALS := $(filter all train_tmd sample_tmd test_gpu cuda test-mpi train_tmd_sim sample_tmd_sim dev/mpi/shard_gpu_check dev/mpi/shard_gpu_check_sim dev/mpi/cp_gpu_check dev/mpi/cp_gpu_check_sim dev/mpi/cp_test dev/mpi/fsdp_gpu_check dev/mpi/fsdp_gpu_check_sim,$(if $(MAKECMDGOALS),$(MAKECMDGOALS),all))
ifneq ($(MPI_GOALS),)
  MPI := $(shell printf '#include <mpi.h>\nint main(int c, char** v){int n = 0; MPI_Init(&c, &v); MPI_Comm_size(MPI_COMM_WORLD, &n); MPI_Finalize(); return n > 0 ? 0 : 1;}\n' > $(PROBE_DIR)/mpi.c && \
           $(MPICC) $(PROBE_DIR)/mpi.c -o $(PROBE_DIR)/mpi 2>/dev/null && echo yes)
  ifeq ($(MPI),yes)
    MPI_NVFLAGS := -DUSE_MPI -DOMPI_SKIP_MPICXX -DMPICH_SKIP_MPICXX $(filter -I%,$(shell $(MPICC) --showme:compile 2>/dev/null)) $(filter -L% -l%,$(shell $(MPICC) --showme:link 2>/dev/null))
    $(info [deps] MPI: found ($(MPICC); multi-rank launches with mpirun, the host-staged collectives, make test-mpi))
  else
    $(info [deps] MPI: not found (one rank only; make test-mpi needs it: apt-get install openmpi-bin libopenmpi-dev))
  endif
endif

# the CUDA probes cost seconds each, so they run only when a CUDA target is asked for
CUDA_GOALS := $(filter all train_tmd sample_tmd test_gpu cuda test test-gpu attention_cudnn.o dev/mpi/shard_gpu_check dev/mpi/cp_gpu_check dev/mpi/fsdp_gpu_check,$(if $(MAKECMDGOALS),$(MAKECMDGOALS),all))
ifneq ($(CUDA_GOALS),)
  ifeq ($(NVCC_PATH),)
    $(info [deps] nvcc: not found (the CUDA programs train_tmd and sample_tmd are skipped; `make test` needs only a C compiler))
  else
    $(info [deps] nvcc: found at $(NVCC_PATH))
    CUBLAS := $(shell printf '#include <cublas_v2.h>\n#include <cublasLt.h>\nint main(){cublasLtHandle_t h; return cublasLtCreate(&h) == CUBLAS_STATUS_SUCCESS ? 0 : 1;}\n' > $(PROBE_DIR)/blas.cu && \
                $(NVCC) $(PROBE_DIR)/blas.cu -lcublas -lcublasLt -o $(PROBE_DIR)/blas 2>/dev/null && echo yes)
    ifeq ($(CUBLAS),yes)
      $(info [deps] cuBLAS/cuBLASLt: found)
    else
      $(info [deps] cuBLAS/cuBLASLt: NOT found (install the CUDA toolkit's cuBLAS; the CUDA programs need it))
    endif
    # cuDNN's fused attention (kernels/attention_cudnn.cpp): bf16 builds with ATTN=flash only. Needs cuDNN 9 (the CUDA
    # toolkit's, or PyTorch's pip package) and cudnn-frontend's headers (pip install nvidia-cudnn-frontend, 1.13+).
    ifeq ($(CUDNN)$(ATTN)$(PRECISION),1flashBF16)
      include cudnn.mk
      ifeq ($(CUDNN_FOUND),yes)
        $(info [deps] cuDNN + cudnn-frontend: found (frontend headers in $(CUDNN_FRONTEND_PATH); cuDNN $(if $(CUDNN_PATH),in $(CUDNN_PATH),of the CUDA toolkit)): attention by cuDNN's fused SDPA, the own flash kernels as its fallback)
      else
        $(info [deps] cuDNN + cudnn-frontend: not found (pip install nvidia-cudnn-frontend, or set CUDNN_FRONTEND_PATH / CUDNN_PATH): attention by the own flash kernels)
      endif
    else
      $(info [deps] cuDNN: not used (CUDNN=$(CUDNN) ATTN=$(ATTN) PRECISION=$(PRECISION); cuDNN's attention is for CUDNN=1 ATTN=flash bf16 builds))
    endif
    NCCL := $(shell printf '#include <nccl.h>\nint main(){int v; return ncclGetVersion(&v) == ncclSuccess ? 0 : 1;}\n' > $(PROBE_DIR)/nccl.cu && \
              $(NVCC) $(PROBE_DIR)/nccl.cu -lnccl -o $(PROBE_DIR)/nccl 2>/dev/null && echo yes)
    ifeq ($(NCCL),yes)
      $(info [deps] NCCL: found (multi-GPU training available))
    else
      $(info [deps] NCCL: not found (single-GPU only))
    endif
  endif
endif
$(shell rm -rf $(PROBE_DIR) 2>/dev/null)

ifeq ($(NVCC_PATH),)
  CUDA_TARGETS :=
else
  CUDA_TARGETS := train_tmd sample_tmd test_gpu
endif
ifeq ($(GEMM),own)
  NVDEFS += -DGEMM_OWN
  CUDA_LIBS :=
else ifeq ($(GEMM),cublas)
  CUDA_LIBS := -lcublas -lcublasLt
else
  $(error GEMM=$(GEMM): expected cublas (the default) or own)
endif
ifeq ($(ATTN),naive)
  NVDEFS += -DATTN_NAIVE
else ifneq ($(ATTN),flash)
  $(error ATTN=$(ATTN): expected flash (the default) or naive)
endif
ifeq ($(CUDNN_FOUND),yes)
  NVDEFS += -DENABLE_CUDNN
  CUDNN_OBJ := attention_cudnn.o
  # cudnn-frontend's runtime-compiled engines call NVRTC
  CUDA_LIBS += $(if $(CUDNN_LINK),$(CUDNN_LINK),-lcudnn) -lnvrtc
endif
ifeq ($(NCCL),yes)
  NVDEFS += -DUSE_NCCL
  CUDA_LIBS += -lnccl
endif
ifeq ($(PRECISION),FP32)
  NVDEFS += -DENABLE_FP32
  # the fp32 parity (test_gpu) checks at 1e-5 relative, where --use_fast_math's approximate tanh, exp and division
  # already err; so the fp32 build (and the simulator's, fp32 too) uses IEEE division and square root and CUDA's libm
  NVFLAGS := $(filter-out --use_fast_math,$(NVFLAGS))
endif
ifeq ($(MPI),yes)
  NVDEFS += $(MPI_NVFLAGS)
endif

# the CUDA programs include cpu/ headers (the solvers, the oracle) single-threaded: their OpenMP pragmas are ignored
HEADERS := wan.h $(wildcard lib/*.h cpu/*.h world/*.h gpu/*.h kernels/*.h)
CUDA_HEADERS := $(HEADERS) $(wildcard kernels/*.cuh gpu/*.cuh)

.PHONY: all test test-gpu test-distill test-mpi asan fuzz ablate-quick cuda world clean
all: test_tmd $(CUDA_TARGETS)
cuda: $(CUDA_TARGETS)

test_tmd: test_tmd.c $(HEADERS)
	$(CC) $(CFLAGS) $< -o $@ $(LDLIBS)

# GPU-vs-CPU parity (test_gpu) in `make test`: built when nvcc (and cuBLAS, unless GEMM=own) is found; it runs the checks
# on a GPU and prints one "skipped" line without one. Without nvcc or cuBLAS, make prints that line itself.
ifeq ($(NVCC_PATH),)
  GPU_TEST_SKIP := no nvcc: the CUDA toolkit is not installed
else ifneq ($(if $(filter own,$(GEMM)),yes,$(CUBLAS)),yes)
  GPU_TEST_SKIP := cuBLAS not found; GEMM=own builds it without cuBLAS
endif

test: test_tmd $(if $(GPU_TEST_SKIP),,test_gpu)
	./test_tmd
ifeq ($(GPU_TEST_SKIP),)
	./test_gpu
else
	@echo "GPU parity (test_gpu): skipped ($(GPU_TEST_SKIP))"
endif

test-gpu: $(if $(GPU_TEST_SKIP),,test_gpu)
ifeq ($(GPU_TEST_SKIP),)
	./test_gpu
else
	@echo "GPU parity (test_gpu): skipped ($(GPU_TEST_SKIP))"
endif

test-distill: test_tmd
	./test_tmd test distill

# lib/comm.h's collectives on 2 ranks and on 3 (slices the world does not divide), bit for bit against a serial
# computation; the sharded optimizer step (lib/shard.h's slices, reduce-scatter, AdamW on the slice, all-gather) against
# the replicated all-reduce step, bit for bit; then a rank that fails must end the launch with its message (a non-zero exit, within the timeout, not a
# hang). mpirun: --allow-run-as-root for CI containers that run as root, --oversubscribe for more ranks than cores, and
# the shared-memory transport without its single-copy (CMA) path, which containers without ptrace refuse.
MPIRUN ?= mpirun --allow-run-as-root --oversubscribe
MPIENV := OMPI_MCA_btl_vader_single_copy_mechanism=none
dev/mpi/comm_test: dev/mpi/comm_test.c lib/comm.h
	$(if $(filter yes,$(MPI)),,$(error make test-mpi needs MPI: apt-get install openmpi-bin libopenmpi-dev))
	$(MPICC) $(CFLAGS) -DUSE_MPI $< -o $@ -lm

dev/mpi/shard_step_test: dev/mpi/shard_step_test.c lib/comm.h lib/shard.h
	$(if $(filter yes,$(MPI)),,$(error make test-mpi needs MPI: apt-get install openmpi-bin libopenmpi-dev))
	$(MPICC) $(CFLAGS) -DUSE_MPI $< -o $@ -lm

dev/mpi/cp_test: dev/mpi/cp_test.c lib/comm.h lib/cp.h
	$(if $(filter yes,$(MPI)),,$(error make test-mpi needs MPI: apt-get install openmpi-bin libopenmpi-dev))
	$(MPICC) $(CFLAGS) -DUSE_MPI $< -o $@ -lm

test-mpi: dev/mpi/comm_test dev/mpi/shard_step_test dev/mpi/cp_test
	$(MPIENV) $(MPIRUN) -np 2 dev/mpi/comm_test
	$(MPIENV) $(MPIRUN) -np 3 dev/mpi/comm_test
	$(MPIENV) $(MPIRUN) -np 2 dev/mpi/shard_step_test
	$(MPIENV) $(MPIRUN) -np 3 dev/mpi/shard_step_test
	$(MPIENV) $(MPIRUN) -np 2 dev/mpi/cp_test 2
	$(MPIENV) $(MPIRUN) -np 4 dev/mpi/cp_test 2
	$(MPIENV) $(MPIRUN) -np 3 dev/mpi/cp_test 3
	@rc=0; $(MPIENV) timeout 60 $(MPIRUN) -np 3 dev/mpi/comm_test --abort > dev/mpi/abort.log 2>&1 || rc=$$?; \
	 if [ $$rc -eq 0 ] || [ $$rc -eq 124 ] || ! grep -q "fatal: comm_test --abort" dev/mpi/abort.log; then \
	   cat dev/mpi/abort.log; echo "comm_test --abort: FAILED (exit $$rc; want non-zero with the failing rank's message, 124 is the timeout: a hang)"; exit 1; fi; \
	 echo "comm_test --abort: the failing rank took the launch down (exit $$rc) with its message:"; grep "fatal:" dev/mpi/abort.log

# the sanitizers find what a test that passes can hide: out-of-bounds reads, use after free, signed overflow.
# Leaks are not checked (the tests free what they allocate, the commands leave it to exit).
ASAN_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
test_tmd_asan: test_tmd.c $(HEADERS)
	$(CC) $(CFLAGS) $(ASAN_FLAGS) $< -o $@ $(LDLIBS)

asan: test_tmd_asan
	ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 ./test_tmd_asan

FUZZ_SECONDS ?= 60
fuzz:
	$(MAKE) -C dev/fuzz run FUZZ_SECONDS=$(FUZZ_SECONDS)

# the paper's claims in miniature, quick mode (a few minutes); `./test_tmd ablate` is the full run
ablate-quick: test_tmd
	./test_tmd ablate --quick

train_tmd: train_tmd.cu $(CUDA_HEADERS) $(CUDNN_OBJ)
	$(if $(NVCC_PATH),,$(error nvcc not found: the CUDA programs need the CUDA toolkit; `make test` runs the CPU tests without it))
	$(NVCC) $(NVFLAGS_ALL) $< $(CUDNN_OBJ) -o $@ $(CUDA_LIBS)

sample_tmd: sample_tmd.cu $(CUDA_HEADERS) $(CUDNN_OBJ)
	$(if $(NVCC_PATH),,$(error nvcc not found: the CUDA programs need the CUDA toolkit; `make test` runs the CPU tests without it))
	$(NVCC) $(NVFLAGS_ALL) $< $(CUDNN_OBJ) -o $@ $(CUDA_LIBS)

test_gpu: test_gpu.cu $(CUDA_HEADERS) $(CUDNN_OBJ)
	$(if $(NVCC_PATH),,$(error nvcc not found: the CUDA programs need the CUDA toolkit; `make test` runs the CPU tests without it))
	$(NVCC) $(NVFLAGS_ALL) $< $(CUDNN_OBJ) -o $@ $(CUDA_LIBS)

# cuDNN's attention graphs: their own translation unit (host C++17; cudnn-frontend's headers take minutes to compile)
attention_cudnn.o: kernels/attention_cudnn.cpp kernels/attention_cudnn.h
	$(NVCC) $(NVFLAGS) -std=c++17 -Xcompiler -Wall $(NVEXTRA) -isystem "$(CUDNN_FRONTEND_PATH)" $(if $(CUDNN_PATH),-I$(CUDNN_PATH)/include) -c $< -o $@

# the simulator builds (dev/sim.md): fp32, the in-repo GEMM, the naive attention, sm_80 PTX, the shared CUDA runtime (what
# GPGPU-Sim intercepts) and no NCCL; written next to the real programs as train_tmd_sim and sample_tmd_sim
SIM_NVFLAGS = $(filter-out --use_fast_math,$(NVFLAGS)) -std=c++17 -gencode arch=compute_80,code=[sm_80,compute_80] -cudart shared \
              -Xcompiler -Wall,-Wno-unused-function,-Wno-unknown-pragmas -DENABLE_FP32 -DGEMM_OWN -DATTN_NAIVE $(NVEXTRA)
ifeq ($(MPI),yes)
  SIM_NVFLAGS += $(MPI_NVFLAGS)   # mpirun -np K ./train_tmd_sim: each rank its own simulated GPU, the host-staged collectives
endif
# the sharded optimizer step on the device against the replicated one, under mpirun (dev/mpi/shard_gpu_check.cu)
dev/mpi/shard_gpu_check: dev/mpi/shard_gpu_check.cu $(CUDA_HEADERS)
	$(NVCC) $(NVFLAGS_ALL) $< -o $@ $(CUDA_LIBS)
dev/mpi/shard_gpu_check_sim: dev/mpi/shard_gpu_check.cu $(CUDA_HEADERS)
	$(NVCC) $(SIM_NVFLAGS) $< -o $@
# context parallelism's DiT forward and backward on K ranks against one rank (dev/mpi/cp_gpu_check.cu)
dev/mpi/cp_gpu_check: dev/mpi/cp_gpu_check.cu $(CUDA_HEADERS) $(CUDNN_OBJ)
	$(NVCC) $(NVFLAGS_ALL) $< $(CUDNN_OBJ) -o $@ $(CUDA_LIBS)
dev/mpi/cp_gpu_check_sim: dev/mpi/cp_gpu_check.cu $(CUDA_HEADERS)
	$(NVCC) $(SIM_NVFLAGS) $< -o $@
# fully sharded training steps of a tiny DiT against the replicated ones, under mpirun (dev/mpi/fsdp_gpu_check.cu)
dev/mpi/fsdp_gpu_check: dev/mpi/fsdp_gpu_check.cu $(CUDA_HEADERS) $(CUDNN_OBJ)
	$(NVCC) $(NVFLAGS_ALL) $< $(CUDNN_OBJ) -o $@ $(CUDA_LIBS)
dev/mpi/fsdp_gpu_check_sim: dev/mpi/fsdp_gpu_check.cu $(CUDA_HEADERS)
	$(NVCC) $(SIM_NVFLAGS) $< -o $@

train_tmd_sim sample_tmd_sim: %_sim: %.cu $(CUDA_HEADERS)
	$(if $(NVCC_PATH),,$(error nvcc not found: the CUDA programs need the CUDA toolkit))
	$(NVCC) $(SIM_NVFLAGS) $< -o $@

world: test_tmd
	./test_tmd world gen

clean:
	rm -f test_tmd test_tmd_asan train_tmd sample_tmd test_gpu train_tmd_sim sample_tmd_sim attention_cudnn.o dev/mpi/abort.log \
	      $(addprefix dev/mpi/,comm_test shard_step_test shard_gpu_check shard_gpu_check_sim cp_test cp_gpu_check cp_gpu_check_sim ckpt_diff fsdp_gpu_check fsdp_gpu_check_sim)
