// tests/cuda_emulation/driver.cpp -- runs the kernels of minstn/ops/kernels/stn.cu on the
// CPU through cuda_shim.h, behind plain C functions that Python calls with ctypes.
//
// Build (what tests/test_cuda_source.py does):
//   g++ -std=c++17 -O1 -shared -fPIC -pthread -I tests/cuda_emulation -I minstn/ops/kernels
//       tests/cuda_emulation/driver.cpp -o libstn_emu.so
//
// One function per kernel and precision, named emu_<kernel>_f32 / _f64.  Its arguments are
// the launch configuration (blocks, threads) followed by exactly the kernel's own arguments,
// in the kernel's order, so that a stand-in for CuPy's RawKernel can forward the argument
// tuple that minstn/ops/cuda.py builds, unchanged.  Arrays are C-contiguous; dU must be
// zero-filled, as on the GPU.  Each returns 0.
#include "cuda_shim.h"

#include "stn.cu"

extern "C" {

// The shared-memory size of affine_grid_backward: a block may have at most this many threads.
int emu_reduce_block() { return STN_REDUCE_BLOCK; }

// Point kernels: no __syncthreads, so the (block, thread) pairs run one after another.
#define EMU_AFFINE_GRID_FORWARD(SUFFIX, T)                                                       \
    int emu_affine_grid_forward_##SUFFIX(unsigned blocks, unsigned threads, const T* theta,      \
                                         T* grid, long long N, long long Ho, long long Wo) {     \
        launch_serial(blocks, threads, [&] { affine_grid_forward<T>(theta, grid, N, Ho, Wo); }); \
        return 0;                                                                                \
    }
EMU_AFFINE_GRID_FORWARD(f32, float)
EMU_AFFINE_GRID_FORWARD(f64, double)

// The reduction kernel uses __syncthreads: one std::thread per CUDA thread of a block.
#define EMU_AFFINE_GRID_BACKWARD(SUFFIX, T)                                                      \
    int emu_affine_grid_backward_##SUFFIX(unsigned blocks, unsigned threads, const T* dgrid,     \
                                          T* dtheta, long long Ho, long long Wo) {               \
        if (threads > STN_REDUCE_BLOCK) return 1; /* would overrun the shared array */           \
        launch_threads(blocks, threads, [&] { affine_grid_backward<T>(dgrid, dtheta, Ho, Wo); }); \
        return 0;                                                                                \
    }
EMU_AFFINE_GRID_BACKWARD(f32, float)
EMU_AFFINE_GRID_BACKWARD(f64, double)

#define EMU_BILINEAR_SAMPLE_FORWARD(SUFFIX, T)                                                    \
    int emu_bilinear_sample_forward_##SUFFIX(unsigned blocks, unsigned threads, const T* U,       \
                                             const T* grid, T* V, long long N, long long C,       \
                                             long long H, long long W, long long Ho,              \
                                             long long Wo) {                                      \
        launch_serial(blocks, threads,                                                            \
                      [&] { bilinear_sample_forward<T>(U, grid, V, N, C, H, W, Ho, Wo); });       \
        return 0;                                                                                 \
    }
EMU_BILINEAR_SAMPLE_FORWARD(f32, float)
EMU_BILINEAR_SAMPLE_FORWARD(f64, double)

#define EMU_BILINEAR_SAMPLE_BACKWARD(SUFFIX, T)                                                   \
    int emu_bilinear_sample_backward_##SUFFIX(unsigned blocks, unsigned threads, const T* dV,     \
                                              const T* U, const T* grid, T* dU, T* dgrid,         \
                                              long long N, long long C, long long H, long long W, \
                                              long long Ho, long long Wo) {                       \
        launch_serial(blocks, threads, [&] {                                                      \
            bilinear_sample_backward<T>(dV, U, grid, dU, dgrid, N, C, H, W, Ho, Wo);              \
        });                                                                                       \
        return 0;                                                                                 \
    }
EMU_BILINEAR_SAMPLE_BACKWARD(f32, float)
EMU_BILINEAR_SAMPLE_BACKWARD(f64, double)

}  // extern "C"
