// emu_cuda_gemm_epilogue.cc: lib/device/cuda_gemm_epilogue.cu built as C++ against the CPU emulation
// (compiled with -DTSR_CUDA_EMU; see cuda_emu.h).
#include "device/cuda_gemm_epilogue.cu"
