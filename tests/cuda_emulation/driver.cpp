// tests/cuda_emulation/driver.cpp -- runs the kernels of minstn/ops/fast/kernels/*.cu on the
// CPU through cuda_shim.h, behind plain C functions that Python calls with ctypes.
//
// Build (what tests/test_cuda_source.py does):
//   g++ -std=c++17 -O1 -ffp-contract=off -shared -fPIC -pthread -I tests/cuda_emulation
//       -I minstn/ops/fast/kernels tests/cuda_emulation/driver.cpp -o libstn_emu.so
//
// One function per kernel and precision, named emu_<kernel>_f32 / _f64.  Its arguments are
// the launch configuration (blocks, threads) followed by exactly the kernel's own arguments,
// in the kernel's order, so that a stand-in for CuPy's RawKernel can forward the argument
// tuple that the launch code builds, unchanged (tests/test_cuda_source.py checks each argument
// against the kernel's instantiated signature first).  Arrays are C-contiguous; dU must be
// zero-filled, as on the GPU.  Each returns 0, or 1 when it refuses the launch.
//
// -ffp-contract=off: no fused multiply-add, as the GPU module (--fmad=false), so that the
// kernels that promise the array code's bits (adam_step, avgpool, col2im) give them here too.
#include "cuda_shim.h"

// The files of the one module, in minstn/ops/fast/cuda.py's KERNEL_FILES order.
#include "stn.cu"
#include "conv.cu"
#include "linear.cu"
#include "lstm.cu"
#include "train.cu"

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

// conv.cu: elementwise kernels, no __syncthreads.
#define EMU_CONV_COLUMNS(NAME, SUFFIX, T)                                                          \
    int emu_##NAME##_##SUFFIX(unsigned blocks, unsigned threads, const T* in, T* out, long long N,   \
                              long long C, long long H, long long W, long long kh, long long kw,     \
                              long long p, long long Ho, long long Wo) {                             \
        launch_serial(blocks, threads, [&] { NAME<T>(in, out, N, C, H, W, kh, kw, p, Ho, Wo); });    \
        return 0;                                                                                    \
    }
EMU_CONV_COLUMNS(im2col, f32, float)
EMU_CONV_COLUMNS(im2col, f64, double)
EMU_CONV_COLUMNS(col2im, f32, float)
EMU_CONV_COLUMNS(col2im, f64, double)

#define EMU_BIAS(NAME, SUFFIX, T)                                                                  \
    int emu_##NAME##_##SUFFIX(unsigned blocks, unsigned threads, const T* a, const T* b, T* out,      \
                              long long N, long long F, long long Ho, long long Wo, long long relu) { \
        launch_serial(blocks, threads, [&] { NAME<T>(a, b, out, N, F, Ho, Wo, relu); });             \
        return 0;                                                                                    \
    }
EMU_BIAS(bias_forward, f32, float)
EMU_BIAS(bias_forward, f64, double)
EMU_BIAS(maxpool_bias_forward, f32, float)
EMU_BIAS(maxpool_bias_forward, f64, double)

#define EMU_BIAS_RELU_BACKWARD(SUFFIX, T)                                                           \
    int emu_bias_relu_backward_##SUFFIX(unsigned blocks, unsigned threads, const T* dout, const T* out, \
                                        T* da, long long N, long long F, long long Ho, long long Wo) { \
        launch_serial(blocks, threads, [&] { bias_relu_backward<T>(dout, out, da, N, F, Ho, Wo); });  \
        return 0;                                                                                     \
    }
EMU_BIAS_RELU_BACKWARD(f32, float)
EMU_BIAS_RELU_BACKWARD(f64, double)

#define EMU_MAXPOOL_BIAS_BACKWARD(SUFFIX, T)                                                        \
    int emu_maxpool_bias_backward_##SUFFIX(unsigned blocks, unsigned threads, const T* dout,          \
                                           const T* a, const T* b, T* da, long long N, long long F,   \
                                           long long Ho, long long Wo, long long relu) {              \
        launch_serial(blocks, threads, [&] { maxpool_bias_backward<T>(dout, a, b, da, N, F, Ho, Wo, relu); }); \
        return 0;                                                                                     \
    }
EMU_MAXPOOL_BIAS_BACKWARD(f32, float)
EMU_MAXPOOL_BIAS_BACKWARD(f64, double)

#define EMU_AVGPOOL(NAME, SUFFIX, T)                                                              \
    int emu_##NAME##_##SUFFIX(unsigned blocks, unsigned threads, const T* in, T* out, long long NC, \
                              long long H, long long W, long long d) {                              \
        launch_serial(blocks, threads, [&] { NAME<T>(in, out, NC, H, W, d); });                     \
        return 0;                                                                                   \
    }
EMU_AVGPOOL(avgpool_forward, f32, float)
EMU_AVGPOOL(avgpool_forward, f64, double)
EMU_AVGPOOL(avgpool_backward, f32, float)
EMU_AVGPOOL(avgpool_backward, f64, double)

// linear.cu: elementwise.
int emu_relu_backward_f32(unsigned blocks, unsigned threads, const float* dout, const float* out, float* dx,
                          long long n) {
    launch_serial(blocks, threads, [&] { relu_backward<float>(dout, out, dx, n); });
    return 0;
}
int emu_relu_backward_f64(unsigned blocks, unsigned threads, const double* dout, const double* out, double* dx,
                          long long n) {
    launch_serial(blocks, threads, [&] { relu_backward<double>(dout, out, dx, n); });
    return 0;
}

#define EMU_DROPOUT_FORWARD(SUFFIX, T)                                                             \
    int emu_dropout_forward_##SUFFIX(unsigned blocks, unsigned threads, const T* x, const T* u,      \
                                     T* out, T* mask, long long n, T p, T scale) {                   \
        launch_serial(blocks, threads, [&] { dropout_forward<T>(x, u, out, mask, n, p, scale); });   \
        return 0;                                                                                    \
    }
EMU_DROPOUT_FORWARD(f32, float)
EMU_DROPOUT_FORWARD(f64, double)

#define EMU_LINEAR_RELU(SUFFIX, T)                                                                 \
    int emu_linear_relu_forward_##SUFFIX(unsigned blocks, unsigned threads, T* a, const T* b,       \
                                         long long N, long long M) {                                \
        launch_serial(blocks, threads, [&] { linear_relu_forward<T>(a, b, N, M); });                \
        return 0;                                                                                   \
    }                                                                                               \
    int emu_linear_relu_backward_##SUFFIX(unsigned blocks, unsigned threads, const T* dout,          \
                                          const T* out, T* da, T* db, long long N, long long M) {   \
        launch_serial(blocks, threads, [&] { linear_relu_backward<T>(dout, out, da, db, N, M); });  \
        return 0;                                                                                   \
    }
EMU_LINEAR_RELU(f32, float)
EMU_LINEAR_RELU(f64, double)

// lstm.cu: elementwise (forward) and one thread per hidden unit (backward), no __syncthreads.
#define EMU_LSTM_CELL_FORWARD(SUFFIX, T)                                                           \
    int emu_lstm_cell_forward_##SUFFIX(unsigned blocks, unsigned threads, const T* ax, const T* ah,  \
                                       const T* b, const T* c_prev, T* state, long long N,           \
                                       long long H) {                                                \
        launch_serial(blocks, threads, [&] { lstm_cell_forward<T>(ax, ah, b, c_prev, state, N, H); }); \
        return 0;                                                                                    \
    }
EMU_LSTM_CELL_FORWARD(f32, float)
EMU_LSTM_CELL_FORWARD(f64, double)

#define EMU_LSTM_CELL_BACKWARD(SUFFIX, T)                                                          \
    int emu_lstm_cell_backward_##SUFFIX(unsigned blocks, unsigned threads, const T* dh, const T* dc, \
                                        const T* c_prev, const T* state, T* da, T* dc_prev, T* db,   \
                                        long long N, long long H, long long has_dc) {                \
        launch_serial(blocks, threads,                                                               \
                      [&] { lstm_cell_backward<T>(dh, dc, c_prev, state, da, dc_prev, db, N, H, has_dc); }); \
        return 0;                                                                                    \
    }
EMU_LSTM_CELL_BACKWARD(f32, float)
EMU_LSTM_CELL_BACKWARD(f64, double)

// The recurrent transformer's steps: elementwise (forward, regressor) and one thread per hidden
// unit (backward), no __syncthreads.
#define EMU_THETAS_CELL_FORWARD(SUFFIX, T)                                                         \
    int emu_thetas_cell_forward_##SUFFIX(unsigned blocks, unsigned threads, const T* ax, const T* ah, \
                                         const T* b, T* state, T* S, long long N, long long H,      \
                                         long long steps, long long t, long long K) {               \
        launch_serial(blocks, threads,                                                              \
                      [&] { thetas_cell_forward<T>(ax, ah, b, state, S, N, H, steps, t, K); });     \
        return 0;                                                                                   \
    }
EMU_THETAS_CELL_FORWARD(f32, float)
EMU_THETAS_CELL_FORWARD(f64, double)

#define EMU_THETAS_REGRESS(SUFFIX, T)                                                              \
    int emu_thetas_regress_##SUFFIX(unsigned blocks, unsigned threads, const T* state, const T* Wr,  \
                                    const T* br, const T* step_b, T* thetas, T* S, long long N,     \
                                    long long H, long long steps, long long t, long long K,         \
                                    long long has_step) {                                           \
        launch_serial(blocks, threads, [&] {                                                        \
            thetas_regress<T>(state, Wr, br, step_b, thetas, S, N, H, steps, t, K, has_step);       \
        });                                                                                         \
        return 0;                                                                                   \
    }
EMU_THETAS_REGRESS(f32, float)
EMU_THETAS_REGRESS(f64, double)

#define EMU_THETAS_CELL_BACKWARD(SUFFIX, T)                                                        \
    int emu_thetas_cell_backward_##SUFFIX(unsigned blocks, unsigned threads, const T* dthetas,       \
                                          const T* g, const T* Wr, const T* state, T* dc, T* da,     \
                                          T* dtheta, T* db, T* dbr, T* dstep, long long N,           \
                                          long long H, long long steps, long long t, long long K) {  \
        launch_serial(blocks, threads, [&] {                                                        \
            thetas_cell_backward<T>(dthetas, g, Wr, state, dc, da, dtheta, db, dbr, dstep, N, H,    \
                                    steps, t, K);                                                   \
        });                                                                                         \
        return 0;                                                                                   \
    }
EMU_THETAS_CELL_BACKWARD(f32, float)
EMU_THETAS_CELL_BACKWARD(f64, double)

// train.cu: the loss reduces in shared memory (__syncthreads): one std::thread per CUDA thread.
int emu_train_reduce_block() { return TRAIN_REDUCE_BLOCK; }

#define EMU_SOFTMAX_CROSS_ENTROPY(SUFFIX, T)                                                        \
    int emu_softmax_cross_entropy_##SUFFIX(unsigned blocks, unsigned threads, const T* logits,        \
                                           const long long* labels, T* dlogits, T* loss, long long M, \
                                           long long K) {                                             \
        if (threads > TRAIN_REDUCE_BLOCK || blocks != 1) return 1; /* one block, shared array */      \
        launch_threads(blocks, threads,                                                               \
                       [&] { softmax_cross_entropy<T>(logits, labels, dlogits, loss, M, K); });       \
        return 0;                                                                                     \
    }
EMU_SOFTMAX_CROSS_ENTROPY(f32, float)
EMU_SOFTMAX_CROSS_ENTROPY(f64, double)

#define EMU_SUM_SQUARES(SUFFIX, T)                                                                  \
    int emu_sum_squares_##SUFFIX(unsigned blocks, unsigned threads, const T* x, double* partial,      \
                                 long long n) {                                                       \
        launch_serial(blocks, threads, [&] { sum_squares<T>(x, partial, n); });                       \
        return 0;                                                                                     \
    }
EMU_SUM_SQUARES(f32, float)
EMU_SUM_SQUARES(f64, double)

#define EMU_STEP_REPORT(SUFFIX, T)                                                                  \
    int emu_step_report_##SUFFIX(unsigned blocks, unsigned threads, const double* partial,            \
                                 long long P, const T* loss, const T* logits, const long long* labels, \
                                 long long M, long long K, double* report) {                          \
        if (threads > TRAIN_REDUCE_BLOCK || blocks != 1) return 1; /* one block, shared arrays */      \
        launch_threads(blocks, threads,                                                               \
                       [&] { step_report<T>(partial, P, loss, logits, labels, M, K, report); });      \
        return 0;                                                                                     \
    }
EMU_STEP_REPORT(f32, float)
EMU_STEP_REPORT(f64, double)

#define EMU_ADAM_STEP(SUFFIX, T)                                                                    \
    int emu_adam_step_##SUFFIX(unsigned blocks, unsigned threads, T* p, T* m, T* v, const T* g,       \
                               const T* lr, long long n, T grad_scale, T weight_decay, T beta1,       \
                               T one_minus_beta1, T beta2, T one_minus_beta2, T m_hat_scale,          \
                               T v_hat_scale, T eps) {                                                \
        launch_serial(blocks, threads, [&] {                                                          \
            adam_step<T>(p, m, v, g, lr, n, grad_scale, weight_decay, beta1, one_minus_beta1, beta2,  \
                         one_minus_beta2, m_hat_scale, v_hat_scale, eps);                             \
        });                                                                                           \
        return 0;                                                                                     \
    }
EMU_ADAM_STEP(f32, float)
EMU_ADAM_STEP(f64, double)

}  // extern "C"
