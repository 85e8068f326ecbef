// tests/cuda_emulation/cuda_shim.h -- just enough of CUDA for g++ to compile and run
// minstn/ops/fast/kernels/stn.cu on the CPU, so that the kernels' logic is tested on a machine
// without a GPU (tests/test_cuda_source.py).
//
// What each CUDA feature becomes:
//   __global__, __device__      nothing (plain functions)
//   __forceinline__             inline
//   __shared__                  static: one copy per kernel instantiation, shared by the
//                               threads of a block; the launcher runs blocks one after
//                               another, so no two blocks ever use it at the same time
//   threadIdx, blockIdx,        thread_local (x, y, z) triples, set by the launcher
//   blockDim, gridDim
//   __syncthreads()             a barrier over the std::threads that run one block
//                               (launch_threads); outside such a launch it aborts
//   atomicAdd(p, v)             *p += v under one global mutex (returns the old value)
//   floorf, floor               from <math.h>
//
// Two launchers (used by driver.cpp):
//   launch_serial(blocks, threads, body)   every (block, thread) in turn on this thread;
//                                          for kernels without __syncthreads
//   launch_threads(blocks, threads, body)  one std::thread per CUDA thread of a block,
//                                          blocks in turn; for kernels with __syncthreads
#pragma once

#include <math.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

struct EmuDim3 {
    unsigned x = 0, y = 0, z = 0;
};

inline thread_local EmuDim3 threadIdx;
inline thread_local EmuDim3 blockIdx;
inline thread_local EmuDim3 blockDim;
inline thread_local EmuDim3 gridDim;

// A reusable barrier for the `count` threads of one block.
class EmuBarrier {
  public:
    explicit EmuBarrier(unsigned count) : count_(count) {}
    void wait() {
        std::unique_lock<std::mutex> lock(mutex_);
        const unsigned long generation = generation_;
        if (++waiting_ == count_) {  // the last thread to arrive releases the others
            waiting_ = 0;
            ++generation_;
            cv_.notify_all();
        } else {
            cv_.wait(lock, [&] { return generation_ != generation; });
        }
    }

  private:
    std::mutex mutex_;
    std::condition_variable cv_;
    unsigned count_;
    unsigned waiting_ = 0;
    unsigned long generation_ = 0;
};

inline thread_local EmuBarrier* emu_block_barrier = nullptr;

inline void __syncthreads() {
    if (emu_block_barrier == nullptr) {
        std::fprintf(stderr, "cuda_shim: __syncthreads() outside launch_threads (use launch_threads)\n");
        std::abort();
    }
    emu_block_barrier->wait();
}

inline std::mutex emu_atomic_mutex;

template <typename T>
T atomicAdd(T* address, T value) {
    std::lock_guard<std::mutex> lock(emu_atomic_mutex);
    const T old = *address;
    *address = old + value;
    return old;
}

template <typename Body>
void launch_serial(unsigned blocks, unsigned threads, Body body) {
    gridDim = {blocks, 1, 1};
    blockDim = {threads, 1, 1};
    for (unsigned b = 0; b < blocks; ++b) {
        for (unsigned t = 0; t < threads; ++t) {
            blockIdx = {b, 0, 0};
            threadIdx = {t, 0, 0};
            body();
        }
    }
}

template <typename Body>
void launch_threads(unsigned blocks, unsigned threads, Body body) {
    for (unsigned b = 0; b < blocks; ++b) {
        EmuBarrier barrier(threads);
        std::vector<std::thread> pool;
        pool.reserve(threads);
        for (unsigned t = 0; t < threads; ++t) {
            pool.emplace_back([&barrier, &body, blocks, threads, b, t] {
                gridDim = {blocks, 1, 1};
                blockDim = {threads, 1, 1};
                blockIdx = {b, 0, 0};
                threadIdx = {t, 0, 0};
                emu_block_barrier = &barrier;
                body();
            });
        }
        for (std::thread& th : pool) th.join();
    }
}
