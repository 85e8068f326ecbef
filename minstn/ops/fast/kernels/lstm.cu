// minstn/ops/fast/kernels/lstm.cu -- CUDA kernels of one LSTM cell step: the pointwise gate
// math of the forward and of the backward, each as one kernel.  The matrix products
// (x @ Wx, h_prev @ Wh and the four of the backward) stay with cuBLAS; these kernels do
// everything between them, which the array code does in some twenty elementwise passes.
//
// Each kernel is a port of minstn/ops/lstm.py (_cell_forward, lstm_cell_backward), operation
// for operation in the same order (the module is compiled without fused multiply-adds), so
// the only differences from the array code are those of the math library's tanh.  The launch
// code is minstn/ops/fast/lstm.py.
//
// Shape legend (every array is C-contiguous, row-major):
//   N   batch size
//   H   hidden units; the gates i, f, g, o are the column blocks [0, H), [H, 2H), [2H, 3H),
//       [3H, 4H) of the (N, 4H) pre-activations, as in PyTorch's nn.LSTMCell
//   ax      (N, 4H)     x @ Wx
//   ah      (N, 4H)     h_prev @ Wh
//   b       (4H,)
//   state   (7, N, H)   h, c, i, f, g, o, tanh(c): the outputs and what the backward needs
//   da      (N, 4H)     gradient of the pre-activations
//
// Gradient rule: da and dc_prev are written with "=" by the thread that owns the element;
// db[j] is the sum over the batch of da[:, j], kept in the registers of the one thread that
// owns column j and written once: no atomics, repeatable bit for bit.

// tanh for each precision (tanhf keeps float arithmetic on the GPU).
__device__ __forceinline__ float lstm_tanh(float v) { return tanhf(v); }
__device__ __forceinline__ double lstm_tanh(double v) { return tanh(v); }

// sigmoid(a) = 1 / (1 + exp(-a)), written as 0.5 * (1 + tanh(a / 2)) so that it never
// overflows: minstn.ops.lstm.sigmoid, operation for operation.
template <typename T>
__device__ __forceinline__ T lstm_sigmoid(T a) {
    return T(0.5) * (T(1) + lstm_tanh(T(0.5) * a));
}

// ---------------------------------------------------------------------------------------
// Forward.  One thread per (n, j), n < N, j < H:
//   a_gate = (ax + ah) + b       (a = x @ Wx;  a += h_prev @ Wh;  a += b)
//   i = sigmoid(a_i), f = sigmoid(a_f), g = tanh(a_g), o = sigmoid(a_o)
//   c = f * c_prev + i * g,  h = o * tanh(c)
// writes state[:, n, j] = (h, c, i, f, g, o, tanh(c)).
// ---------------------------------------------------------------------------------------
template <typename T>
__global__ void lstm_cell_forward(const T* __restrict__ ax,      // (N, 4H)
                                  const T* __restrict__ ah,      // (N, 4H)
                                  const T* __restrict__ b,       // (4H,)
                                  const T* __restrict__ c_prev,  // (N, H)
                                  T* __restrict__ state,         // (7, N, H)
                                  long long N, long long H) {
    const long long NH = N * H;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < NH; e += step) {
        const long long n = e / H;
        const long long j = e - n * H;
        const long long r = n * 4 * H + j;  // column j of gate 0 in row n of ax and ah
        const T i = lstm_sigmoid((ax[r] + ah[r]) + b[j]);
        const T f = lstm_sigmoid((ax[r + H] + ah[r + H]) + b[H + j]);
        const T g = lstm_tanh((ax[r + 2 * H] + ah[r + 2 * H]) + b[2 * H + j]);
        const T o = lstm_sigmoid((ax[r + 3 * H] + ah[r + 3 * H]) + b[3 * H + j]);
        const T c = f * c_prev[e] + i * g;
        const T tc = lstm_tanh(c);
        state[e] = o * tc;       // h
        state[NH + e] = c;
        state[2 * NH + e] = i;
        state[3 * NH + e] = f;
        state[4 * NH + e] = g;
        state[5 * NH + e] = o;
        state[6 * NH + e] = tc;
    }
}

// ---------------------------------------------------------------------------------------
// Backward.  One thread per hidden unit j, looping over the batch (so that it can sum db):
//   dc_total = dh * o * (1 - tanh(c)^2) [+ dc]
//   do = dh * tanh(c);  di = dc_total * g;  df = dc_total * c_prev;  dg = dc_total * i
//   dc_prev = dc_total * f
//   da = (di * i * (1 - i),  df * f * (1 - f),  dg * (1 - g^2),  do * o * (1 - o))
//   db[gate, j] = sum over n of da[n, gate, j]
// has_dc = 0 means no upstream dc (lstm_cell_backward's dc=None); dc is then not read.
// The four matrix products that follow (dWh, dh_prev, dWx, dx) are the launch code's.
// Adjacent threads hold adjacent j, so every read and write is coalesced.  The price of summing
// db here instead of in a separate launch: only H threads (256), each looping over the N rows;
// at the batch sizes of training (64-256) that is tens of microseconds, about one launch's cost
// (to be timed on a GPU: docs/gpu.md).
// ---------------------------------------------------------------------------------------
template <typename T>
__global__ void lstm_cell_backward(const T* __restrict__ dh,      // (N, H)
                                   const T* __restrict__ dc,      // (N, H), read only if has_dc
                                   const T* __restrict__ c_prev,  // (N, H)
                                   const T* __restrict__ state,   // (7, N, H) from the forward
                                   T* __restrict__ da,            // (N, 4H)
                                   T* __restrict__ dc_prev,       // (N, H)
                                   T* __restrict__ db,            // (4H,)
                                   long long N, long long H, long long has_dc) {
    const long long NH = N * H;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < H; j += step) {
        T sum_i = T(0), sum_f = T(0), sum_g = T(0), sum_o = T(0);
        for (long long n = 0; n < N; ++n) {
            const long long e = n * H + j;
            const T i = state[2 * NH + e], f = state[3 * NH + e], g = state[4 * NH + e];
            const T o = state[5 * NH + e], tc = state[6 * NH + e];
            T dc_total = dh[e] * o * (T(1) - tc * tc);  // through h = o * tanh(c)
            if (has_dc) dc_total = dc_total + dc[e];
            const T d_o = dh[e] * tc;
            const T d_i = dc_total * g;
            const T d_f = dc_total * c_prev[e];
            const T d_g = dc_total * i;
            dc_prev[e] = dc_total * f;
            const long long r = n * 4 * H + j;
            const T da_i = d_i * i * (T(1) - i);
            const T da_f = d_f * f * (T(1) - f);
            const T da_g = d_g * (T(1) - g * g);
            const T da_o = d_o * o * (T(1) - o);
            da[r] = da_i;
            da[r + H] = da_f;
            da[r + 2 * H] = da_g;
            da[r + 3 * H] = da_o;
            sum_i += da_i;
            sum_f += da_f;
            sum_g += da_g;
            sum_o += da_o;
        }
        db[j] = sum_i;
        db[H + j] = sum_f;
        db[2 * H + j] = sum_g;
        db[3 * H + j] = sum_o;
    }
}

// ---------------------------------------------------------------------------------------
// The float and double kernels, instantiated for nvcc and for CuPy's name_expressions.
// ---------------------------------------------------------------------------------------
template __global__ void lstm_cell_forward<float>(const float*, const float*, const float*, const float*, float*,
                                                  long long, long long);
template __global__ void lstm_cell_forward<double>(const double*, const double*, const double*, const double*,
                                                   double*, long long, long long);
template __global__ void lstm_cell_backward<float>(const float*, const float*, const float*, const float*, float*,
                                                   float*, float*, long long, long long, long long);
template __global__ void lstm_cell_backward<double>(const double*, const double*, const double*, const double*,
                                                    double*, double*, double*, long long, long long, long long);
