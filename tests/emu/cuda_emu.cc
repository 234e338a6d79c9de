// cuda_emu.cc: the scheduler of the CUDA emulation declared in cuda_emu.h: fibers for the
// threads of a block, the block barrier, the warp operations (shuffles, __syncwarp, wmma), the
// checks that turn a hang or undefined behaviour into an error, and the few host functions.
#include "cuda_emu.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <map>
#include <mutex>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define TSR_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TSR_EMU_ASAN 1
#endif
#endif
#ifdef TSR_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

// x86-64 switches fibers with the few instructions below; elsewhere (or with
// -DTSR_EMU_UCONTEXT) with swapcontext, which also saves the signal mask: a system call each.
#if defined(__x86_64__) && !defined(TSR_EMU_UCONTEXT)
#define TSR_EMU_ASM_SWITCH 1
// Saves the callee-saved registers on the current stack, stores the stack pointer in *save_sp,
// loads new_sp and restores what is saved there. A fresh fiber's stack is laid out by
// context_init() so that the final ret enters fiber_main().
extern "C" void tsr_emu_switch_(void **save_sp, void *new_sp);
asm(".pushsection .text\n"
    ".p2align 4\n"
    ".type tsr_emu_switch_, @function\n"
    "tsr_emu_switch_:\n"
    "  pushq %rbp\n"
    "  pushq %rbx\n"
    "  pushq %r12\n"
    "  pushq %r13\n"
    "  pushq %r14\n"
    "  pushq %r15\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  popq %r15\n"
    "  popq %r14\n"
    "  popq %r13\n"
    "  popq %r12\n"
    "  popq %rbx\n"
    "  popq %rbp\n"
    "  ret\n"
    ".size tsr_emu_switch_, .-tsr_emu_switch_\n"
    ".popsection\n");
#else
#include <ucontext.h>
#endif

namespace tsr_emu {
namespace detail {
__thread const uint3 *tls_thread_idx, *tls_block_idx, *tls_block_dim, *tls_grid_dim;

namespace {

enum { op_wmma_load = 100, op_wmma_store, op_wmma_mma };

const size_t stack_guard = 4096;
const size_t default_smem_limit = 48 * 1024;
const int max_smem_optin = 232448; // 227 KiB: what an H100 block may opt in to

struct context {
#ifdef TSR_EMU_ASM_SWITCH
    void *sp = nullptr;
#else
    ucontext_t uc;
#endif
    const void *stack = nullptr; // lowest address and size of the stack, for AddressSanitizer
    size_t stack_size = 0;
#ifdef TSR_EMU_ASAN
    void *fake_stack = nullptr;
#endif
};

enum class state : unsigned char { runnable, at_barrier, at_warp_op, done };

// What a lane brings to a warp operation.
struct warp_op_t {
    int kind;
    unsigned mask;
    int arg, width;    // shuffles: source lane, delta or lane mask; segment width
    size_t size;       // bytes of a shuffled value
    const void *in;    // shuffle: the value; store: the fragment; mma: fragment a
    void *out;         // shuffle: the result; load: the fragment; mma: fragment d
    const void *in2;   // mma: fragment b
    const void *in3;   // mma: fragment c
    const void *ptr;   // wmma load and store: the matrix in memory
    unsigned ldm;
    bool col_major;
    int rows, cols, k; // wmma: the tile (mma: m, n, k)
    size_t elem_size;
    const char *file;
    int line;
};

struct thread_t {
    context ctx;
    uint3 idx;
    unsigned linear, warp, lane;
    state st;
    const char *file; // the __syncthreads() it waits at
    int line;
    warp_op_t op; // the warp operation it waits at
};

struct warp_t {
    thread_t *lane[32];
    unsigned present; // lanes that exist (a partial last warp has fewer than 32)
    unsigned waiting; // lanes waiting at a warp operation
    unsigned exited;  // lanes that returned
    thread_t *leader; // the first lane at a pending wmma load, which did the load
};

struct launch_t {
    dim3 grid, block;
    uint3 grid_dim, block_dim, block_idx; // what gridDim, blockDim and blockIdx show
    unsigned nthreads;
    void (*invoke)(void *);
    void *call;
    std::vector<thread_t> threads;
    std::vector<warp_t> warps;
    std::vector<thread_t *> runq; // ring buffer of runnable threads
    size_t head, count;
    std::vector<thread_t *> waiters; // at __syncthreads(), in order of arrival
    size_t arrived;
    unsigned live; // threads of the block that have not returned
    context host;
    unsigned char *smem;
    size_t smem_size;
    bool failed;
};

__thread launch_t *tls_launch;
__thread thread_t *tls_self;
__thread void *tls_dynamic_smem;
__thread unsigned tls_launch_count;
__thread cudaError_t tls_last_error;
thread_local std::string tls_message;

// ---- errors ----

std::string vformat(const char *fmt, va_list ap)
{
    char buf[1024];
    vsnprintf(buf, sizeof buf, fmt, ap);
    return buf;
}

void record_error(cudaError_t err, const std::string &msg)
{
    tls_last_error = err;
    tls_message = msg;
    fprintf(stderr, "tsr_emu: %s\n", msg.c_str());
}

__attribute__((format(printf, 2, 3))) void host_error(cudaError_t err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    record_error(err, vformat(fmt, ap));
    va_end(ap);
}

// Names for messages live in the caller's frame, not the heap: fail() never returns, so
// temporaries in its argument list are never destroyed.
struct name_t {
    char s[48];
};

name_t thread_name(const thread_t &t)
{
    name_t n;
    snprintf(n.s, sizeof n.s, "(%u,%u,%u)", t.idx.x, t.idx.y, t.idx.z);
    return n;
}

const char *op_name(int kind)
{
    switch (kind) {
    case op_syncwarp:
        return "__syncwarp()";
    case op_shfl_idx:
        return "__shfl_sync()";
    case op_shfl_up:
        return "__shfl_up_sync()";
    case op_shfl_down:
        return "__shfl_down_sync()";
    case op_shfl_xor:
        return "__shfl_xor_sync()";
    case op_wmma_load:
        return "wmma::load_matrix_sync()";
    case op_wmma_store:
        return "wmma::store_matrix_sync()";
    case op_wmma_mma:
        return "wmma::mma_sync()";
    }
    return "?";
}

void switch_to(context &from, context &to, bool from_dies);

// Stop the launch from inside a kernel: report, go back to the host, abandon the fibers.
__attribute__((format(printf, 1, 2), noreturn)) void fail(const char *fmt, ...)
{
    launch_t &L = *tls_launch;
    {
        va_list ap;
        va_start(ap, fmt);
        std::string what = vformat(fmt, ap); // destroyed before the switch below
        va_end(ap);
        char where[160];
        snprintf(where, sizeof where, "kernel of grid (%u,%u,%u), block (%u,%u,%u), in block (%u,%u,%u): ",
                 L.grid.x, L.grid.y, L.grid.z, L.block.x, L.block.y, L.block.z, L.block_idx.x, L.block_idx.y,
                 L.block_idx.z);
        record_error(cudaErrorLaunchFailure, where + what);
    }
    L.failed = true;
    thread_t *self = tls_self;
    tls_self = nullptr;
    switch_to(self->ctx, L.host, true);
    abort(); // nothing switches back to a fiber that failed
}

// The launch that the calling kernel code runs in; calling a device function outside one is a bug.
launch_t &current(const char *what)
{
    if (!tls_launch || !tls_self) {
        fprintf(stderr, "tsr_emu: %s called outside a kernel launched by tsr_emu::launch\n", what);
        abort();
    }
    return *tls_launch;
}

// ---- fiber stacks: one mapping per host thread, reused by every launch ----

size_t stack_size()
{
    static const size_t size = [] {
        const char *env = getenv("TSR_EMU_STACK_KB");
        long kb = env ? atol(env) : 256;
        if (kb < 16)
            kb = 16;
        return ((size_t)kb * 1024 + stack_guard - 1) / stack_guard * stack_guard;
    }();
    return size;
}

struct stack_pool {
    char *base;
    size_t count, stride; // stacks, and bytes from one to the next (guard page first)
#ifdef TSR_EMU_ASAN
    char **low; // per stack: below it, AddressSanitizer's shadow is clean
#endif
};
__thread stack_pool tls_pool;

// Base of count stacks of stack_size() bytes each, with a PROT_NONE guard page below each.
char *stacks(size_t count)
{
    stack_pool &p = tls_pool;
    if (p.count >= count)
        return p.base;
    if (p.base)
        munmap(p.base, p.count * p.stride);
    p.base = nullptr;
    p.count = 0;
    p.stride = stack_size() + stack_guard;
    void *m = mmap(nullptr, count * p.stride, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (m == MAP_FAILED)
        return nullptr;
    p.base = (char *)m;
    p.count = count;
    for (size_t i = 0; i < count; i++)
        mprotect(p.base + i * p.stride, stack_guard, PROT_NONE);
#ifdef TSR_EMU_ASAN
    // The mapping may reuse addresses whose shadow an earlier one left poisoned.
    for (size_t i = 0; i < count; i++)
        __asan_unpoison_memory_region(p.base + i * p.stride + stack_guard, p.stride - stack_guard);
    free(p.low);
    p.low = (char **)calloc(count, sizeof *p.low);
    if (!p.low)
        abort();
    for (size_t i = 0; i < count; i++)
        p.low[i] = p.base + (i + 1) * p.stride;
#endif
    return p.base;
}

#ifndef TSR_EMU_ASAN
// A fault in a guard page is a fiber's stack overflow: say so before the usual crash.
struct sigaction previous_segv;

void on_segv(int sig, siginfo_t *info, void *uc)
{
    (void)sig;
    (void)uc;
    const stack_pool &p = tls_pool;
    const char *a = (const char *)info->si_addr;
    if (p.base && a >= p.base && a < p.base + p.count * p.stride && (size_t)(a - p.base) % p.stride < stack_guard) {
        static const char msg[] = "tsr_emu: a kernel thread overflowed its fiber stack: run with "
                                  "TSR_EMU_STACK_KB set above its size (default 256)\n";
        ssize_t n = write(2, msg, sizeof msg - 1);
        (void)n;
    }
    sigaction(SIGSEGV, &previous_segv, nullptr); // the fault recurs and is handled as before
}

void watch_stack_overflow()
{
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_segv;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &previous_segv);
    });
    // The handler cannot run on the stack that overflowed.
    static thread_local bool have_altstack;
    if (have_altstack)
        return;
    have_altstack = true;
    stack_t old;
    if (sigaltstack(nullptr, &old) == 0 && !(old.ss_flags & SS_DISABLE))
        return;
    const size_t size = 64 * 1024;
    void *m = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return;
    stack_t ss;
    ss.ss_sp = m;
    ss.ss_size = size;
    ss.ss_flags = 0;
    sigaltstack(&ss, nullptr);
}
#endif

// ---- context switches ----

[[noreturn]] void fiber_main();

#ifdef TSR_EMU_ASAN
// Frames that never returned (those of a fiber that ended or was abandoned) leave their redzones
// poisoned, and a fiber that reuses the stack would trip over them: each switch away from a
// fiber notes how deep its stack went, and context_init() unpoisons from there up.
size_t pool_index(const void *stack)
{
    const stack_pool &p = tls_pool;
    const char *s = (const char *)stack;
    if (!p.base || s < p.base || s >= p.base + p.count * p.stride)
        return (size_t)-1;
    return (size_t)(s - p.base) / p.stride;
}

__attribute__((noinline)) void note_depth(const context &c)
{
    size_t i = pool_index(c.stack);
    char *mark = (char *)__builtin_frame_address(0) - 4096;
    if (i != (size_t)-1 && mark < tls_pool.low[i])
        tls_pool.low[i] = mark;
}

void clean_shadow(const char *stack, size_t size)
{
    size_t i = pool_index(stack);
    const char *top = stack + size;
    if (i == (size_t)-1 || tls_pool.low[i] >= top)
        return;
    const char *from = tls_pool.low[i] > stack ? tls_pool.low[i] : stack;
    __asan_unpoison_memory_region(from, (size_t)(top - from));
    tls_pool.low[i] = (char *)top;
}
#endif

void context_init(context &c, char *stack, size_t size)
{
    c.stack = stack;
    c.stack_size = size;
#ifdef TSR_EMU_ASAN
    clean_shadow(stack, size);
#endif
#ifdef TSR_EMU_ASM_SWITCH
    uintptr_t top = ((uintptr_t)stack + size) & ~(uintptr_t)15;
    void **sp = (void **)top;
    *--sp = nullptr;                          // fiber_main's return address: it never returns
    *--sp = reinterpret_cast<void *>(&fiber_main); // where tsr_emu_switch_'s ret goes
    for (int i = 0; i < 6; i++)
        *--sp = nullptr; // rbp, rbx, r12-r15
    c.sp = sp;
#else
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = size;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, fiber_main, 0);
#endif
}

#ifdef TSR_EMU_ASAN
// After a switch: tell AddressSanitizer we arrived; the first arrival from the host tells us
// the host's stack, which it needs when we switch back there.
void arrived(void *fake_stack)
{
    const void *bottom;
    size_t size;
    __sanitizer_finish_switch_fiber(fake_stack, &bottom, &size);
    launch_t *L = tls_launch;
    if (L && !L->host.stack) {
        L->host.stack = bottom;
        L->host.stack_size = size;
    }
}
#endif

// from_dies: the fiber switched away from will never run again.
void switch_to(context &from, context &to, bool from_dies)
{
#ifdef TSR_EMU_ASAN
    note_depth(from);
    __sanitizer_start_switch_fiber(from_dies ? nullptr : &from.fake_stack, to.stack, to.stack_size);
#else
    (void)from_dies;
#endif
#ifdef TSR_EMU_ASM_SWITCH
    tsr_emu_switch_(&from.sp, to.sp);
#else
    swapcontext(&from.uc, &to.uc);
#endif
#ifdef TSR_EMU_ASAN
    arrived(from.fake_stack);
#endif
}

// ---- the scheduler ----

void push(launch_t &L, thread_t *t)
{
    L.runq[(L.head + L.count) % L.nthreads] = t;
    L.count++;
}

thread_t *pop(launch_t &L)
{
    if (!L.count)
        return nullptr;
    thread_t *t = L.runq[L.head];
    L.head = (L.head + 1) % L.nthreads;
    L.count--;
    return t;
}

std::string waiting_at(const thread_t &t)
{
    char buf[256];
    switch (t.st) {
    case state::at_barrier:
        snprintf(buf, sizeof buf, "wait at __syncthreads() (%s:%d)", t.file, t.line);
        break;
    case state::at_warp_op:
        snprintf(buf, sizeof buf, "wait at %s (%s:%d, mask 0x%08x)", op_name(t.op.kind), t.op.file, t.op.line,
                 t.op.mask);
        break;
    case state::done:
        snprintf(buf, sizeof buf, "returned");
        break;
    case state::runnable:
        snprintf(buf, sizeof buf, "runnable");
        break;
    }
    return buf;
}

[[noreturn]] void fail_deadlock(launch_t &L)
{
    // Threads by linear index, consecutive ones in the same state as one range; in a
    // thread-local string, since this frame is never left.
    static thread_local std::string what;
    what.clear();
    int ranges = 0;
    for (unsigned i = 0; i < L.nthreads;) {
        unsigned j = i + 1;
        while (j < L.nthreads && waiting_at(L.threads[j]) == waiting_at(L.threads[i]))
            j++;
        if (++ranges > 8) {
            what += "; ...";
            break;
        }
        char range[128];
        snprintf(range, sizeof range, "%sthreads %s-%s: ", ranges > 1 ? "; " : "", thread_name(L.threads[i]).s,
                 thread_name(L.threads[j - 1]).s);
        what += range;
        what += waiting_at(L.threads[i]);
        i = j;
    }
    fail("deadlock: no thread can go on (%s)", what.c_str());
}

// Give the CPU to the next runnable thread of the block (self waits, or has returned).
void run_next(launch_t &L, thread_t *self, bool self_dies)
{
    thread_t *next = pop(L);
    if (next) {
        tls_self = next;
        tls_thread_idx = &next->idx;
        switch_to(self->ctx, next->ctx, self_dies);
        return;
    }
    if (L.live == 0) {
        tls_self = nullptr;
        switch_to(self->ctx, L.host, true);
        abort(); // the block is over: nothing switches back
    }
    fail_deadlock(L);
}

void thread_exit(launch_t &L, thread_t &t)
{
    t.st = state::done;
    L.live--;
    if (L.arrived)
        fail("thread %s returned while %zu threads of its block wait at __syncthreads() (%s:%d): every thread "
             "of a block must reach each __syncthreads()",
             thread_name(t).s, L.arrived, L.waiters[0]->file, L.waiters[0]->line);
    warp_t &w = L.warps[t.warp];
    unsigned bit = 1u << t.lane;
    w.exited |= bit;
    for (unsigned m = w.waiting; m; m &= m - 1) {
        thread_t *o = w.lane[__builtin_ctz(m)];
        if (o->op.mask & bit)
            fail("thread %s (lane %u of warp %u) returned while lane %u waits for it at %s (%s:%d, mask "
                 "0x%08x)",
                 thread_name(t).s, t.lane, t.warp, o->lane, op_name(o->op.kind), o->op.file, o->op.line,
                 o->op.mask);
    }
    run_next(L, &t, true);
    abort();
}

void fiber_main()
{
#ifdef TSR_EMU_ASAN
    arrived(nullptr);
#endif
    launch_t &L = *tls_launch;
    L.invoke(L.call);
    thread_exit(L, *tls_self);
    abort();
}

bool same_site(const char *f1, int l1, const char *f2, int l2)
{
    return l1 == l2 && (f1 == f2 || strcmp(f1, f2) == 0);
}

// ---- warp operations ----

// Where lane reads from in a shuffle, following PTX's shfl.sync: outside its segment of width
// lanes it reads its own value.
unsigned shuffle_source(const warp_op_t &op, unsigned lane)
{
    unsigned w = (unsigned)op.width, b = (unsigned)op.arg & 31u;
    unsigned first = lane & ~(w - 1), last = first + w - 1;
    switch (op.kind) {
    case op_shfl_idx:
        return first | (b & (w - 1));
    case op_shfl_up:
        return lane >= first + b ? lane - b : lane;
    case op_shfl_down:
        return lane + b <= last ? lane + b : lane;
    case op_shfl_xor:
        return (lane ^ b) <= last ? lane ^ b : lane;
    }
    return lane;
}

void check_wmma_pointer(const warp_op_t &op)
{
    if ((uintptr_t)op.ptr % 32)
        fail("%s at %s:%d: pointer %p is not 32-byte aligned", op_name(op.kind), op.file, op.line, op.ptr);
    if ((op.ldm * op.elem_size) % 16)
        fail("%s at %s:%d: ldm %u is not a multiple of %zu elements (16 bytes)", op_name(op.kind), op.file, op.line,
             op.ldm, 16 / op.elem_size);
}

void check_same_wmma_pointer(const thread_t &a, const thread_t &b)
{
    if (a.op.ptr != b.op.ptr || a.op.ldm != b.op.ldm || a.op.col_major != b.op.col_major)
        fail("%s at %s:%d: lanes of warp %u pass different arguments (lane %u: %p, ldm %u, %s; lane %u: %p, ldm "
             "%u, %s)",
             op_name(a.op.kind), a.op.file, a.op.line, a.warp, a.lane, a.op.ptr, a.op.ldm,
             a.op.col_major ? "col-major" : "row-major", b.lane, b.op.ptr, b.op.ldm,
             b.op.col_major ? "col-major" : "row-major");
}

// Every lane's copy of a fragment must be the same, else the code touched elements non-uniformly.
void check_uniform(const warp_t &w, const thread_t &self, const void *(*frag)(const warp_op_t &), size_t bytes,
                   const char *name)
{
    for (unsigned l = 0; l < 32; l++) {
        const thread_t *o = w.lane[l];
        if (o != &self && memcmp(frag(o->op), frag(self.op), bytes) != 0)
            fail("%s at %s:%d: fragment %s of lane %u differs from lane %u's: code must treat the elements of a "
                 "fragment uniformly (each lane holds the whole tile in the emulation)",
                 op_name(self.op.kind), self.op.file, self.op.line, name, o->lane, self.lane);
    }
}

float bf16_to_float(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

void load_tile(const warp_op_t &op)
{
    const char *p = (const char *)op.ptr;
    char *frag = (char *)op.out;
    for (int i = 0; i < op.rows; i++)
        for (int j = 0; j < op.cols; j++) {
            size_t at = op.col_major ? (size_t)i + (size_t)j * op.ldm : (size_t)i * op.ldm + (size_t)j;
            memcpy(frag + ((size_t)i * op.cols + j) * op.elem_size, p + at * op.elem_size, op.elem_size);
        }
}

// The last lane of part to arrive carries the operation out for all of them.
void complete(launch_t &L, thread_t &self, warp_t &w, unsigned part)
{
    const warp_op_t &op = self.op;
    for (unsigned m = part; m; m &= m - 1) {
        const thread_t *o = w.lane[__builtin_ctz(m)];
        if (o->op.kind != op.kind || o->op.mask != op.mask || o->op.width != op.width || o->op.size != op.size ||
            o->op.rows != op.rows || o->op.cols != op.cols || o->op.k != op.k || o->op.elem_size != op.elem_size)
            fail("lanes of warp %u meet at different warp operations: lane %u at %s (%s:%d, mask 0x%08x), lane %u "
                 "at %s (%s:%d, mask 0x%08x)",
                 self.warp, o->lane, op_name(o->op.kind), o->op.file, o->op.line, o->op.mask, self.lane,
                 op_name(op.kind), op.file, op.line, op.mask);
    }
    switch (op.kind) {
    case op_syncwarp:
        break;
    case op_shfl_idx:
    case op_shfl_up:
    case op_shfl_down:
    case op_shfl_xor:
        for (unsigned m = part; m; m &= m - 1) {
            unsigned l = (unsigned)__builtin_ctz(m);
            unsigned src = shuffle_source(w.lane[l]->op, l);
            if (!(part >> src & 1u)) {
                if (!(w.present >> src & 1u))
                    fail("%s at %s:%d: lane %u of warp %u reads lane %u, which does not exist (the block has %u "
                         "threads)",
                         op_name(op.kind), op.file, op.line, l, self.warp, src, L.nthreads);
                fail("%s at %s:%d: lane %u of warp %u reads lane %u, which mask 0x%08x leaves out", op_name(op.kind),
                     op.file, op.line, l, self.warp, src, op.mask);
            }
            memcpy(w.lane[l]->op.out, w.lane[src]->op.in, op.size);
        }
        break;
    case op_wmma_load: {
        const thread_t *leader = w.leader;
        for (unsigned l = 0; l < 32; l++)
            if (w.lane[l] != leader)
                memcpy(w.lane[l]->op.out, leader->op.out, (size_t)op.rows * op.cols * op.elem_size);
        break;
    }
    case op_wmma_store: {
        check_uniform(w, self, [](const warp_op_t &o) { return o.in; }, (size_t)op.rows * op.cols * sizeof(float),
                      "c");
        for (unsigned l = 0; l < 32; l++)
            check_same_wmma_pointer(self, *w.lane[l]);
        check_wmma_pointer(op);
        const float *frag = (const float *)op.in;
        float *p = (float *)const_cast<void *>(op.ptr);
        for (int i = 0; i < op.rows; i++)
            for (int j = 0; j < op.cols; j++)
                p[op.col_major ? (size_t)i + (size_t)j * op.ldm : (size_t)i * op.ldm + j] = frag[i * op.cols + j];
        break;
    }
    case op_wmma_mma: {
        int m = op.rows, n = op.cols, k = op.k;
        check_uniform(w, self, [](const warp_op_t &o) { return o.in; }, (size_t)m * k * 2, "a");
        check_uniform(w, self, [](const warp_op_t &o) { return o.in2; }, (size_t)k * n * 2, "b");
        check_uniform(w, self, [](const warp_op_t &o) { return o.in3; }, (size_t)m * n * sizeof(float), "c");
        const uint16_t *a = (const uint16_t *)op.in, *b = (const uint16_t *)op.in2;
        const float *c = (const float *)op.in3;
        float d[256]; // every shape has 256 accumulator elements
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                float acc = c[i * n + j];
                for (int kk = 0; kk < k; kk++)
                    acc += bf16_to_float(a[i * k + kk]) * bf16_to_float(b[kk * n + j]);
                d[i * n + j] = acc;
            }
        for (unsigned l = 0; l < 32; l++)
            memcpy(w.lane[l]->op.out, d, (size_t)m * n * sizeof(float));
        break;
    }
    }
    if (w.leader && (part >> w.leader->lane & 1u))
        w.leader = nullptr;
    w.waiting &= ~part;
    for (unsigned m = part; m; m &= m - 1) {
        thread_t *o = w.lane[__builtin_ctz(m)];
        if (o != &self) {
            o->st = state::runnable;
            push(L, o);
        }
    }
}

void arrive(const warp_op_t &op)
{
    launch_t &L = current(op_name(op.kind));
    thread_t &t = *tls_self;
    warp_t &w = L.warps[t.warp];
    unsigned bit = 1u << t.lane;
    if (!(op.mask & bit))
        fail("%s at %s:%d: mask 0x%08x leaves out the calling lane %u of warp %u", op_name(op.kind), op.file, op.line,
             op.mask, t.lane, t.warp);
    if (op.width < 1 || op.width > 32 || (op.width & (op.width - 1)))
        fail("%s at %s:%d: width %d is not a power of two from 1 to 32", op_name(op.kind), op.file, op.line,
             op.width);
    if (op.kind >= op_wmma_load && (op.mask != 0xffffffffu || w.present != 0xffffffffu))
        fail("%s at %s:%d: wmma needs all 32 lanes of a warp, and warp %u of this block has %d threads",
             op_name(op.kind), op.file, op.line, t.warp, __builtin_popcount(w.present));
    unsigned part = op.mask & w.present;
    if (part & w.exited)
        fail("%s at %s:%d: mask 0x%08x names lane %d of warp %u, which has returned", op_name(op.kind), op.file,
             op.line, op.mask, __builtin_ctz(part & w.exited), t.warp);
    t.op = op;
    if (op.kind == op_wmma_load) {
        // The first lane loads at once, so a load of memory that other lanes have not yet
        // written (a missing __syncwarp or __syncthreads) reads what is there now.
        if (!w.leader) {
            check_wmma_pointer(op);
            load_tile(op);
            w.leader = &t;
        } else {
            check_same_wmma_pointer(*w.leader, t);
        }
    }
    if (((w.waiting | bit) & part) != part) {
        w.waiting |= bit;
        t.st = state::at_warp_op;
        run_next(L, &t, false);
        return;
    }
    complete(L, t, w, part);
}

warp_op_t make_op(int kind, unsigned mask, const char *file, int line)
{
    warp_op_t op;
    memset(&op, 0, sizeof op);
    op.kind = kind;
    op.mask = mask;
    op.width = 32;
    op.file = file;
    op.line = line;
    return op;
}

// ---- launches ----

std::mutex attr_lock;
std::map<const void *, int> &smem_attr()
{
    static std::map<const void *, int> attr; // kernel -> cudaFuncAttributeMaxDynamicSharedMemorySize
    return attr;
}

bool check_config(dim3 grid, dim3 block, size_t smem, const void *kernel)
{
    unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    if (!block.x || !block.y || !block.z || block.x > 1024 || block.y > 1024 || block.z > 64 || threads > 1024) {
        host_error(cudaErrorInvalidConfiguration,
                   "launch with block (%u,%u,%u): CUDA allows 1 to 1024 threads, x and y up to 1024, z up to 64",
                   block.x, block.y, block.z);
        return false;
    }
    if (!grid.x || !grid.y || !grid.z || grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535) {
        host_error(cudaErrorInvalidConfiguration,
                   "launch with grid (%u,%u,%u): CUDA allows x from 1 to 2^31-1, y and z from 1 to 65535", grid.x,
                   grid.y, grid.z);
        return false;
    }
    if (smem > default_smem_limit) {
        int limit = 0;
        {
            std::lock_guard<std::mutex> hold(attr_lock);
            auto it = smem_attr().find(kernel);
            if (it != smem_attr().end())
                limit = it->second;
        }
        if (smem > (size_t)limit) {
            host_error(cudaErrorInvalidValue,
                       "launch with %zu bytes of dynamic shared memory: more than 48 KiB needs "
                       "cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, %zu or more) "
                       "first (it is %d)",
                       smem, smem, limit);
            return false;
        }
    }
    return true;
}

void run_block(launch_t &L, uint3 b, bool reverse, char *stack_base)
{
    L.block_idx = b;
    if (L.smem)
        memset(L.smem, 0xff, L.smem_size);
    const size_t stride = tls_pool.stride;
    for (unsigned i = 0; i < L.nthreads; i++) {
        thread_t &t = L.threads[i];
        t.st = state::runnable;
        context_init(t.ctx, stack_base + i * stride + stack_guard, stride - stack_guard);
    }
    for (warp_t &w : L.warps) {
        w.waiting = w.exited = 0;
        w.leader = nullptr;
    }
    L.head = L.count = 0;
    L.arrived = 0;
    L.live = L.nthreads;
    for (unsigned i = 0; i < L.nthreads; i++)
        push(L, &L.threads[reverse ? L.nthreads - 1 - i : i]);
    thread_t *first = pop(L);
    tls_self = first;
    tls_thread_idx = &first->idx;
    switch_to(L.host, first->ctx, false);
    // Back when the block's last thread returned, or when the launch failed.
    tls_self = nullptr;
    tls_thread_idx = nullptr;
}

} // namespace

void launch(const void *kernel, dim3 grid, dim3 block, size_t smem, void (*invoke)(void *), void *call)
{
    if (tls_launch) {
        fprintf(stderr, "tsr_emu: a kernel launched a kernel: dynamic parallelism is not emulated\n");
        abort();
    }
    if (!check_config(grid, block, smem, kernel))
        return;
    launch_t L;
    L.grid = grid;
    L.block = block;
    L.nthreads = block.x * block.y * block.z;
    L.invoke = invoke;
    L.call = call;
    L.threads.resize(L.nthreads);
    L.warps.resize((L.nthreads + 31) / 32);
    L.runq.resize(L.nthreads);
    L.waiters.resize(L.nthreads);
    L.head = L.count = L.arrived = 0;
    L.live = 0;
    L.smem = nullptr;
    L.smem_size = smem;
    L.failed = false;
    for (warp_t &w : L.warps)
        w.present = 0;
    for (unsigned i = 0; i < L.nthreads; i++) {
        thread_t &t = L.threads[i];
        t.idx = uint3{i % block.x, i / block.x % block.y, i / (block.x * block.y)};
        t.linear = i;
        t.warp = i / 32;
        t.lane = i % 32;
        L.warps[t.warp].lane[t.lane] = &t;
        L.warps[t.warp].present |= 1u << t.lane;
    }
    char *stack_base = stacks(L.nthreads);
    if (!stack_base) {
        host_error(cudaErrorMemoryAllocation, "no memory for the stacks of %u threads", L.nthreads);
        return;
    }
    if (smem && posix_memalign((void **)&L.smem, 64, smem) != 0) {
        host_error(cudaErrorMemoryAllocation, "no memory for %zu bytes of dynamic shared memory", smem);
        return;
    }
#ifndef TSR_EMU_ASAN
    watch_stack_overflow();
#endif
    tls_launch = &L;
    L.block_dim = uint3{block.x, block.y, block.z};
    L.grid_dim = uint3{grid.x, grid.y, grid.z};
    tls_block_idx = &L.block_idx;
    tls_block_dim = &L.block_dim;
    tls_grid_dim = &L.grid_dim;
    tls_dynamic_smem = L.smem;
    unsigned order = tls_launch_count++;
    for (unsigned z = 0; z < grid.z && !L.failed; z++)
        for (unsigned y = 0; y < grid.y && !L.failed; y++)
            for (unsigned x = 0; x < grid.x && !L.failed; x++)
                run_block(L, uint3{x, y, z}, (order + x + y + z) & 1u, stack_base);
    tls_launch = nullptr;
    tls_block_idx = tls_block_dim = tls_grid_dim = nullptr;
    tls_dynamic_smem = nullptr;
    free(L.smem);
}

cudaError_t func_set_attribute(const void *kernel, cudaFuncAttribute attr, int value)
{
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) {
        host_error(cudaErrorInvalidValue, "cudaFuncSetAttribute: attribute %d is not emulated", (int)attr);
        return cudaErrorInvalidValue;
    }
    if (value < 0 || value > max_smem_optin) {
        host_error(cudaErrorInvalidValue,
                   "cudaFuncSetAttribute: %d bytes of dynamic shared memory; an H100 block can have 0 to %d", value,
                   max_smem_optin);
        return cudaErrorInvalidValue;
    }
    std::lock_guard<std::mutex> hold(attr_lock);
    smem_attr()[kernel] = value;
    return cudaSuccess;
}

void syncthreads(const char *file, int line)
{
    launch_t &L = current("__syncthreads()");
    thread_t &t = *tls_self;
    if (L.live != L.nthreads) {
        const thread_t *gone = &L.threads[0];
        while (gone->st != state::done)
            gone++;
        fail("thread %s reached __syncthreads() at %s:%d after thread %s returned: every thread of a block must "
             "reach each __syncthreads()",
             thread_name(t).s, file, line, thread_name(*gone).s);
    }
    t.file = file;
    t.line = line;
    if (L.arrived + 1 < L.nthreads) {
        L.waiters[L.arrived++] = &t;
        t.st = state::at_barrier;
        run_next(L, &t, false);
        return;
    }
    for (size_t i = 0; i < L.arrived; i++) {
        const thread_t *o = L.waiters[i];
        if (!same_site(o->file, o->line, file, line))
            fail("threads of a block wait at different __syncthreads(): thread %s at %s:%d, thread %s at %s:%d",
                 thread_name(*o).s, o->file, o->line, thread_name(t).s, file, line);
    }
    for (size_t i = 0; i < L.arrived; i++) {
        L.waiters[i]->st = state::runnable;
        push(L, L.waiters[i]);
    }
    L.arrived = 0;
}

void warp_op(warp_op_kind kind, unsigned mask, const void *in, void *out, size_t size, int arg, int width,
             const char *file, int line)
{
    warp_op_t op = make_op(kind, mask, file, line);
    op.in = in;
    op.out = out;
    op.size = size;
    op.arg = arg;
    op.width = width;
    arrive(op);
}

void wmma_load(void *frag, int rows, int cols, size_t elem_size, const void *p, unsigned ldm, bool col_major,
               const char *file, int line)
{
    warp_op_t op = make_op(op_wmma_load, 0xffffffffu, file, line);
    op.out = frag;
    op.rows = rows;
    op.cols = cols;
    op.elem_size = elem_size;
    op.ptr = p;
    op.ldm = ldm;
    op.col_major = col_major;
    arrive(op);
}

void wmma_store(float *p, const float *frag, int rows, int cols, unsigned ldm, bool col_major, const char *file,
                int line)
{
    warp_op_t op = make_op(op_wmma_store, 0xffffffffu, file, line);
    op.in = frag;
    op.rows = rows;
    op.cols = cols;
    op.elem_size = sizeof(float);
    op.ptr = p;
    op.ldm = ldm;
    op.col_major = col_major;
    arrive(op);
}

void wmma_mma(float *d, const uint16_t *a, const uint16_t *b, const float *c, int m, int n, int k, const char *file,
              int line)
{
    warp_op_t op = make_op(op_wmma_mma, 0xffffffffu, file, line);
    op.out = d;
    op.in = a;
    op.in2 = b;
    op.in3 = c;
    op.rows = m;
    op.cols = n;
    op.k = k;
    arrive(op);
}

} // namespace detail

void *dynamic_smem()
{
    detail::current("dynamic shared memory");
    return detail::tls_dynamic_smem;
}

const char *last_message() { return detail::tls_message.c_str(); }

} // namespace tsr_emu

using tsr_emu::detail::host_error;

extern "C" cudaError_t cudaGetLastError(void)
{
    cudaError_t err = tsr_emu::detail::tls_last_error;
    tsr_emu::detail::tls_last_error = cudaSuccess;
    return err;
}

extern "C" const char *cudaGetErrorString(cudaError_t error)
{
    switch (error) {
    case cudaSuccess:
        return "no error";
    case cudaErrorInvalidValue:
        return "invalid argument";
    case cudaErrorMemoryAllocation:
        return "out of memory";
    case cudaErrorInvalidConfiguration:
        return "invalid configuration argument";
    case cudaErrorLaunchFailure:
        return "unspecified launch failure";
    }
    return "unrecognized error code";
}

extern "C" cudaError_t cudaMemsetAsync(void *ptr, int value, size_t count, cudaStream_t stream)
{
    (void)stream;
    if (count && !ptr) {
        host_error(cudaErrorInvalidValue, "cudaMemsetAsync of %zu bytes at NULL", count);
        return cudaErrorInvalidValue;
    }
    if (count)
        memset(ptr, value, count);
    return cudaSuccess;
}

extern "C" cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, cudaMemcpyKind kind,
                                       cudaStream_t stream)
{
    (void)stream;
    if ((int)kind < cudaMemcpyHostToHost || (int)kind > cudaMemcpyDefault) {
        host_error(cudaErrorInvalidValue, "cudaMemcpyAsync with kind %d", (int)kind);
        return cudaErrorInvalidValue;
    }
    if (count && (!dst || !src)) {
        host_error(cudaErrorInvalidValue, "cudaMemcpyAsync of %zu bytes from %p to %p", count, src, dst);
        return cudaErrorInvalidValue;
    }
    if (count)
        memmove(dst, src, count);
    return cudaSuccess;
}
