// minstn/ops/fast/kernels/linear.cu -- CUDA kernels of the elementwise layers of
// minstn/ops/linear.py whose array code takes several passes: the ReLU's backward and
// inverted dropout's forward, each as one kernel (the ReLU's forward is one CuPy call already,
// and so is dropout's backward); and what surrounds the product of a fully connected layer
// followed by its ReLU (linear_relu), one kernel each way.  Launch code: minstn/ops/fast/linear.py.
//
// Shape legend: n, the number of elements; every array is C-contiguous and of n elements (the
// layers are elementwise, so the shape does not matter).  Each element is written once, with
// "=", by the thread that owns it; the results are the array code's bits.  linear_relu: a
// (N, M) product x @ w, b (M,).

// ---------------------------------------------------------------------------------------
// ReLU backward.  dx = dout where the forward's output is > 0, else 0 (the kink gets 0).
// Array code: where(out > 0, dout, 0).
// ---------------------------------------------------------------------------------------
template <typename T>
__global__ void relu_backward(const T* __restrict__ dout,  // (n,)
                              const T* __restrict__ out,   // (n,) relu_forward's output
                              T* __restrict__ dx,          // (n,)
                              long long n) {
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += step) {
        dx[e] = out[e] > T(0) ? dout[e] : T(0);
    }
}

// ---------------------------------------------------------------------------------------
// Inverted dropout, forward.  With u uniform in [0, 1) (drawn by CuPy's generator):
//   mask = scale where u >= p (kept), 0 where u < p (dropped);  out = x * mask
// scale = 1 / (1 - p), computed in double on the host and rounded once to T, and p rounded to
// T, as the array code's (u >= p).astype(T) * (1 / (1 - p)) does.  The mask is kept for the
// backward (dx = dout * mask, one CuPy call).
// ---------------------------------------------------------------------------------------
template <typename T>
__global__ void dropout_forward(const T* __restrict__ x,  // (n,)
                                const T* __restrict__ u,  // (n,) uniform [0, 1)
                                T* __restrict__ out,      // (n,)
                                T* __restrict__ mask,     // (n,)
                                long long n, T p, T scale) {
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += step) {
        const T m = u[e] >= p ? scale : T(0);
        mask[e] = m;
        out[e] = x[e] * m;
    }
}

// ---------------------------------------------------------------------------------------
// A fully connected layer's bias and ReLU, in place on its product.  One thread per (n, m):
//   a[n, m] = max(a[n, m] + b[m], 0)
// Array code: out = x @ w; out += b (linear_forward), then np.maximum(out, 0) (relu_forward):
// the same bits.  NaN stays NaN, as np.maximum.
// ---------------------------------------------------------------------------------------
template <typename T>
__global__ void linear_relu_forward(T* __restrict__ a,        // (N, M): in x @ w, out the layer's output
                                    const T* __restrict__ b,  // (M,)
                                    long long N, long long M) {
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < N * M; e += step) {
        const T v = a[e] + b[e % M];
        a[e] = (T(0) > v) ? T(0) : v;
    }
}

// ---------------------------------------------------------------------------------------
// Its backward, up to the two products.  One thread per column m, looping over the rows (so
// that it can sum db in registers: no atomics, repeatable):
//   da[n, m] = dout[n, m] where out[n, m] > 0, else 0;   db[m] = sum over n of da[n, m]
// Array code: relu_backward, then linear_backward's db = da.sum(axis=0) (the sum in another
// order: rounding only).  dx = da @ w^T and dw = x^T @ da are the launch code's products.
// ---------------------------------------------------------------------------------------
template <typename T>
__global__ void linear_relu_backward(const T* __restrict__ dout,  // (N, M)
                                     const T* __restrict__ out,   // (N, M) the forward's output
                                     T* __restrict__ da,          // (N, M)
                                     T* __restrict__ db,          // (M,)
                                     long long N, long long M) {
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long m = (long long)blockIdx.x * blockDim.x + threadIdx.x; m < M; m += step) {
        T sum = T(0);
        for (long long n = 0; n < N; ++n) {
            const long long e = n * M + m;
            const T d = out[e] > T(0) ? dout[e] : T(0);
            da[e] = d;
            sum += d;
        }
        db[m] = sum;
    }
}

// ---------------------------------------------------------------------------------------
// The float and double kernels, instantiated for nvcc and for CuPy's name_expressions.
// ---------------------------------------------------------------------------------------
template __global__ void relu_backward<float>(const float*, const float*, float*, long long);
template __global__ void relu_backward<double>(const double*, const double*, double*, long long);
template __global__ void dropout_forward<float>(const float*, const float*, float*, float*, long long, float, float);
template __global__ void dropout_forward<double>(const double*, const double*, double*, double*, long long, double,
                                                 double);
template __global__ void linear_relu_forward<float>(float*, const float*, long long, long long);
template __global__ void linear_relu_forward<double>(double*, const double*, long long, long long);
template __global__ void linear_relu_backward<float>(const float*, const float*, float*, float*, long long, long long);
template __global__ void linear_relu_backward<double>(const double*, const double*, double*, double*, long long,
                                                      long long);
