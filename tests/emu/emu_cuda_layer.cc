// emu_cuda_layer.cc: lib/device/cuda_layer.cu built as C++ against the CPU emulation
// (compiled with -DTSR_CUDA_EMU; see cuda_emu.h).
#include "device/cuda_layer.cu"
