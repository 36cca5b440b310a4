# cudnn.mk: finds cuDNN 9 and cudnn-frontend >= 1.13 by compiling against them (included by the Makefile and
# dev/cuda/Makefile, which print their own [deps] line from CUDNN_FOUND). Needs NVCC and PROBE_DIR. Sets
#   CUDNN_FRONTEND_PATH  the frontend's headers: given, else the pip package nvidia-cudnn-frontend's include/
#   CUDNN_FOUND          yes when the probe compiled and linked
#   CUDNN_PATH, CUDNN_LINK  cuDNN outside the toolkit: given, else PyTorch's nvidia-cudnn-cu13/12 wheel
#                        (nvidia/cudnn/{include,lib}, libcudnn.so.9 without the .so link)
ifeq ($(CUDNN_FRONTEND_PATH),)
  CUDNN_FRONTEND_PATH := $(shell python3 -c "import importlib.metadata as m; print(m.distribution('nvidia-cudnn-frontend').locate_file('include'))" 2>/dev/null)
endif
CUDNN_PROBE_SRC := printf '\043include <cudnn.h>\n\043include <cudnn_frontend_version.h>\n\043if CUDNN_MAJOR < 9 || CUDNN_FRONTEND_VERSION < 11300\n\043error too old\n\043endif\nint main(){return cudnnGetVersion() >= 90000 ? 0 : 1;}\n' > $(PROBE_DIR)/dnn.cu
ifeq ($(CUDNN_PATH),)
  CUDNN_FOUND := $(shell $(CUDNN_PROBE_SRC) && $(NVCC) -isystem "$(CUDNN_FRONTEND_PATH)" $(PROBE_DIR)/dnn.cu -o $(PROBE_DIR)/dnn -lcudnn -lnvrtc 2>/dev/null && echo yes)
  ifneq ($(CUDNN_FOUND),yes)
    CUDNN_PATH := $(shell python3 -c "import importlib.metadata as m; p = [m.distribution(n).locate_file('nvidia/cudnn') for n in ('nvidia-cudnn-cu13', 'nvidia-cudnn-cu12') if list(m.distributions(name=n))]; print(p[0] if p else '')" 2>/dev/null)
  endif
endif
ifneq ($(CUDNN_PATH),)
  CUDNN_LINK := -L$(CUDNN_PATH)/lib -l:libcudnn.so.9 -Xlinker -rpath=$(CUDNN_PATH)/lib
  CUDNN_FOUND := $(shell $(CUDNN_PROBE_SRC) && $(NVCC) -isystem "$(CUDNN_FRONTEND_PATH)" -I$(CUDNN_PATH)/include $(PROBE_DIR)/dnn.cu -o $(PROBE_DIR)/dnn $(CUDNN_LINK) -lnvrtc 2>/dev/null && echo yes)
endif
