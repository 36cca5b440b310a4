// dev/fuzz/fuzz_common.h: what the harnesses share. The readers take a path, so each input is written to an in-memory
// file (memfd) and read back through /proc/self/fd/N: the real code path, no disk I/O per input.
#pragma once
#define _GNU_SOURCE // memfd_create
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

// the path of a file holding exactly data[0, size); the same file is rewritten for every input
static const char* fuzz_file(const uint8_t* data, size_t size) {
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("fuzz_input", 0);
        if (fd < 0) {
            perror("memfd_create");
            abort();
        }
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size)) {
        perror("fuzz_file");
        abort();
    }
    return path;
}
