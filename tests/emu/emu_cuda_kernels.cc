// emu_cuda_kernels.cc: lib/device/cuda_kernels.cu built as C++ against the CPU emulation
// (compiled with -DTSR_CUDA_EMU; see cuda_emu.h).
#include "device/cuda_kernels.cu"
