// dev/fuzz/fuzz_dataset.c: one world dataset file (clips [N, 3, T, H, W], context, heldout, captions metadata) through
// world_load, the reader of `world sheet`, `world score` and the training data.
#include "fuzz_common.h"
#include "../../world/world.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const char* path = fuzz_file(data, size);
    char err[ST_ERRLEN];
    WorldSet s;
    if (world_load(&s, path, err) == 0) world_set_free(&s);
    return 0;
}
