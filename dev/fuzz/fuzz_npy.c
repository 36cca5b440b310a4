// dev/fuzz/fuzz_npy.c: one .npy file through npy_read and npy_read_shape.
#include "fuzz_common.h"
#include "../../lib/npy.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const char* path = fuzz_file(data, size);
    char err[ST_ERRLEN];
    float* v = NULL;
    int nd = 0;
    int64_t shape[ST_MAXDIM];
    if (npy_read(path, &v, &nd, shape, err) == 0) {
        int64_t numel = st_numel(nd, shape);
        volatile float sum = 0;
        for (int64_t i = 0; i < numel; i++) sum += v[i]; // every element must be readable
        free(v);
    }
    int64_t want[2] = {-1, 4};
    if (npy_read_shape(path, &v, 2, want, err) == 0) free(v);
    return 0;
}
