// emu_cuda_optim.cc: lib/device/cuda_optim.cu built as C++ against the CPU emulation
// (compiled with -DTSR_CUDA_EMU; see cuda_emu.h).
#include "device/cuda_optim.cu"
