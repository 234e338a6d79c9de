// emu_cuda_attention_cached.cc: lib/device/cuda_attention_cached.cu built as C++ against the
// CPU emulation (compiled with -DTSR_CUDA_EMU; see cuda_emu.h).
#include "device/cuda_attention_cached.cu"
