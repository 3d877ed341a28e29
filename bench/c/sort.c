// Sorting and hashing 400k integers with libc's qsort and an open-addressing table: byte-, word- and
// pointer-sized memory traffic, calls through a function pointer, malloc/free.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define COUNT 400000

static int cmp(const void *x, const void *y) {
    uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
    return (a > b) - (a < b);
}

int main(void) {
    uint32_t *v = malloc(sizeof(uint32_t) * COUNT);
    uint32_t s = 12345;
    for (int i = 0; i < COUNT; i++) {
        s = s * 1103515245u + 12345u;
        v[i] = s >> 8;
    }
    qsort(v, COUNT, sizeof(uint32_t), cmp);
    uint32_t size = 1u << 20, *table = calloc(size, sizeof(uint32_t)), distinct = 0;
    for (int i = 0; i < COUNT; i++) {
        uint32_t h = (v[i] * 2654435761u) & (size - 1);
        while (table[h] != 0 && table[h] != v[i] + 1) h = (h + 1) & (size - 1);
        if (table[h] == 0) {
            table[h] = v[i] + 1;
            distinct++;
        }
    }
    uint64_t check = 0;
    for (int i = 0; i < COUNT; i += 1000) check += v[i];
    printf("%u %llu\n", distinct, (unsigned long long)check);
    free(table);
    free(v);
    return 0;
}
