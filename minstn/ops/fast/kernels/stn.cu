// minstn/ops/fast/kernels/stn.cu -- CUDA kernels for the spatial transformer:
// the affine grid (forward, backward) and the bilinear sampler (forward, backward).
//
// Version 1 of each kernel is a port of the NumPy reference (minstn/ops/stn.py, and its
// loop version bilinear_sample_forward_naive / _backward_naive in minstn/ops/naive.py):
// the same coordinate formula, the same corners (floor and floor + 1), the same four
// weights and derivative formulas, the same zero padding, argument for argument.  The
// vectorised array code evaluates the same quantities in equivalent algebraic forms chosen
// for NumPy speed (a zero-padded copy of U instead of masks, interpolation as two lerps);
// the kernels keep the plain four-weight form, which needs no padded copy.  The results
// agree to rounding (tests/test_cuda_source.py: 1e-12 in float64, 2e-5 in float32).  The
// comments say where a kernel divides the work differently and why.  The Python launch code is
// minstn/ops/fast/cuda.py (CuPy RawModule); the CPU emulation that runs these very lines
// with g++ is tests/cuda_emulation/ (see tests/test_cuda_source.py).
//
// Shape legend (every array is C-contiguous, row-major):
//   N        batch size
//   C        channels of the input image
//   H, W     input image height, width
//   Ho, Wo   output grid height, width
//   P        N * Ho * Wo, the number of output points
//   theta    (N, 2, 3)       maps target to source: [x_s, y_s] = theta @ [x_t, y_t, 1]
//   grid     (N, Ho, Wo, 2)  last axis (x_s, y_s), normalised to [-1, 1]
//   U        (N, C, H, W)    the input image
//   V        (N, C, Ho, Wo)  the sampled output
//
// Conventions (PyTorch's align_corners=False, as minstn.ops.stn):
//   target points   x_t[j] = (2 j + 1) / Wo - 1,   y_t[i] = (2 i + 1) / Ho - 1
//   pixel coords    x = ((x_s + 1) * W - 1) / 2,   y = ((y_s + 1) * H - 1) / 2
//                   computed as x_s * (W / 2) + (W - 1) / 2, the array code's order of
//                   operations, without fused multiply-adds (--fmad=false), so both round alike
//   corners         x0 = floor(x), x1 = x0 + 1 (never ceil), same for y
//   weights         wx1 = x - x0, wx0 = 1 - wx1,   wy1 = y - y0, wy0 = 1 - wy1
//   zero padding    a corner outside [0, W-1] x [0, H-1] reads as 0 and takes no gradient
//
// Gradient rule ("=" versus "+="): dtheta, dgrid and V are written with "=" by the one
// thread (or block) that owns the element; dU is accumulated with atomicAdd ("+=") because
// several output points read the same input pixel, so the caller passes dU zero-filled.
// Floating-point atomics add in an order that changes from run to run: dU is not
// bit-for-bit repeatable (it is within rounding).  The hardware's double atomicAdd needs sm_60
// or newer; older GPUs get stn_atomic_add's compare-and-swap loop instead (below).
//
// Every kernel is a template over T = float or double.  The explicit instantiations at
// the end of the file are the names CuPy looks up (name_expressions), e.g.
// "bilinear_sample_forward<float>".
//
// This file includes no header: under NVRTC (what CuPy uses) the CUDA built-ins are
// always there, and under g++ the emulation shim provides them.

// atomicAdd for float and double on every GPU: the double version is native from sm_60 (Pascal)
// on; before that it is a compare-and-swap loop on the value's 64 bits (the CUDA programming
// guide's recipe), so the module compiles, float32 included, for any architecture.
__device__ __forceinline__ float stn_atomic_add(float* address, float value) { return atomicAdd(address, value); }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 600
__device__ __forceinline__ double stn_atomic_add(double* address, double value) {
    unsigned long long int* bits = (unsigned long long int*)address;
    unsigned long long int old = *bits, assumed;
    do {
        assumed = old;
        old = atomicCAS(bits, assumed, __double_as_longlong(value + __longlong_as_double(assumed)));
    } while (assumed != old);  // integer comparison: a NaN cannot loop forever
    return __longlong_as_double(old);
}
#else
__device__ __forceinline__ double stn_atomic_add(double* address, double value) { return atomicAdd(address, value); }
#endif

// Threads per block of affine_grid_backward; minstn/ops/fast/cuda.py launches with the same
// number (a test checks the two agree).  Must be a power of two.
#define STN_REDUCE_BLOCK 256

// floor for each precision (floorf for float keeps float arithmetic on the GPU).
__device__ __forceinline__ float stn_floor(float v) { return floorf(v); }
__device__ __forceinline__ double stn_floor(double v) { return floor(v); }

// The integer index of a floored coordinate, clamped to [-2, size].
// A sample point far off the image (a theta that ran away) would overflow a plain cast of
// floor(x) to an integer, which is undefined behaviour in C++.  Clamping to [-2, size] keeps
// every in-range index unchanged and keeps every out-of-range index (and its +1 neighbour)
// out of range, so no corner of such a point is read and the result is that of the array
// code (which clips before its int64 cast and gives far points zero weights).
template <typename T>
__device__ __forceinline__ long long stn_index(T floored, long long size) {
    if (!(floored >= T(-2))) return -2;  // also catches NaN: a NaN point reads no pixel
    if (floored > T(size)) return size;
    return (long long)floored;
}

// One sample point of the bilinear sampler: its pixel coordinate, the top-left corner
// (x0, y0) = floor, the other corner at +1 (never ceil), the four bilinear weights, and which
// corners lie inside the image (zero padding: a corner outside reads as 0 and gets no dU).
// The forward and the backward kernels both start from this, so they cannot disagree.
template <typename T>
struct SamplePoint {
    long long x0, y0, x1, y1;    // corner indices (x1 = x0 + 1, y1 = y0 + 1)
    T wx0, wx1, wy0, wy1;        // weights of the left/right columns and upper/lower rows
    bool in00, in01, in10, in11;  // corner (y0, x0), (y0, x1), (y1, x0), (y1, x1) inside U
};

// Normalised source coordinate (x_s, y_s) -> SamplePoint on an H x W image (align_corners=False).
template <typename T>
__device__ __forceinline__ SamplePoint<T> stn_sample_point(T x_s, T y_s, long long H, long long W) {
    // = ((x_s + 1) W - 1) / 2, written as the array code writes it (minstn/ops/stn.py pixel_coords):
    // one product and one sum, each rounded (compiled with --fmad=false: no fused multiply-add), so
    // that a point the array code puts exactly on a pixel centre is exactly there here too
    const T x = x_s * (T(0.5) * T(W)) + T(0.5) * T(W - 1);
    const T y = y_s * (T(0.5) * T(H)) + T(0.5) * T(H - 1);
    const T x0f = stn_floor(x);
    const T y0f = stn_floor(y);
    SamplePoint<T> s;
    s.x0 = stn_index(x0f, W);
    s.y0 = stn_index(y0f, H);
    s.x1 = s.x0 + 1;  // never ceil(x)
    s.y1 = s.y0 + 1;
    s.wx1 = x - x0f;
    s.wx0 = T(1) - s.wx1;
    s.wy1 = y - y0f;
    s.wy0 = T(1) - s.wy1;
    const bool in_x0 = (s.x0 >= 0) && (s.x0 < W);
    const bool in_x1 = (s.x1 >= 0) && (s.x1 < W);
    const bool in_y0 = (s.y0 >= 0) && (s.y0 < H);
    const bool in_y1 = (s.y1 >= 0) && (s.y1 < H);
    s.in00 = in_y0 && in_x0;
    s.in01 = in_y0 && in_x1;
    s.in10 = in_y1 && in_x0;
    s.in11 = in_y1 && in_x1;
    return s;
}

// The normalised target coordinate of grid index k along an axis of `size` points:
// (2 k + 1) / size - 1.  Computed in double and rounded once to T, as the array code does
// (base_grid builds it in float64 and casts), so both give the same bits in float32 too.
template <typename T>
__device__ __forceinline__ T stn_target(long long k, long long size) {
    return T((2.0 * (double)k + 1.0) / (double)size - 1.0);
}

// ---------------------------------------------------------------------------------------
// Affine grid, forward.  One thread per output point p = (n, i, j), grid-stride loop.
//   theta (N, 2, 3) -> grid (N, Ho, Wo, 2)
// Array code: grid = base @ theta[n].T with base (Ho*Wo, 3) rows [x_t, y_t, 1].
// ---------------------------------------------------------------------------------------
template <typename T>
__global__ void affine_grid_forward(const T* __restrict__ theta,  // (N, 2, 3)
                                    T* __restrict__ grid,          // (N, Ho, Wo, 2)
                                    long long N, long long Ho, long long Wo) {
    const long long P = N * Ho * Wo;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < P; p += step) {
        const long long n = p / (Ho * Wo);
        const long long r = p - n * (Ho * Wo);  // i * Wo + j
        const long long i = r / Wo;
        const long long j = r - i * Wo;
        const T xt = stn_target<T>(j, Wo);  // x_t[j]
        const T yt = stn_target<T>(i, Ho);  // y_t[i]
        const T* t = theta + n * 6;  // theta[n], row-major (2, 3)
        grid[2 * p + 0] = t[0] * xt + t[1] * yt + t[2];  // x_s
        grid[2 * p + 1] = t[3] * xt + t[4] * yt + t[5];  // y_s
    }
}

// ---------------------------------------------------------------------------------------
// Affine grid, backward.  dtheta[n] = sum over points of dgrid[n, i, j, :]^T [x_t, y_t, 1].
//   dgrid (N, Ho, Wo, 2) -> dtheta (N, 2, 3)
// One block per batch item (grid = N blocks of STN_REDUCE_BLOCK threads; any power of two up
// to STN_REDUCE_BLOCK works, the emulation test tries several).  Each thread sums
// its strided share of the Ho*Wo points into six registers, then the block adds the six
// partial sums in shared memory by a tree reduction.  No atomics: dtheta is deterministic.
// Array code: dtheta[n] = dgrid[n].reshape(Ho*Wo, 2).T @ base (the same sum, other order).
// ---------------------------------------------------------------------------------------
template <typename T>
__global__ void affine_grid_backward(const T* __restrict__ dgrid,  // (N, Ho, Wo, 2)
                                     T* __restrict__ dtheta,       // (N, 2, 3)
                                     long long Ho, long long Wo) {
    __shared__ T partial[6][STN_REDUCE_BLOCK];  // (6, threads): one column per thread
    const long long n = blockIdx.x;
    const unsigned tid = threadIdx.x;
    const T* dg = dgrid + n * Ho * Wo * 2;  // dgrid[n], (Ho*Wo, 2)

    T acc[6] = {T(0), T(0), T(0), T(0), T(0), T(0)};
    for (long long r = tid; r < Ho * Wo; r += blockDim.x) {
        const long long i = r / Wo;
        const long long j = r - i * Wo;
        const T xt = stn_target<T>(j, Wo);  // x_t[j]
        const T yt = stn_target<T>(i, Ho);  // y_t[i]
        const T gx = dg[2 * r + 0];
        const T gy = dg[2 * r + 1];
        acc[0] += gx * xt;  // d theta[0, 0]
        acc[1] += gx * yt;  // d theta[0, 1]
        acc[2] += gx;       // d theta[0, 2]
        acc[3] += gy * xt;  // d theta[1, 0]
        acc[4] += gy * yt;  // d theta[1, 1]
        acc[5] += gy;       // d theta[1, 2]
    }
    for (int k = 0; k < 6; ++k) partial[k][tid] = acc[k];
    __syncthreads();

    // Tree reduction: halve the active threads each round (blockDim.x is a power of two).
    for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
        if (tid < half) {
            for (int k = 0; k < 6; ++k) partial[k][tid] += partial[k][tid + half];
        }
        __syncthreads();
    }
    for (unsigned k = tid; k < 6; k += blockDim.x) dtheta[n * 6 + k] = partial[k][0];  // (2, 3) row-major
}

// ---------------------------------------------------------------------------------------
// Bilinear sampler, forward.  One thread per output point p = (n, i, j), looping over the
// C channels: the coordinates, corners and weights are computed once per point and reused
// for every channel (the array code computes them once too, then gathers all channels at
// once).  Adjacent threads hold adjacent j, so the writes to V are coalesced.
//   U (N, C, H, W), grid (N, Ho, Wo, 2) -> V (N, C, Ho, Wo)
// ---------------------------------------------------------------------------------------
template <typename T>
__global__ void bilinear_sample_forward(const T* __restrict__ U,     // (N, C, H, W)
                                        const T* __restrict__ grid,  // (N, Ho, Wo, 2)
                                        T* __restrict__ V,           // (N, C, Ho, Wo)
                                        long long N, long long C, long long H, long long W,
                                        long long Ho, long long Wo) {
    const long long P = N * Ho * Wo;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < P; p += step) {
        const long long n = p / (Ho * Wo);
        const long long r = p - n * (Ho * Wo);  // i * Wo + j, the point within its image

        // Coordinates, corners and weights, once per point for all channels.
        const SamplePoint<T> s = stn_sample_point(grid[2 * p + 0], grid[2 * p + 1], H, W);

        for (long long c = 0; c < C; ++c) {
            const T* u = U + (n * C + c) * H * W;  // U[n, c], (H, W)
            // A corner outside the image reads as 0 (zero padding).
            const T u00 = s.in00 ? u[s.y0 * W + s.x0] : T(0);
            const T u01 = s.in01 ? u[s.y0 * W + s.x1] : T(0);
            const T u10 = s.in10 ? u[s.y1 * W + s.x0] : T(0);
            const T u11 = s.in11 ? u[s.y1 * W + s.x1] : T(0);
            V[(n * C + c) * Ho * Wo + r] =
                s.wy0 * s.wx0 * u00 + s.wy0 * s.wx1 * u01 + s.wy1 * s.wx0 * u10 + s.wy1 * s.wx1 * u11;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Bilinear sampler, backward.  One thread per output point p = (n, i, j), looping over the
// C channels, as in the forward.
//   dV (N, C, Ho, Wo), U, grid -> dU (N, C, H, W) (+= by atomicAdd; pass it zero-filled),
//                                 dgrid (N, Ho, Wo, 2) (= by the thread that owns the point)
// dU: several output points can read the same input pixel, so the four corner contributions
//   are scattered with atomicAdd (the array code uses a bincount over flat indices).
// dgrid: the channel sum for a point stays in this thread's registers, so no atomics.
//   dV/dx = sum_c dV[c] * (wy0 * (u01 - u00) + wy1 * (u11 - u10))
//   dV/dy = sum_c dV[c] * (wx0 * (u10 - u00) + wx1 * (u11 - u01))
//   dgrid_x = dV/dx * W / 2,  dgrid_y = dV/dy * H / 2   (chain rule through x = (x_s+1) W/2 - 1/2)
// ---------------------------------------------------------------------------------------
template <typename T>
__global__ void bilinear_sample_backward(const T* __restrict__ dV,    // (N, C, Ho, Wo)
                                         const T* __restrict__ U,     // (N, C, H, W)
                                         const T* __restrict__ grid,  // (N, Ho, Wo, 2)
                                         T* __restrict__ dU,          // (N, C, H, W), zero-filled
                                         T* __restrict__ dgrid,       // (N, Ho, Wo, 2)
                                         long long N, long long C, long long H, long long W,
                                         long long Ho, long long Wo) {
    const long long P = N * Ho * Wo;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < P; p += step) {
        const long long n = p / (Ho * Wo);
        const long long r = p - n * (Ho * Wo);  // i * Wo + j

        // The forward's coordinates, corners and weights, recomputed (cheaper than storing).
        const SamplePoint<T> s = stn_sample_point(grid[2 * p + 0], grid[2 * p + 1], H, W);

        T dx = T(0);  // d loss / d x (pixel units), summed over channels
        T dy = T(0);  // d loss / d y
        for (long long c = 0; c < C; ++c) {
            const T g = dV[(n * C + c) * Ho * Wo + r];  // dV[n, c, i, j]
            const T* u = U + (n * C + c) * H * W;       // U[n, c]
            T* du = dU + (n * C + c) * H * W;           // dU[n, c]
            const T u00 = s.in00 ? u[s.y0 * W + s.x0] : T(0);
            const T u01 = s.in01 ? u[s.y0 * W + s.x1] : T(0);
            const T u10 = s.in10 ? u[s.y1 * W + s.x0] : T(0);
            const T u11 = s.in11 ? u[s.y1 * W + s.x1] : T(0);
            // dU: the forward's weights times the upstream gradient, corner by corner.
            if (s.in00) stn_atomic_add(&du[s.y0 * W + s.x0], (s.wy0 * s.wx0) * g);
            if (s.in01) stn_atomic_add(&du[s.y0 * W + s.x1], (s.wy0 * s.wx1) * g);
            if (s.in10) stn_atomic_add(&du[s.y1 * W + s.x0], (s.wy1 * s.wx0) * g);
            if (s.in11) stn_atomic_add(&du[s.y1 * W + s.x1], (s.wy1 * s.wx1) * g);
            // d/dx of the weights: d wx1/dx = 1, d wx0/dx = -1 (same for y).
            dx += g * (s.wy0 * (u01 - u00) + s.wy1 * (u11 - u10));
            dy += g * (s.wx0 * (u10 - u00) + s.wx1 * (u11 - u01));
        }
        dgrid[2 * p + 0] = dx * (T(0.5) * T(W));  // dx/dx_s = W / 2
        dgrid[2 * p + 1] = dy * (T(0.5) * T(H));  // dy/dy_s = H / 2
    }
}

// ---------------------------------------------------------------------------------------
// The float and double kernels, instantiated so that nvcc compiles them and so that CuPy
// finds them by these names (RawModule name_expressions).
// ---------------------------------------------------------------------------------------
template __global__ void affine_grid_forward<float>(const float*, float*, long long, long long, long long);
template __global__ void affine_grid_forward<double>(const double*, double*, long long, long long, long long);
template __global__ void affine_grid_backward<float>(const float*, float*, long long, long long);
template __global__ void affine_grid_backward<double>(const double*, double*, long long, long long);
template __global__ void bilinear_sample_forward<float>(const float*, const float*, float*, long long, long long,
                                                        long long, long long, long long, long long);
template __global__ void bilinear_sample_forward<double>(const double*, const double*, double*, long long, long long,
                                                         long long, long long, long long, long long);
template __global__ void bilinear_sample_backward<float>(const float*, const float*, const float*, float*, float*,
                                                         long long, long long, long long, long long, long long,
                                                         long long);
template __global__ void bilinear_sample_backward<double>(const double*, const double*, const double*, double*,
                                                          double*, long long, long long, long long, long long,
                                                          long long, long long);
