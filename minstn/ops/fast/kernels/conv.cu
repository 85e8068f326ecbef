// minstn/ops/fast/kernels/conv.cu -- CUDA kernels of the convolution and pooling layers:
// im2col and its adjoint col2im (the convolution itself is then one cuBLAS matrix product),
// the bias-add that follows a convolution, alone or with the 2x2 max-pool, either with the
// ReLU that follows it or without (and their backwards), and the d x d average pool and its
// backward.
//
// Each kernel is a port of the plain array code in minstn/ops/conv.py and minstn/ops/pool.py
// (the loops of minstn/ops/naive.py say the same thing element by element): the same
// formulas, the same order of the additions where the array code fixes one, and the same
// first-maximum tie rule.  The launch code is in minstn/ops/fast/conv.py, convpool.py and
// pool.py; the CPU emulation that runs these lines with g++ is tests/cuda_emulation/.
//
// Shape legend (every array is C-contiguous, row-major):
//   N        batch size
//   C        input channels                 F        filters (output channels)
//   H, W     input height, width            kh, kw   kernel height, width
//   p        zero padding on each side
//   Ho, Wo   conv output: H + 2p - kh + 1, W + 2p - kw + 1
//   K        C * kh * kw, the rows of im2col
//   Q        N * Ho * Wo, the columns of im2col (one per output pixel of the batch)
//   H2, W2   max-pool output: floor(Ho / 2), floor(Wo / 2)
//   d        average-pool window and stride; Hd, Wd = floor(H / d), floor(W / d)
//
//   x      (N, C, H, W)       a layer's input
//   cols   (K, Q)             im2col of x: row (c, u, v), column (n, i, j)
//   a      (F, N, Ho, Wo)     the product w (F, K) @ cols (K, Q): channel-major, without the bias
//   out    (N, F, H2, W2)     max-pooled a + b (or (N, F, Ho, Wo), a + b, without the pool),
//                             then max(out, 0) where the kernel's relu flag is 1
//
// Gradient rule ("=" versus "+="): every kernel here writes each output element once, with
// "=", from the one thread that owns it.  col2im is written as a gather (each input pixel
// sums the columns that read it) instead of a scatter, so it needs no atomics and its sums are
// repeatable bit for bit.
//
// One thread per output element, with a grid-stride loop (any launch size covers the array).
// Indices are long long: K * Q passes 2^31 at large batches.

// np.maximum for one pair: the larger value, NaN if either is NaN (NaN propagates, as in
// NumPy), the first one on a tie.
template <typename T>
__device__ __forceinline__ T conv_max(T first, T second) {
    return (second > first || second != second) ? second : first;
}

// The ReLU that may follow a layer (relu_forward: np.maximum(v, 0)) when relu is 1, else v.
template <typename T>
__device__ __forceinline__ T conv_relu(T v, long long relu) {
    return relu ? conv_max(v, T(0)) : v;
}

// ---------------------------------------------------------------------------------------
// im2col.  One thread per element of cols (K * Q of them).
//   x (N, C, H, W) -> cols (K, Q),  cols[(c, u, v), (n, i, j)] = x[n, c, i + u - p, j + v - p]
// and 0 where that pixel lies in the zero padding.
// Array code: for each kernel offset (u, v), cols[c, u, v] = the window xpad[:, c, u:u+Ho, v:v+Wo].
// Adjacent threads hold adjacent columns q, so the writes are coalesced.
// ---------------------------------------------------------------------------------------
template <typename T>
__global__ void im2col(const T* __restrict__ x,  // (N, C, H, W)
                       T* __restrict__ cols,     // (K, Q)
                       long long N, long long C, long long H, long long W,
                       long long kh, long long kw, long long p, long long Ho, long long Wo) {
    const long long Q = N * Ho * Wo;
    const long long total = C * kh * kw * Q;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        const long long k = e / Q;             // row: (c, u, v)
        const long long q = e - k * Q;         // column: (n, i, j)
        const long long c = k / (kh * kw);
        const long long u = (k - c * kh * kw) / kw;
        const long long v = k - c * kh * kw - u * kw;
        const long long n = q / (Ho * Wo);
        const long long i = (q - n * Ho * Wo) / Wo;
        const long long j = q - n * Ho * Wo - i * Wo;
        const long long y = i + u - p;         // the input pixel this column reads through (u, v)
        const long long xx = j + v - p;
        const bool inside = y >= 0 && y < H && xx >= 0 && xx < W;
        cols[e] = inside ? x[((n * C + c) * H + y) * W + xx] : T(0);
    }
}

// ---------------------------------------------------------------------------------------
// col2im, the adjoint of im2col.  One thread per input pixel (n, c, y, x):
//   dcols (K, Q) -> dx (N, C, H, W),  dx[n, c, y, x] = sum over (u, v) of
//                                      dcols[(c, u, v), (n, y + p - u, x + p - v)]
// over the offsets whose output pixel (i, j) = (y + p - u, x + p - v) exists.
// Array code: dxpad = 0, then dxpad[window (u, v)] += dcols[c, u, v] for each offset in turn;
// the thread adds the same terms in the same (u, v) order, starting from 0, so for the same
// dcols it gives the same bits.  A gather (no atomics): deterministic.
// ---------------------------------------------------------------------------------------
template <typename T>
__global__ void col2im(const T* __restrict__ dcols,  // (K, Q)
                       T* __restrict__ dx,           // (N, C, H, W)
                       long long N, long long C, long long H, long long W,
                       long long kh, long long kw, long long p, long long Ho, long long Wo) {
    const long long Q = N * Ho * Wo;
    const long long total = N * C * H * W;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        const long long n = e / (C * H * W);
        const long long c = (e - n * C * H * W) / (H * W);
        const long long y = (e - (n * C + c) * H * W) / W;
        const long long xx = e - ((n * C + c) * H + y) * W;
        T acc = T(0);
        for (long long u = 0; u < kh; ++u) {
            const long long i = y + p - u;     // the output row that reads this pixel through u
            if (i < 0 || i >= Ho) continue;
            for (long long v = 0; v < kw; ++v) {
                const long long j = xx + p - v;
                if (j < 0 || j >= Wo) continue;
                acc += dcols[((c * kh + u) * kw + v) * Q + (n * Ho + i) * Wo + j];
            }
        }
        dx[e] = acc;
    }
}

// ---------------------------------------------------------------------------------------
// Bias after a convolution without pooling.  One thread per output (n, f, i, j):
//   a (F, N, Ho, Wo), b (F,) -> out (N, F, Ho, Wo) = a + b[f], then its ReLU when relu = 1
// Array code: out = w @ cols; out += b[:, None] (then relu_forward).  The output is written in
// (N, F) order, C-contiguous, as every activation on the GPU path is, so that what reads it next
// never needs a copy.
// ---------------------------------------------------------------------------------------
template <typename T>
__global__ void bias_forward(const T* __restrict__ a,  // (F, N, Ho, Wo)
                             const T* __restrict__ b,  // (F,)
                             T* __restrict__ out,      // (N, F, Ho, Wo)
                             long long N, long long F, long long Ho, long long Wo, long long relu) {
    const long long total = N * F * Ho * Wo;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        const long long n = e / (F * Ho * Wo);
        const long long f = (e - n * F * Ho * Wo) / (Ho * Wo);
        const long long r = e - (n * F + f) * Ho * Wo;  // i * Wo + j
        out[e] = conv_relu(a[(f * N + n) * Ho * Wo + r] + b[f], relu);
    }
}

// ---------------------------------------------------------------------------------------
// Backward of bias_forward with its ReLU.  One thread per element (f, n, i, j) of da:
//   dout (N, F, Ho, Wo), out (N, F, Ho, Wo) the forward's output -> da (F, N, Ho, Wo) =
//   dout where out > 0, else 0 (relu_backward), written channel-major, the layout the
// convolution's backward products read (the array code: relu_backward, then a transposing copy).
// ---------------------------------------------------------------------------------------
template <typename T>
__global__ void bias_relu_backward(const T* __restrict__ dout,  // (N, F, Ho, Wo)
                                   const T* __restrict__ out,   // (N, F, Ho, Wo)
                                   T* __restrict__ da,          // (F, N, Ho, Wo)
                                   long long N, long long F, long long Ho, long long Wo) {
    const long long total = F * N * Ho * Wo;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        const long long f = e / (N * Ho * Wo);
        const long long n = (e - f * N * Ho * Wo) / (Ho * Wo);
        const long long r = e - (f * N + n) * Ho * Wo;  // i * Wo + j
        const long long src = (n * F + f) * Ho * Wo + r;
        da[e] = out[src] > T(0) ? dout[src] : T(0);
    }
}

// ---------------------------------------------------------------------------------------
// Bias and 2x2 max-pool after a convolution.  One thread per pooled output (n, f, i, j):
//   a (F, N, Ho, Wo), b (F,) -> out (N, F, H2, W2) = max over the 2x2 window of a + b[f],
//   then its ReLU when relu = 1
// Array code (conv2d_forward then maxpool2d_forward, then relu_forward): a + b, then the maximum
// of each column pair, then of the two rows: max(max(v00, v01), max(v10, v11)).  An odd last row
// or column is dropped (floor).  The channel-major product is read and the output written in
// (N, F) order, so the next layer's im2col reads it directly.
// ---------------------------------------------------------------------------------------
template <typename T>
__global__ void maxpool_bias_forward(const T* __restrict__ a,  // (F, N, Ho, Wo)
                                     const T* __restrict__ b,  // (F,)
                                     T* __restrict__ out,      // (N, F, H2, W2)
                                     long long N, long long F, long long Ho, long long Wo, long long relu) {
    const long long H2 = Ho / 2, W2 = Wo / 2;
    const long long total = N * F * H2 * W2;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        const long long n = e / (F * H2 * W2);
        const long long f = (e - n * F * H2 * W2) / (H2 * W2);
        const long long i = (e - (n * F + f) * H2 * W2) / W2;
        const long long j = e - ((n * F + f) * H2 + i) * W2;
        const T* win = a + ((f * N + n) * Ho + 2 * i) * Wo + 2 * j;  // top-left pixel of the window
        const T v00 = win[0] + b[f], v01 = win[1] + b[f];            // upper row
        const T v10 = win[Wo] + b[f], v11 = win[Wo + 1] + b[f];      // lower row
        out[e] = conv_relu(conv_max(conv_max(v00, v01), conv_max(v10, v11)), relu);
    }
}

// ---------------------------------------------------------------------------------------
// Backward of maxpool_bias_forward.  One thread per conv output pixel (f, n, y, x):
//   dout (N, F, H2, W2), a, b -> da (F, N, Ho, Wo) = dout of the window where this pixel won, else 0
// The thread recomputes its window's values as the forward did and finds the winner with the
// array code's masks: lower = max(v10, v11) > max(v00, v01) (the lower row won), then
// right = v_r1 > v_r0 in the winning row (strict '>': the first maximum in the order (0,0),
// (0,1), (1,0), (1,1) wins a tie and alone gets the gradient).  Pixels of a dropped odd row or
// column get 0.  With relu = 1 the winner passes dout only where the window's maximum, the
// ReLU's input, is > 0 (relu_backward's out > 0).  da is written channel-major, the layout the
// weight-gradient product reads.
// ---------------------------------------------------------------------------------------
template <typename T>
__global__ void maxpool_bias_backward(const T* __restrict__ dout,  // (N, F, H2, W2)
                                      const T* __restrict__ a,     // (F, N, Ho, Wo)
                                      const T* __restrict__ b,     // (F,)
                                      T* __restrict__ da,          // (F, N, Ho, Wo)
                                      long long N, long long F, long long Ho, long long Wo, long long relu) {
    const long long H2 = Ho / 2, W2 = Wo / 2;
    const long long total = F * N * Ho * Wo;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        const long long f = e / (N * Ho * Wo);
        const long long n = (e - f * N * Ho * Wo) / (Ho * Wo);
        const long long y = (e - (f * N + n) * Ho * Wo) / Wo;
        const long long x = e - ((f * N + n) * Ho + y) * Wo;
        const long long i = y / 2, j = x / 2;  // the window
        if (i >= H2 || j >= W2) {              // a dropped odd row or column
            da[e] = T(0);
            continue;
        }
        const T* win = a + ((f * N + n) * Ho + 2 * i) * Wo + 2 * j;
        const T v00 = win[0] + b[f], v01 = win[1] + b[f];
        const T v10 = win[Wo] + b[f], v11 = win[Wo + 1] + b[f];
        const T upper = conv_max(v00, v01), lower = conv_max(v10, v11);
        const long long row = lower > upper ? 1 : 0;                              // the lower row won
        const long long col = row ? (v11 > v10 ? 1 : 0) : (v01 > v00 ? 1 : 0);    // its right pixel won
        const bool won = (y == 2 * i + row) && (x == 2 * j + col);
        const bool passes = !relu || conv_max(upper, lower) > T(0);               // the ReLU's gradient
        da[e] = won && passes ? dout[((n * F + f) * H2 + i) * W2 + j] : T(0);
    }
}

// ---------------------------------------------------------------------------------------
// d x d average pool, stride d.  One thread per output pixel (n, c, i, j):
//   x (N, C, H, W) -> out (N, C, Hd, Wd) = (sum of the window) * (1 / d^2)
// Array code: out = window[0, 0], then += window[u, v] for the other offsets in row-major
// order, then *= 1 / (d * d) (computed in double, rounded once to T): the same additions in
// the same order, so the same bits.
// ---------------------------------------------------------------------------------------
template <typename T>
__global__ void avgpool_forward(const T* __restrict__ x,  // (N, C, H, W)
                                T* __restrict__ out,      // (N, C, Hd, Wd)
                                long long NC, long long H, long long W, long long d) {
    const long long Hd = H / d, Wd = W / d;
    const long long total = NC * Hd * Wd;
    const T scale = T(1.0 / (double)(d * d));
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        const long long m = e / (Hd * Wd);  // the image and channel (n, c)
        const long long i = (e - m * Hd * Wd) / Wd;
        const long long j = e - m * Hd * Wd - i * Wd;
        const T* win = x + (m * H + i * d) * W + j * d;  // top-left pixel of the window
        T acc = win[0];
        for (long long u = 0; u < d; ++u) {
            for (long long v = 0; v < d; ++v) {
                if (u || v) acc += win[u * W + v];
            }
        }
        out[e] = acc * scale;
    }
}

// ---------------------------------------------------------------------------------------
// Backward of avgpool_forward.  One thread per input pixel (n, c, y, x):
//   dout (N, C, Hd, Wd) -> dx (N, C, H, W) = dout[window of (y, x)] * (1 / d^2), 0 in the
// floored border that no window covers.
// ---------------------------------------------------------------------------------------
template <typename T>
__global__ void avgpool_backward(const T* __restrict__ dout,  // (N, C, Hd, Wd)
                                 T* __restrict__ dx,          // (N, C, H, W)
                                 long long NC, long long H, long long W, long long d) {
    const long long Hd = H / d, Wd = W / d;
    const long long total = NC * H * W;
    const T scale = T(1.0 / (double)(d * d));
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        const long long m = e / (H * W);
        const long long y = (e - m * H * W) / W;
        const long long x = e - m * H * W - y * W;
        const long long i = y / d, j = x / d;
        dx[e] = (i < Hd && j < Wd) ? dout[(m * Hd + i) * Wd + j] * scale : T(0);
    }
}

// ---------------------------------------------------------------------------------------
// The float and double kernels, instantiated so that nvcc compiles them and CuPy finds them
// by name (RawModule name_expressions).
// ---------------------------------------------------------------------------------------
template __global__ void im2col<float>(const float*, float*, long long, long long, long long, long long, long long,
                                       long long, long long, long long, long long);
template __global__ void im2col<double>(const double*, double*, long long, long long, long long, long long, long long,
                                        long long, long long, long long, long long);
template __global__ void col2im<float>(const float*, float*, long long, long long, long long, long long, long long,
                                       long long, long long, long long, long long);
template __global__ void col2im<double>(const double*, double*, long long, long long, long long, long long, long long,
                                        long long, long long, long long, long long);
template __global__ void bias_forward<float>(const float*, const float*, float*, long long, long long, long long,
                                             long long, long long);
template __global__ void bias_forward<double>(const double*, const double*, double*, long long, long long, long long,
                                              long long, long long);
template __global__ void bias_relu_backward<float>(const float*, const float*, float*, long long, long long, long long,
                                                   long long);
template __global__ void bias_relu_backward<double>(const double*, const double*, double*, long long, long long,
                                                    long long, long long);
template __global__ void maxpool_bias_forward<float>(const float*, const float*, float*, long long, long long,
                                                     long long, long long, long long);
template __global__ void maxpool_bias_forward<double>(const double*, const double*, double*, long long, long long,
                                                      long long, long long, long long);
template __global__ void maxpool_bias_backward<float>(const float*, const float*, const float*, float*, long long,
                                                      long long, long long, long long, long long);
template __global__ void maxpool_bias_backward<double>(const double*, const double*, const double*, double*, long long,
                                                       long long, long long, long long, long long);
template __global__ void avgpool_forward<float>(const float*, float*, long long, long long, long long, long long);
template __global__ void avgpool_forward<double>(const double*, double*, long long, long long, long long, long long);
template __global__ void avgpool_backward<float>(const float*, float*, long long, long long, long long, long long);
template __global__ void avgpool_backward<double>(const double*, double*, long long, long long, long long, long long);
