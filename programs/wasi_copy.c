// wasi_copy: copy a file, as `cp SRC DST` does, through wasi-libc's <stdio.h>.
//
//   vmrun --dir HOST::/data wasi_copy.wasm /data/SRC /data/DST   copy, then print the size
//   vmrun --dir HOST::/data wasi_copy.wasm /data/SRC -           write SRC to standard output
//
// The copy goes through `fopen`/`fread`/`fwrite` in 64 KiB blocks (WASI `path_open`, `fd_read`,
// `fd_write`), then `stat` checks the destination's size (`path_filestat_get`). Errors are reported
// as `wasi_copy: PATH: strerror` with exit code 1, so the WASI errno each call returned is visible.
//
// Built with Debian's clang and wasi-libc (see programs/README.md):
//   clang --target=wasm32-wasi -O2 -Wl,--strip-debug -o programs/wasi_copy.wasm programs/wasi_copy.c
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static int fail(const char *path) {
    fprintf(stderr, "wasi_copy: %s: %s\n", path, strerror(errno));
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: wasi_copy SRC DST|-\n");
        return 2;
    }
    const char *src = argv[1], *dst = argv[2];
    int to_stdout = strcmp(dst, "-") == 0;
    FILE *in = fopen(src, "rb");
    if (!in) return fail(src);
    FILE *out = to_stdout ? stdout : fopen(dst, "wb");
    if (!out) return fail(dst);
    static char buf[64 * 1024];
    unsigned long long total = 0;
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
        if (fwrite(buf, 1, n, out) != n) return fail(dst);
        total += n;
    }
    if (ferror(in)) return fail(src);
    fclose(in);
    if (to_stdout) return fflush(stdout) == 0 ? 0 : fail("-");
    if (fclose(out) != 0) return fail(dst);
    struct stat st;
    if (stat(dst, &st) != 0) return fail(dst);
    if ((unsigned long long)st.st_size != total) {
        fprintf(stderr, "wasi_copy: %s: %lld bytes after copying %llu\n", dst, (long long)st.st_size, total);
        return 1;
    }
    printf("%s -> %s: %llu bytes\n", src, dst, total);
    return 0;
}
