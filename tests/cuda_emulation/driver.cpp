// tests/cuda_emulation/driver.cpp -- runs the kernels of minstn/ops/kernels/stn.cu on the
// CPU through cuda_shim.h, behind plain C functions that Python calls with ctypes.
//
// Build (what tests/test_cuda_source.py does):
//   g++ -std=c++17 -O1 -shared -fPIC -pthread -I tests/cuda_emulation -I minstn/ops/kernels
//       tests/cuda_emulation/driver.cpp -o libstn_emu.so
//
// Each function takes the same pointers and sizes as the kernel, plus the launch
// configuration (blocks, threads), and returns 0.  Arrays are C-contiguous, float32 (_f32)
// or float64 (_f64); dU must be zero-filled, as on the GPU.
#include "cuda_shim.h"

#include "stn.cu"

template <typename T>
static int run_affine_grid_forward(const T* theta, T* grid, long long N, long long Ho, long long Wo,
                                   unsigned blocks, unsigned threads) {
    launch_serial(blocks, threads, [&] { affine_grid_forward<T>(theta, grid, N, Ho, Wo); });
    return 0;
}

template <typename T>
static int run_affine_grid_backward(const T* dgrid, T* dtheta, long long N, long long Ho, long long Wo,
                                    unsigned threads) {
    // One block per batch item, as in minstn/ops/cuda.py; the kernel uses __syncthreads.
    launch_threads((unsigned)N, threads, [&] { affine_grid_backward<T>(dgrid, dtheta, Ho, Wo); });
    return 0;
}

template <typename T>
static int run_bilinear_sample_forward(const T* U, const T* grid, T* V, long long N, long long C, long long H,
                                       long long W, long long Ho, long long Wo, unsigned blocks, unsigned threads) {
    launch_serial(blocks, threads, [&] { bilinear_sample_forward<T>(U, grid, V, N, C, H, W, Ho, Wo); });
    return 0;
}

template <typename T>
static int run_bilinear_sample_backward(const T* dV, const T* U, const T* grid, T* dU, T* dgrid, long long N,
                                        long long C, long long H, long long W, long long Ho, long long Wo,
                                        unsigned blocks, unsigned threads) {
    launch_serial(blocks, threads, [&] { bilinear_sample_backward<T>(dV, U, grid, dU, dgrid, N, C, H, W, Ho, Wo); });
    return 0;
}

extern "C" {

int emu_reduce_block() { return STN_REDUCE_BLOCK; }

int emu_affine_grid_forward_f32(const float* theta, float* grid, long long N, long long Ho, long long Wo,
                                unsigned blocks, unsigned threads) {
    return run_affine_grid_forward(theta, grid, N, Ho, Wo, blocks, threads);
}
int emu_affine_grid_forward_f64(const double* theta, double* grid, long long N, long long Ho, long long Wo,
                                unsigned blocks, unsigned threads) {
    return run_affine_grid_forward(theta, grid, N, Ho, Wo, blocks, threads);
}

int emu_affine_grid_backward_f32(const float* dgrid, float* dtheta, long long N, long long Ho, long long Wo,
                                 unsigned threads) {
    return run_affine_grid_backward(dgrid, dtheta, N, Ho, Wo, threads);
}
int emu_affine_grid_backward_f64(const double* dgrid, double* dtheta, long long N, long long Ho, long long Wo,
                                 unsigned threads) {
    return run_affine_grid_backward(dgrid, dtheta, N, Ho, Wo, threads);
}

int emu_bilinear_sample_forward_f32(const float* U, const float* grid, float* V, long long N, long long C,
                                    long long H, long long W, long long Ho, long long Wo, unsigned blocks,
                                    unsigned threads) {
    return run_bilinear_sample_forward(U, grid, V, N, C, H, W, Ho, Wo, blocks, threads);
}
int emu_bilinear_sample_forward_f64(const double* U, const double* grid, double* V, long long N, long long C,
                                    long long H, long long W, long long Ho, long long Wo, unsigned blocks,
                                    unsigned threads) {
    return run_bilinear_sample_forward(U, grid, V, N, C, H, W, Ho, Wo, blocks, threads);
}

int emu_bilinear_sample_backward_f32(const float* dV, const float* U, const float* grid, float* dU, float* dgrid,
                                     long long N, long long C, long long H, long long W, long long Ho, long long Wo,
                                     unsigned blocks, unsigned threads) {
    return run_bilinear_sample_backward(dV, U, grid, dU, dgrid, N, C, H, W, Ho, Wo, blocks, threads);
}
int emu_bilinear_sample_backward_f64(const double* dV, const double* U, const double* grid, double* dU,
                                     double* dgrid, long long N, long long C, long long H, long long W, long long Ho,
                                     long long Wo, unsigned blocks, unsigned threads) {
    return run_bilinear_sample_backward(dV, U, grid, dU, dgrid, N, C, H, W, Ho, Wo, blocks, threads);
}

}  // extern "C"
