// minstn/ops/fast/kernels/lstm.cu -- CUDA kernels of one LSTM cell step: the pointwise gate
// math of the forward and of the backward, each as one kernel.  The matrix products
// (x @ Wx, h_prev @ Wh and the four of the backward) stay with cuBLAS; these kernels do
// everything between them, which the array code does in some twenty elementwise passes.
// Then the same gate math for the recurrent transformer's T steps, whose kernels also do the
// small work around each step (the regressor, the fed-back theta, the sums over the steps).
//
// Each kernel is a port of minstn/ops/lstm.py (_cell_forward, lstm_cell_backward), operation
// for operation in the same order (the module is compiled without fused multiply-adds), so
// the only differences from the array code are those of the math library's tanh.  The launch
// code is minstn/ops/fast/lstm.py (and minstn/ops/fast/thetas.py for the T steps).
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

// The gate math of one unit's forward, minstn.ops.lstm.lstm_cell_forward operation for operation:
// from row r = n * 4H + j of the two products ax and ah, the bias b and c_prev, the seven
// quantities q = (h, c, i, f, g, o, tanh(c)).  Both forward kernels below call it.
template <typename T>
__device__ __forceinline__ void lstm_gates_forward(const T* __restrict__ ax, const T* __restrict__ ah,
                                                   const T* __restrict__ b, long long r, long long j, long long H,
                                                   T c_prev, T* q) {
    const T i = lstm_sigmoid((ax[r] + ah[r]) + b[j]);
    const T f = lstm_sigmoid((ax[r + H] + ah[r + H]) + b[H + j]);
    const T g = lstm_tanh((ax[r + 2 * H] + ah[r + 2 * H]) + b[2 * H + j]);
    const T o = lstm_sigmoid((ax[r + 3 * H] + ah[r + 3 * H]) + b[3 * H + j]);
    const T c = f * c_prev + i * g;
    const T tc = lstm_tanh(c);
    q[0] = o * tc;  // h
    q[1] = c;
    q[2] = i;
    q[3] = f;
    q[4] = g;
    q[5] = o;
    q[6] = tc;
}

// The gate math of one unit's backward, minstn.ops.lstm.lstm_cell_backward operation for
// operation: from dh, the gradient dc_next that reaches c from the next step (used if has_dc)
// and the forward's c_prev, i, f, g, o, tanh(c), the gates' pre-activation gradients
// da4 = (da_i, da_f, da_g, da_o); returns dc_prev.  Both backward kernels below call it.
template <typename T>
__device__ __forceinline__ T lstm_gates_backward(T dh, T dc_next, bool has_dc, T c_prev, T i, T f, T g, T o,
                                                 T tc, T* da4) {
    T dc_total = dh * o * (T(1) - tc * tc);  // through h = o * tanh(c)
    if (has_dc) dc_total = dc_total + dc_next;
    const T d_o = dh * tc;
    const T d_i = dc_total * g;
    const T d_f = dc_total * c_prev;
    const T d_g = dc_total * i;
    da4[0] = d_i * i * (T(1) - i);
    da4[1] = d_f * f * (T(1) - f);
    da4[2] = d_g * (T(1) - g * g);
    da4[3] = d_o * o * (T(1) - o);
    return dc_total * f;
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
        T q[7];
        lstm_gates_forward(ax, ah, b, r, j, H, c_prev[e], q);
        for (int k = 0; k < 7; ++k) state[k * NH + e] = q[k];
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
        T sum4[4] = {T(0), T(0), T(0), T(0)};  // db of the thread's four gate columns
        for (long long n = 0; n < N; ++n) {
            const long long e = n * H + j;
            const T i = state[2 * NH + e], f = state[3 * NH + e], g = state[4 * NH + e];
            const T o = state[5 * NH + e], tc = state[6 * NH + e];
            T da4[4];
            dc_prev[e] = lstm_gates_backward(dh[e], has_dc ? dc[e] : T(0), has_dc != 0, c_prev[e], i, f, g, o,
                                             tc, da4);
            const long long r = n * 4 * H + j;
            for (int k = 0; k < 4; ++k) {
                da[r + k * H] = da4[k];
                sum4[k] += da4[k];
            }
        }
        for (int k = 0; k < 4; ++k) db[k * H + j] = sum4[k];
    }
}

// ---------------------------------------------------------------------------------------
// The recurrent transformer's T steps (minstn/ops/thetas.py, recurrent_thetas_forward and
// _backward; launch code minstn/ops/fast/thetas.py).  The cell's input at step t is
// x_t = [f, theta_{t-1}] (K = 6, feedback) or f (K = 0).  The features' part of x_t @ Wx is the
// same at every step, so the launch code multiplies it once (ax = f @ Wx[:F]); what changes from
// step to step, s_t = [theta_{t-1}, h_{t-1}], sits in one buffer S and meets [Wx[F:]; Wh] in one
// product per step (ah = S[t] @ W_s).  The kernels below write each step's h and theta straight
// into S[t + 1], so no copy or concatenation runs between the steps.
//
//   ax      (N, 4H)          f @ Wx[:F]
//   ah      (N, 4H)          S[t] @ W_s
//   state   (7, T, N, H)     h, c, i, f, g, o, tanh(c) of every step
//   S       (T, N, K + H)    row n of step t: [theta_{t-1} (K), h_{t-1} (H)]; S[0] = [theta_0, 0]
//   thetas  (N, T, 6)        the output
// ---------------------------------------------------------------------------------------

// Forward of the cell at step t.  One thread per (n, j): lstm_cell_forward's gate math with
// a = (ax + ah) + b and c_prev = c_{t-1} (0 at t = 0); writes state[:, t, n, j] and h into
// S[t + 1, n, K + j] (the next step's input).
template <typename T>
__global__ void thetas_cell_forward(const T* __restrict__ ax,  // (N, 4H)
                                    const T* __restrict__ ah,  // (N, 4H)
                                    const T* __restrict__ b,   // (4H,)
                                    T* __restrict__ state,     // (7, T, N, H)
                                    T* __restrict__ S,         // (T, N, K + H)
                                    long long N, long long H, long long steps, long long t, long long K) {
    const long long NH = N * H;
    const long long TNH = steps * NH;  // one quantity of state, all steps
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < NH; e += stride) {
        const long long n = e / H;
        const long long j = e - n * H;
        const long long r = n * 4 * H + j;  // column j of gate 0 in row n of ax and ah
        const T c_prev = t > 0 ? state[TNH + (t - 1) * NH + e] : T(0);
        T q[7];
        lstm_gates_forward(ax, ah, b, r, j, H, c_prev, q);
        const long long s = t * NH + e;  // (t, n, j) in one quantity of state
        for (int k = 0; k < 7; ++k) state[k * TNH + s] = q[k];
        if (t + 1 < steps) S[((t + 1) * N + n) * (K + H) + K + j] = q[0];  // h
    }
}

// The regressor at step t.  One thread per (n, k), k < 6:
//   theta_t[n, k] = (sum_j h_t[n, j] Wr[j, k] + br[k]) [+ step_b[t, k]]
// (linear_forward's x @ w, += b, then the step's own bias), written to thetas[n, t, k] and, with
// feedback (K = 6), to S[t + 1, n, k], the next step's input.  has_step = 0: no step bias
// (step_b is then not read).  The sum over j runs in order, in registers.
template <typename T>
__global__ void thetas_regress(const T* __restrict__ state,   // (7, T, N, H): h_t = state[0, t]
                               const T* __restrict__ Wr,      // (H, 6)
                               const T* __restrict__ br,      // (6,)
                               const T* __restrict__ step_b,  // (T, 6), read only if has_step
                               T* __restrict__ thetas,        // (N, T, 6)
                               T* __restrict__ S,             // (T, N, K + H)
                               long long N, long long H, long long steps, long long t, long long K,
                               long long has_step) {
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < N * 6; e += stride) {
        const long long n = e / 6;
        const long long k = e - n * 6;
        const T* h = state + (t * N + n) * H;  // h_t[n, :]
        T acc = T(0);
        for (long long j = 0; j < H; ++j) acc += h[j] * Wr[j * 6 + k];
        T theta = acc + br[k];
        if (has_step) theta = theta + step_b[t * 6 + k];
        thetas[(n * steps + t) * 6 + k] = theta;
        if (K > 0 && t + 1 < steps) S[((t + 1) * N + n) * (K + H) + k] = theta;
    }
}

// Backward of step t (t = T-1 first).  One thread per hidden unit j, looping over the batch,
// as lstm_cell_backward; for each row n:
//   dtheta = dthetas[n, t] + dfed        dfed = g[n, :K], what reached theta_t through step t+1's input
//   dh     = dtheta @ Wr^T + dh_next     dh_next = g[n, K:], from step t+1 (g = da_{t+1} @ W_s^T)
//   the gate math of lstm_cell_backward with dc from step t+1; da_t, and dc_prev into dc
// At the last step (t = T-1) nothing comes from step t+1: g and dc are not read.  Sums, kept in
// registers and written once per step: db += da_t over the batch (the thread's four gate columns;
// "=" at the last step), and, by the thread of j = 0, dtheta_t itself (for the regressor's weight
// gradient, one product after the loop), dstep[t] = its sum over the batch and dbr += dstep[t].
// So every sum over the steps adds in the array code's order, t = T-1 first.
template <typename T>
__global__ void thetas_cell_backward(const T* __restrict__ dthetas,  // (N, T, 6) from the glimpses
                                     const T* __restrict__ g,        // (N, K + H), not read at t = T-1
                                     const T* __restrict__ Wr,       // (H, 6)
                                     const T* __restrict__ state,    // (7, T, N, H) from the forward
                                     T* __restrict__ dc,             // (N, H): in dc_t, out dc_{t-1}
                                     T* __restrict__ da,             // (T, N, 4H): writes da_t
                                     T* __restrict__ dtheta,         // (T, N, 6): writes dtheta_t
                                     T* __restrict__ db,             // (4H,)
                                     T* __restrict__ dbr,            // (6,)
                                     T* __restrict__ dstep,          // (T, 6): writes row t
                                     long long N, long long H, long long steps, long long t, long long K) {
    const long long NH = N * H;
    const long long TNH = steps * NH;
    const bool last = t == steps - 1;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < H; j += stride) {
        T sum4[4] = {T(0), T(0), T(0), T(0)};  // db of the thread's four gate columns
        T sum_theta[6] = {T(0), T(0), T(0), T(0), T(0), T(0)};
        for (long long n = 0; n < N; ++n) {
            T d[6];  // dtheta_t[n, :]
            T dh = T(0);
            for (long long k = 0; k < 6; ++k) {
                d[k] = dthetas[(n * steps + t) * 6 + k];
                if (!last && k < K) d[k] = d[k] + g[n * (K + H) + k];
                dh += d[k] * Wr[j * 6 + k];
            }
            if (!last) dh = dh + g[n * (K + H) + K + j];
            const long long e = n * H + j;
            const long long s = t * NH + e;
            const T c_prev = t > 0 ? state[TNH + (t - 1) * NH + e] : T(0);
            const T i = state[2 * TNH + s], f = state[3 * TNH + s], gg = state[4 * TNH + s];
            const T o = state[5 * TNH + s], tc = state[6 * TNH + s];
            T da4[4];
            dc[e] = lstm_gates_backward(dh, last ? T(0) : dc[e], !last, c_prev, i, f, gg, o, tc, da4);
            const long long r = (t * N + n) * 4 * H + j;
            for (int k = 0; k < 4; ++k) {
                da[r + k * H] = da4[k];
                sum4[k] += da4[k];
            }
            if (j == 0) {
                for (long long k = 0; k < 6; ++k) {
                    dtheta[(t * N + n) * 6 + k] = d[k];
                    sum_theta[k] += d[k];
                }
            }
        }
        for (int k = 0; k < 4; ++k) db[k * H + j] = last ? sum4[k] : db[k * H + j] + sum4[k];
        if (j == 0) {
            for (long long k = 0; k < 6; ++k) {
                dstep[t * 6 + k] = sum_theta[k];
                dbr[k] = last ? sum_theta[k] : dbr[k] + sum_theta[k];
            }
        }
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
template __global__ void thetas_cell_forward<float>(const float*, const float*, const float*, float*, float*, long long,
                                                    long long, long long, long long, long long);
template __global__ void thetas_cell_forward<double>(const double*, const double*, const double*, double*, double*,
                                                     long long, long long, long long, long long, long long);
template __global__ void thetas_regress<float>(const float*, const float*, const float*, const float*, float*, float*,
                                               long long, long long, long long, long long, long long, long long);
template __global__ void thetas_regress<double>(const double*, const double*, const double*, const double*, double*,
                                                double*, long long, long long, long long, long long, long long,
                                                long long);
template __global__ void thetas_cell_backward<float>(const float*, const float*, const float*, const float*, float*,
                                                     float*, float*, float*, float*, float*, long long, long long,
                                                     long long, long long, long long);
template __global__ void thetas_cell_backward<double>(const double*, const double*, const double*, const double*,
                                                      double*, double*, double*, double*, double*, double*, long long,
                                                      long long, long long, long long, long long);
