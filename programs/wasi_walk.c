// wasi_walk: list a directory tree, as `find DIR` with types and sizes, through wasi-libc's
// <dirent.h> and <sys/stat.h>.
//
//   vmrun --dir HOST::/data wasi_walk.wasm /data       one line per entry, then a summary line
//   vmrun --dir HOST::/data wasi_walk.wasm -s /data    the summary line only
//
// Each directory is read with `opendir`/`readdir` (WASI `path_open` with O_DIRECTORY, `fd_readdir`
// with cookies), its names sorted with `qsort` (so the output does not depend on the file
// system's order), and each entry is examined with `lstat` (`path_filestat_get` without following
// links) and, for a symbolic link, `readlink` (`path_readlink`). Lines are
//   d PATH/          a directory (then its contents)
//   f PATH SIZE      a regular file
//   l PATH -> TARGET a symbolic link (not followed)
//
// Built with Debian's clang and wasi-libc (see programs/README.md):
//   clang --target=wasm32-wasi -O2 -Wl,--strip-debug -o programs/wasi_walk.wasm programs/wasi_walk.c
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static unsigned long dirs, files, links;
static unsigned long long bytes;
static int quiet, failed;

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void walk(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "wasi_walk: %s: %s\n", dir, strerror(errno));
        failed = 1;
        return;
    }
    char **names = NULL;
    size_t count = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (count == cap) {
            cap = cap ? cap * 2 : 16;
            names = realloc(names, cap * sizeof *names);
        }
        names[count++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, count, sizeof *names, by_name);
    for (size_t i = 0; i < count; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        struct stat st;
        if (lstat(path, &st) != 0) {
            fprintf(stderr, "wasi_walk: %s: %s\n", path, strerror(errno));
            failed = 1;
        } else if (S_ISDIR(st.st_mode)) {
            dirs++;
            if (!quiet) printf("d %s/\n", path);
            walk(path);
        } else if (S_ISLNK(st.st_mode)) {
            char target[4096];
            ssize_t n = readlink(path, target, sizeof target - 1);
            target[n < 0 ? 0 : n] = 0;
            links++;
            if (!quiet) printf("l %s -> %s\n", path, target);
        } else {
            files++;
            bytes += (unsigned long long)st.st_size;
            if (!quiet) printf("f %s %lld\n", path, (long long)st.st_size);
        }
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv) {
    int first = 1;
    if (argc > 1 && strcmp(argv[1], "-s") == 0) {
        quiet = 1;
        first = 2;
    }
    if (argc != first + 1) {
        fprintf(stderr, "usage: wasi_walk [-s] DIR\n");
        return 2;
    }
    walk(argv[first]);
    printf("%s: %lu directories, %lu files, %lu links, %llu bytes\n", argv[first], dirs, files, links, bytes);
    return failed;
}
