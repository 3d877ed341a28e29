// Dense matrix multiply, as in sightglass's C kernels: loads and stores of f64 through linear memory.
#include <stdio.h>
#include <stdlib.h>

#define N 256

int main(void) {
    double *a = malloc(sizeof(double) * N * N), *b = malloc(sizeof(double) * N * N);
    double *c = calloc(N * N, sizeof(double));
    for (int i = 0; i < N * N; i++) {
        a[i] = (double)(i % 17) * 0.5;
        b[i] = (double)(i % 13) * 0.25;
    }
    for (int rep = 0; rep < 80; rep++)
        for (int i = 0; i < N; i++)
            for (int k = 0; k < N; k++) {
                double aik = a[i * N + k];
                for (int j = 0; j < N; j++) c[i * N + j] += aik * b[k * N + j];
            }
    double sum = 0;
    for (int i = 0; i < N * N; i++) sum += c[i];
    printf("%.1f\n", sum);
    return 0;
}
