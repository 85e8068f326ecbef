// minstn/ops/fast/kernels/train.cu -- CUDA kernels at the two ends of a training step: the
// softmax cross-entropy loss with its gradient; the step's numbers for the host (the loss, the
// gradient's global norm, the wrong digits); and Adam's update of every parameter.
//
// Each is a port of the array code, operation for operation and in the same order (the module
// is compiled without fused multiply-adds):
//   softmax_cross_entropy   minstn/ops/loss.py softmax_cross_entropy; launch code in
//                           minstn/ops/fast/loss.py
//   sum_squares,            minstn/training/optim.py global_norm and the trainer's count of wrong
//   step_report             digits (argmax != label); launch code in optim.step_numbers
//   adam_step               minstn/training/optim.py Adam._update (FlatAdam.step's array code):
//                           for the same inputs it gives the same bits; launch code in FlatAdam
//
// Shape legend:
//   M        rows of the loss: N * P (batch times digit positions)
//   K        classes (10)
//   logits   (M, K),  labels (M,) int64,  dlogits (M, K),  loss (1,)
//   n        parameters in FlatAdam's flat buffer; p, m, v, g, lr are (n,)
//   P        threads of sum_squares: partial (P,) float64
//   report   (3,) float64: loss, global norm, wrong digits

// Threads of softmax_cross_entropy's one block; minstn/ops/fast/loss.py launches with the same
// number (a test checks the two agree).  Must be a power of two.
#define TRAIN_REDUCE_BLOCK 256

// exp, log and sqrt for each precision (expf, logf, sqrtf keep float arithmetic on the GPU), and
// a quiet NaN of each.
__device__ __forceinline__ float train_exp(float v) { return expf(v); }
__device__ __forceinline__ double train_exp(double v) { return exp(v); }
__device__ __forceinline__ float train_log(float v) { return logf(v); }
__device__ __forceinline__ double train_log(double v) { return log(v); }
__device__ __forceinline__ float train_sqrt(float v) { return sqrtf(v); }
__device__ __forceinline__ double train_sqrt(double v) { return sqrt(v); }
__device__ __forceinline__ float train_nan(float) { return nanf(""); }
__device__ __forceinline__ double train_nan(double) { return nan(""); }

// ---------------------------------------------------------------------------------------
// Softmax cross-entropy, mean over the M rows, and its gradient.  ONE block of
// TRAIN_REDUCE_BLOCK threads: thread t takes rows t, t + blockDim.x, ...; for each row
//   zmax = max_k z[k] (NaN propagates, as np.max);  e[k] = exp(z[k] - zmax);  s = sum_k e[k]
//   log_p = (z[y] - zmax) - log(s)
//   dlogits[k] = (e[k] / s - [k == y]) * (1 / M)
// then the block adds its threads' sums of log_p by a shared-memory tree reduction and
// thread 0 writes loss = -(sum log_p) / M.  A label outside [0, K) makes its log_p NaN, so
// the loss is NaN (the trainer stops on it) instead of reading outside the row.
// Array code: the same quantities as whole-array operations; the sums over k and over the
// rows are added in another order (rounding only).
// One block is enough: M is a few thousand rows at most, K = 10.  Deterministic.
// ---------------------------------------------------------------------------------------
template <typename T>
__global__ void softmax_cross_entropy(const T* __restrict__ logits,          // (M, K)
                                      const long long* __restrict__ labels,  // (M,)
                                      T* __restrict__ dlogits,               // (M, K)
                                      T* __restrict__ loss,                  // (1,)
                                      long long M, long long K) {
    __shared__ T partial[TRAIN_REDUCE_BLOCK];  // one sum of log_p per thread
    const unsigned tid = threadIdx.x;
    const T scale = T(1.0 / (double)M);  // dz *= 1.0 / M: computed in double, rounded once to T
    T acc = T(0);
    for (long long r = tid; r < M; r += blockDim.x) {
        const T* z = logits + r * K;
        T* dz = dlogits + r * K;
        T zmax = z[0];
        for (long long k = 1; k < K; ++k) zmax = (z[k] > zmax || z[k] != z[k]) ? z[k] : zmax;
        T s = T(0);
        for (long long k = 0; k < K; ++k) {
            dz[k] = train_exp(z[k] - zmax);  // e[k], normalised below
            s += dz[k];
        }
        const long long y = labels[r];
        const bool valid = y >= 0 && y < K;
        acc += valid ? (z[y] - zmax) - train_log(s) : train_nan(T(0));
        for (long long k = 0; k < K; ++k) {
            T q = dz[k] / s;               // softmax
            if (k == y) q = q - T(1);      // minus the one-hot label
            dz[k] = q * scale;
        }
    }
    partial[tid] = acc;
    __syncthreads();
    // Tree reduction: halve the active threads each round (blockDim.x is a power of two).
    for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
        if (tid < half) partial[tid] += partial[tid + half];
        __syncthreads();
    }
    if (tid == 0) loss[0] = -partial[0] / T(M);
}

// ---------------------------------------------------------------------------------------
// Sum of squares, first half.  Thread t of the P launched threads adds, in double, the squares
// of its strided share x[t], x[t + P], ... and writes partial[t] (no shared memory: the block
// size does not matter).  Adjacent threads read adjacent elements: coalesced.
// Array code: (g.astype(float64) ** 2).sum(), the same terms summed in another order.
// ---------------------------------------------------------------------------------------
template <typename T>
__global__ void sum_squares(const T* __restrict__ x,        // (n,)
                            double* __restrict__ partial,   // (P,), P = blockDim.x * gridDim.x
                            long long n) {
    const long long P = (long long)blockDim.x * gridDim.x;
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    double acc = 0.0;
    for (long long e = t; e < n; e += P) {
        const double v = (double)x[e];
        acc += v * v;
    }
    partial[t] = acc;
}

// ---------------------------------------------------------------------------------------
// The step's numbers for the host, in one array: ONE block of TRAIN_REDUCE_BLOCK threads.
//   report[0] = loss[0]                      (as a double)
//   report[1] = sqrt(sum of partial)         the gradient's global norm (sum_squares first)
//   report[2] = number of rows r whose argmax over logits[r] is not labels[r]
// argmax is NumPy's: the first maximum, and a NaN counts as the maximum (the first NaN wins).
// Each thread sums its strided share of the partials and counts its strided share of the
// rows; a shared-memory tree reduction adds both over the block.  Deterministic.
// The trainer copies the three numbers to the host in one transfer: its one stop per step.
// ---------------------------------------------------------------------------------------
template <typename T>
__global__ void step_report(const double* __restrict__ partial,   // (P,) from sum_squares
                            long long P,
                            const T* __restrict__ loss,           // (1,)
                            const T* __restrict__ logits,         // (M, K)
                            const long long* __restrict__ labels,  // (M,)
                            long long M, long long K,
                            double* __restrict__ report) {        // (3,)
    __shared__ double sums[TRAIN_REDUCE_BLOCK];
    __shared__ long long wrong[TRAIN_REDUCE_BLOCK];
    const unsigned tid = threadIdx.x;
    double s = 0.0;
    for (long long i = tid; i < P; i += blockDim.x) s += partial[i];
    long long w = 0;
    for (long long r = tid; r < M; r += blockDim.x) {
        const T* z = logits + r * K;
        long long best = 0;
        for (long long k = 1; k < K; ++k) {
            const bool best_is_nan = z[best] != z[best];
            if (!best_is_nan && (z[k] > z[best] || z[k] != z[k])) best = k;
        }
        if (best != labels[r]) ++w;
    }
    sums[tid] = s;
    wrong[tid] = w;
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {   // blockDim.x is a power of two
        if (tid < half) {
            sums[tid] += sums[tid + half];
            wrong[tid] += wrong[tid + half];
        }
        __syncthreads();
    }
    if (tid == 0) {
        report[0] = (double)loss[0];
        report[1] = sqrt(sums[0]);
        report[2] = (double)wrong[0];
    }
}

// ---------------------------------------------------------------------------------------
// Adam, one element per thread, grid-stride, all parameters in one launch (FlatAdam's flat
// buffers).  With gs = g * grad_scale (the global-norm clip; 1 when it does not clip) and
// gs += weight_decay * p when weight_decay != 0:
//   m = b1 m + (1 - b1) gs;  v = b2 v + (1 - b2) gs^2
//   p -= lr * (m * m_hat_scale) / (sqrt(v * v_hat_scale) + eps)
// lr (n,) holds lr * lr_mult of each element's parameter; one_minus_beta1 = 1 - b1 and
// one_minus_beta2 = 1 - b2, m_hat_scale = 1 / (1 - b1^t) and v_hat_scale = 1 / (1 - b2^t) are
// computed in double on the host and rounded once to T, as the array code's scalars are.
// The order of the operations is Adam._update's, one rounding each (no fused multiply-add):
// the same bits as the array code.
// ---------------------------------------------------------------------------------------
template <typename T>
__global__ void adam_step(T* __restrict__ p,         // (n,) updated in place
                          T* __restrict__ m,         // (n,) first moment, updated in place
                          T* __restrict__ v,         // (n,) second moment, updated in place
                          const T* __restrict__ g,   // (n,) gradient
                          const T* __restrict__ lr,  // (n,) learning rate of each element
                          long long n, T grad_scale, T weight_decay, T beta1, T one_minus_beta1, T beta2,
                          T one_minus_beta2, T m_hat_scale, T v_hat_scale, T eps) {
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += step) {
        T ge = g[e] * grad_scale;
        if (weight_decay != T(0)) ge = ge + weight_decay * p[e];
        T a = ge * one_minus_beta1;          // (1 - b1) g
        T me = m[e] * beta1;
        me = me + a;
        a = ge * ge;                         // g^2
        a = a * one_minus_beta2;
        T ve = v[e] * beta2;
        ve = ve + a;
        a = ve * v_hat_scale;                // v_hat
        a = train_sqrt(a);
        a = a + eps;                         // sqrt(v_hat) + eps
        T s = me * m_hat_scale;              // m_hat
        s = s * lr[e];
        s = s / a;
        m[e] = me;
        v[e] = ve;
        p[e] = p[e] - s;
    }
}

// ---------------------------------------------------------------------------------------
// The float and double kernels, instantiated for nvcc and for CuPy's name_expressions.
// ---------------------------------------------------------------------------------------
template __global__ void softmax_cross_entropy<float>(const float*, const long long*, float*, float*, long long,
                                                      long long);
template __global__ void softmax_cross_entropy<double>(const double*, const long long*, double*, double*, long long,
                                                       long long);
template __global__ void sum_squares<float>(const float*, double*, long long);
template __global__ void sum_squares<double>(const double*, double*, long long);
template __global__ void step_report<float>(const double*, long long, const float*, const float*, const long long*,
                                            long long, long long, double*);
template __global__ void step_report<double>(const double*, long long, const double*, const double*, const long long*,
                                             long long, long long, double*);
template __global__ void adam_step<float>(float*, float*, float*, const float*, const float*, long long, float, float,
                                          float, float, float, float, float, float, float);
template __global__ void adam_step<double>(double*, double*, double*, const double*, const double*, long long, double,
                                           double, double, double, double, double, double, double, double);
