/**
 * @file tessera/model.h
 * @brief A GPT-2 language model built from the tp operations, split into pipeline stages,
 * trained by the ZeRO optimizer.
 *
 * The architecture is GPT-2's: learned position embeddings, pre-LayerNorm blocks (layernorm,
 * causal multi-head attention, residual; layernorm, GELU MLP of width 4·dim, residual), a
 * final layernorm and an output projection tied to the token embedding.
 *
 * Distribution. On a tp grid of 1×N the model uses the 1D (Megatron) layout: activations
 * whole, Q, K, V and the first MLP weight column-parallel, the attention projection and the
 * second MLP weight row-parallel, the vocabulary split over the N ranks. On any other r×c
 * grid it uses the 2D layout: tokens (whole sequences) over grid rows, hidden features over
 * grid columns, weights in r×c blocks multiplied by SUMMA. The blocks are grouped into
 * pp × chunks contiguous virtual stages by tsr_pipe_partition() (from per-block FLOPs);
 * the embeddings live on the first virtual stage, the final layernorm and the tied output
 * on the last, and the tied weight's gradient is summed between the two before the step.
 *
 * One engine. The model is written once, in the tp operations of tessera/tp.h, which compute
 * with the device kernels of tessera/kernels.h on the model's device (the CPU in fp32; a GPU
 * in fp32 or, with the optimizer's precision TSR_PRECISION_BF16, bf16 activations and compute
 * copies of the parameters with fp32 gradients and fp32 master weights) and communicate on
 * device buffers. Every layout dp × pp × tp, 1D or 2D, runs on every device; tp 1×1 is the
 * case without communication.
 *
 * Parameters live in the ZeRO optimizer that the model creates, and the model computes on
 * its memory: in fp32 the matrices it multiplies are the optimizer's parameter views (in
 * ZeRO stage 3, the gathered layer, between gather and release), and its gradients
 * accumulate in the optimizer's gradient views (all step in stages 0-1; per layer and
 * micro-batch, between tsr_zero_grad_begin() and _ready, in stages 2-3). In bf16 the model
 * keeps bf16 compute copies of the parameters, refreshed from the fp32 master each step. A
 * ZeRO layer is the unit of gathering and bucketing: layer 0 is wpe, 1 + l transformer block
 * l, L + 1 the final layernorm, L + 2 the tied embedding wte (held by the first and the last
 * stage; its gradient accumulates in a buffer of its own, is summed between them and handed
 * over at the end of the step).
 *
 * The backward of every linear layer is split into its input gradient (the pipeline's B
 * action) and its weight gradient (W): with the zero-bubble schedule (#TSR_PIPE_ZB_H1) the
 * weight-gradient GEMMs run in the W actions that fill the pipeline's bubbles; with the
 * other schedules W follows B at once, block by block. The head computes the loss and the
 * classifier's gradients in its forward (softmax cross-entropy fused with the classifier's
 * backward), so the logits never wait for the backward.
 *
 * Activation recomputation (::tsr_gpt_recompute_t) replays a block's forward inside its
 * backward: what a micro-batch keeps per block is then its input alone (BLOCK), or
 * everything but the attention sublayer's internals (ATTENTION). The replay computes the
 * same values as the forward, so the losses do not change.
 *
 * Initial weights are a function of (seed, tensor, global element index), so every layout
 * starts from the same model: normal with std 0.02, the two residual projections of each
 * block with 0.02/sqrt(2L), layernorm gains 1, biases 0.
 *
 * The loss of a step is the mean cross-entropy over every token of the global batch.
 *
 * With parameter servers (a layout with ps > 0, tessera/ps.h) the grid is one replica's and
 * its optimizer exchanges with the servers in its step: the model is the same; the loss,
 * gradient norm and learning rate a step reports are those of the last round the first
 * server applied (the loss: the mean of the replicas' losses in that round), at staleness
 * 0 those of the synchronous step.
 */
#ifndef TESSERA_MODEL_H
#define TESSERA_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include <tessera/ckpt.h>
#include <tessera/device.h>
#include <tessera/dtype.h>
#include <tessera/grid.h>
#include <tessera/pipe.h>
#include <tessera/status.h>
#include <tessera/visibility.h>
#include <tessera/zero.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The model's shape. Start from #TSR_GPT_CONFIG_INIT (the "tiny" preset). */
typedef struct tsr_gpt_config {
    size_t struct_size; /**< sizeof(tsr_gpt_config_t), set by #TSR_GPT_CONFIG_INIT */
    int layers;         /**< transformer blocks L */
    int dim;            /**< hidden width H (a multiple of heads) */
    int heads;          /**< attention heads */
    int vocab;          /**< vocabulary size V */
    int seq;            /**< sequence length T (context) */
} tsr_gpt_config_t;

/** The "tiny" preset: 2 layers, dim 64, 4 heads, vocabulary 256 (bytes), sequences of 64. */
#define TSR_GPT_CONFIG_INIT {sizeof(tsr_gpt_config_t), 2, 64, 4, 256, 64}

/** Longest text tsr_gpt_config_format() writes, with its terminating NUL. */
#define TSR_GPT_CONFIG_STRLEN 96

/**
 * Parse a preset ("tiny"; "gpt2-124m": 12 layers, dim 768, 12 heads, vocabulary 50257,
 * sequences of 1024) or "layers=L,dim=H,heads=A,vocab=V,seq=T" (keys in any order, each
 * optional, defaulting to tiny's value), and check it (tsr_gpt_config_check()).
 * @return TSR_ERR_INVALID_ARG naming the bad part.
 */
TSR_API tsr_status_t tsr_gpt_config_parse(const char *text, tsr_gpt_config_t *out);

/** Positive sizes and dim a multiple of heads; TSR_ERR_INVALID_ARG naming what is wrong. */
TSR_API tsr_status_t tsr_gpt_config_check(const tsr_gpt_config_t *cfg);

/** Write "layers=L,dim=H,heads=A,vocab=V,seq=T" into @p buf (@p len bytes). @return buf. */
TSR_API char *tsr_gpt_config_format(const tsr_gpt_config_t *cfg, char *buf, size_t len);

/** Number of parameters (the tied embedding counted once). */
TSR_API int64_t tsr_gpt_param_count(const tsr_gpt_config_t *cfg);

/**
 * Model FLOPs of one training step per token: 6 P + 12 L H T (P parameters, L layers, H dim,
 * T seq): the weights' forward and backward, and attention's scores and weighting, not
 * halved for the causal mask (the PaLM and Megatron convention). The numerator of the MFU
 * that tsr-train and tsr-bench report.
 */
TSR_API double tsr_gpt_flops_per_token(const tsr_gpt_config_t *cfg);

/**
 * The peak FLOP/s of one rank, the denominator of its MFU. On the CPU it is measured: the best
 * of at least eight fp32 GEMMs of 1024 x 1024 x 1024 on @p dev (through tsr_device_gemm_f32, on
 * the threads of tsr_device_cpu_threads()), at least a quarter of a second; ranks sharing a node should
 * call it together (after a barrier), so that each measures its share. On a GPU it is the
 * datasheet's dense figure of an H100 SXM: 989.4e12 in bf16, 66.9e12 in fp32.
 */
TSR_API tsr_status_t tsr_gpt_peak_flops(tsr_device_t dev, tsr_precision_t precision, double *flops);

/**
 * Write the model configuration as attributes of /config (n_layer, n_embd, n_head,
 * vocab_size, seq_len, and model: the tsr_gpt_config_format() text). Collective.
 */
TSR_API tsr_status_t tsr_gpt_config_save(tsr_ckpt_writer_t w, const tsr_gpt_config_t *cfg);

/**
 * Check that a checkpoint was written for this model configuration: TSR_ERR_MISMATCH
 * "checkpoint was written for a different model: layers=... (this run: layers=...)"
 * otherwise. Collective.
 */
TSR_API tsr_status_t tsr_gpt_config_expect(tsr_ckpt_reader_t r, const tsr_gpt_config_t *cfg);

/** Number of parameter tensors of a model of @p cfg (tsr_gpt_tensor_info() lists them). */
TSR_API int tsr_gpt_tensor_count(const tsr_gpt_config_t *cfg);

/**
 * Name ("wte", "h0.attn.q.w", ...) and global shape (a vector is 1 x n) of the model's
 * tensor @p i, 0 <= i < tsr_gpt_tensor_count(), in the order tsr_gpt_create() registers them.
 */
TSR_API tsr_status_t tsr_gpt_tensor_info(const tsr_gpt_config_t *cfg, int i, char *name, size_t len,
                                         int64_t *rows, int64_t *cols);

/**
 * Read a checkpoint's /config model attributes into @p cfg and check them: each in range, a
 * valid model (tsr_gpt_config_check()), and the text attribute model agreeing with them.
 * TSR_ERR_FORMAT naming what is wrong.
 */
TSR_API tsr_status_t tsr_gpt_config_load(tsr_ckpt_reader_t r, tsr_gpt_config_t *cfg);

/**
 * Whether a checkpoint is complete for the model of its own /config (tsr_gpt_config_load()):
 * every tensor of the model as an fp32 dataset /params/<name> of its global shape, and no
 * other /params dataset. The moments are tsr_ckpt_verify_state()'s part. Writes the model
 * into @p cfg (may be NULL). TSR_ERR_FORMAT naming the first dataset missing or amiss.
 */
TSR_API tsr_status_t tsr_gpt_ckpt_verify(tsr_ckpt_reader_t r, tsr_gpt_config_t *cfg);

/**
 * Read the parameters of a checkpoint of any layout whole: its metadata checksum, its model
 * (tsr_gpt_ckpt_verify()), then every /params dataset, each checked against its stored
 * checksum and for finite values. @p params gets a malloc'ed array of tsr_gpt_param_count()
 * floats, the tensors of tsr_gpt_tensor_info() one after the other, each row-major (free()
 * it); @p cfg the model. Collective over the reader's communicator (every rank reads all).
 */
TSR_API tsr_status_t tsr_gpt_ckpt_read_params(tsr_ckpt_reader_t r, tsr_gpt_config_t *cfg, float **params);

/** Formats of GPT-2 weights files outside Tessera (tsr-ckpt import and export). */
typedef enum tsr_gpt_weights_format {
    TSR_GPT_WEIGHTS_LLMC = 0, /**< llm.c's model file (gpt2_124M.bin): fp32 (version 3) or bf16 (5) */
    TSR_GPT_WEIGHTS_HF        /**< Hugging Face GPT-2 safetensors (model.safetensors) */
} tsr_gpt_weights_format_t;

/** "llmc" or "hf" into *out; TSR_ERR_INVALID_ARG naming the choices otherwise. */
TSR_API tsr_status_t tsr_gpt_weights_format_parse(const char *name, tsr_gpt_weights_format_t *out);

/** "llmc", "hf" or "unknown". */
TSR_API const char *tsr_gpt_weights_format_name(tsr_gpt_weights_format_t format);

/** Choices of reading and writing weights files. Start from #TSR_GPT_WEIGHTS_OPTIONS_INIT. */
typedef struct tsr_gpt_weights_options {
    size_t struct_size; /**< sizeof(tsr_gpt_weights_options_t) */
    int heads;          /**< reading hf (the file does not say): attention heads; 0: dim / 64, GPT-2's */
    int padded_vocab;   /**< writing llmc: rows of wte in the file, >= vocab; 0: vocab rounded up to 128 */
    tsr_dtype_t dtype;  /**< writing llmc: TSR_DTYPE_F32 (version 3) or TSR_DTYPE_BF16 (5); hf: F32 only */
} tsr_gpt_weights_options_t;

/** Heads dim / 64, llm.c's padding, fp32. */
#define TSR_GPT_WEIGHTS_OPTIONS_INIT {sizeof(tsr_gpt_weights_options_t), 0, 0, TSR_DTYPE_F32}

/**
 * Read a GPT-2 weights file of @p format (doc/model.md, "Weights exchange"): the model it
 * holds into @p cfg and its parameters into a malloc'ed array as tsr_gpt_ckpt_read_params()
 * gives them (free() it). Weights are transposed and the fused attention weights split into
 * Tessera's Q, K and V; llm.c's padding rows of wte are ignored. Every size is checked
 * against the file's length before anything is allocated. TSR_ERR_FORMAT (TSR_ERR_IO for a
 * file that cannot be read) with one line naming what is wrong: a bad magic number or version,
 * shapes that disagree with each other or with the file's size, a malformed safetensors header,
 * overlapping or out-of-range data, a missing, extra or misshapen tensor, an unknown dtype, a
 * value that is not finite, a model whose logits of one sequence (seq x vocab) are more than
 * 2^26 values and 4 times its parameters (the file would ask for far more memory than it
 * holds). Local.
 */
TSR_API tsr_status_t tsr_gpt_weights_read(tsr_gpt_weights_format_t format, const char *path,
                                          const tsr_gpt_weights_options_t *opts, tsr_gpt_config_t *cfg,
                                          float **params);

/**
 * Write the model @p cfg with @p params (as tsr_gpt_ckpt_read_params() gives them) as a
 * weights file of @p format: llm.c's tensors in its order, bf16 rounded to nearest even, the
 * padding rows of wte zero; safetensors in F32, one canonical key order, no prefix. Written
 * to a temporary file beside @p path, renamed over it only when complete. Local.
 */
TSR_API tsr_status_t tsr_gpt_weights_write(tsr_gpt_weights_format_t format, const char *path,
                                           const tsr_gpt_weights_options_t *opts, const tsr_gpt_config_t *cfg,
                                           const float *params);

/** What a block's backward recomputes instead of keeping it from the forward. */
typedef enum tsr_gpt_recompute {
    TSR_GPT_RECOMPUTE_NONE = 0,  /**< keep every activation the backward reads */
    TSR_GPT_RECOMPUTE_ATTENTION, /**< replay the attention sublayer (ln_1, Q, K, V, attention output) */
    TSR_GPT_RECOMPUTE_BLOCK      /**< keep each block's input only; replay the whole block */
} tsr_gpt_recompute_t;

/** "none", "attention" or "block" into *out; TSR_ERR_INVALID_ARG naming the choices otherwise. */
TSR_API tsr_status_t tsr_gpt_recompute_parse(const char *name, tsr_gpt_recompute_t *out);

/** "none", "attention", "block" or "unknown". */
TSR_API const char *tsr_gpt_recompute_name(tsr_gpt_recompute_t recompute);

/** Training-time options. Start from #TSR_GPT_OPTIONS_INIT. */
typedef struct tsr_gpt_options {
    size_t struct_size;        /**< sizeof(tsr_gpt_options_t) */
    uint64_t seed;             /**< seed of the initial weights */
    int batch;                 /**< global batch in sequences (a multiple of dp × micro_batches) */
    int micro_batches;         /**< micro-batches per step on each dp rank */
    tsr_pipe_kind_t schedule;  /**< pipeline schedule */
    int chunks;                /**< model chunks per stage (#TSR_PIPE_INTERLEAVED; 1 otherwise) */
    int poll_us;               /**< see ::tsr_pipe_exec_config_t (helps oversubscribed nodes) */
    tsr_gpt_recompute_t recompute; /**< activation recomputation (default: NONE) */
} tsr_gpt_options_t;

/** Seed 1234, batch 8, 1 micro-batch, 1F1B, 1 chunk, pipeline waits inside MPI, no recomputation. */
#define TSR_GPT_OPTIONS_INIT {sizeof(tsr_gpt_options_t), 1234u, 8, 1, TSR_PIPE_1F1B, 1, 0, TSR_GPT_RECOMPUTE_NONE}

/** An opaque model instance (this rank's part). */
typedef struct tsr_gpt *tsr_gpt_t;

/**
 * Build this rank's part of the model on @p grid, create its ZeRO optimizer from @p zcfg
 * (its micro_batches is set by the model), register and initialize the parameters. bf16
 * (zcfg->precision) needs a GPU; fp16 is not offered.
 * On a CUDA @p dev the grid's communicators are put on it with tsr_grid_set_device(grid,
 * dev, TSR_COMM_BACKEND_NCCL) unless all of them already are (call tsr_grid_set_device()
 * first to choose MPI). Collective over the grid.
 * @return TSR_ERR_INVALID_ARG when the layout does not fit the model (heads not divisible by
 * the tp columns, fewer blocks than virtual stages, a batch that does not divide, ...),
 * with a message naming the numbers.
 */
TSR_API tsr_status_t tsr_gpt_create(tsr_grid_t grid, tsr_device_t dev, const tsr_gpt_config_t *cfg,
                                    const tsr_gpt_options_t *opts, const tsr_zero_config_t *zcfg, tsr_gpt_t *out);

/** Free the model and its optimizer; sets *gpt to NULL and accepts NULL. */
TSR_API void tsr_gpt_destroy(tsr_gpt_t *gpt);

/**
 * Overwrite the model's parameters with @p params: the whole model on every rank, the
 * tensors of tsr_gpt_tensor_info() one after the other, each row-major (as
 * tsr_gpt_ckpt_read_params() and tsr_gpt_weights_read() give them). Each rank copies its
 * blocks and tsr_zero_sync_params() refreshes the working parameters. Collective over the grid.
 */
TSR_API tsr_status_t tsr_gpt_set_params(tsr_gpt_t gpt, const float *params);

/**
 * Write a GPT's checkpoint into @p w, the one way tsr-train and tsr-ckpt import save a
 * model: tsr_ckpt_save_zero() of @p opt (created with @p zcfg) on @p grid, which is the
 * model's optimizer on its grid (tsr_gpt_optimizer()) or, with parameter servers, a
 * server's optimizer over its shard on the servers' grid; tsr_gpt_config_save() of @p cfg;
 * /layout batch and micro_batches and the root attribute seed from @p opts; the root
 * attribute tokens_seen and /data/tokens (the loader's position, @p tokens_seen). The caller
 * adds what else it records and commits. Collective over @p grid.
 */
TSR_API tsr_status_t tsr_gpt_ckpt_save(tsr_ckpt_writer_t w, tsr_grid_t grid, tsr_zero_t opt,
                                       const tsr_zero_config_t *zcfg, const tsr_gpt_config_t *cfg,
                                       const tsr_gpt_options_t *opts, int64_t tokens_seen);

/**
 * The model of the checkpoint file @p path, read on this rank alone (its metadata checksum
 * checked first), for creating the model that tsr_gpt_ckpt_load() then fills. Local.
 */
TSR_API tsr_status_t tsr_gpt_ckpt_config(const char *path, tsr_gpt_config_t *cfg);

/**
 * Load the parameters and optimizer state of the checkpoint file @p path into @p gpt, whose
 * optimizer was created with @p zcfg (tsr_ckpt_load_zero() on the model's grid: any layout
 * reads any layout's file). For inference and benchmarks; tsr-train's resume also checks the
 * loader position and the hyperparameters. Collective over the model's grid.
 */
TSR_API tsr_status_t tsr_gpt_ckpt_load(tsr_gpt_t gpt, const tsr_zero_config_t *zcfg, const char *path);

/** The optimizer holding the parameters (for checkpoints). Owned by the model. */
TSR_API tsr_zero_t tsr_gpt_optimizer(tsr_gpt_t gpt);

/**
 * The sequences of the global batch this rank's data-parallel replica trains on:
 * [*first, *first + *count). Every rank of a replica (all its stages and tp ranks) passes
 * the same tokens to tsr_gpt_train_step().
 */
TSR_API void tsr_gpt_batch_slice(tsr_gpt_t gpt, int *first, int *count);

/**
 * The blocks of virtual stage @p k (0 to pp x chunks - 1): [*first, *end), on pipeline stage
 * *stage (k mod pp). The partition is the same on every rank. Returns 0, or -1 (and sets
 * nothing) for a @p k past the last virtual stage.
 */
TSR_API int tsr_gpt_stage_blocks(tsr_gpt_t gpt, int k, int *stage, int *first, int *end);

/** Record the pipeline's executed actions into @p trace (NULL: stop recording). */
TSR_API void tsr_gpt_set_trace(tsr_gpt_t gpt, tsr_pipe_trace_t trace);

/** What one training step did. */
typedef struct tsr_gpt_step_info {
    double loss;      /**< mean cross-entropy over the global batch (the same on every rank) */
    double grad_norm; /**< global gradient norm before clipping */
    float lr;         /**< learning rate used */
    long step;        /**< optimizer steps taken so far */
} tsr_gpt_step_info_t;

/**
 * One training step on this replica's sequences (tsr_gpt_batch_slice()): @p inputs and
 * @p targets hold count × seq token ids each. Runs the pipeline schedule over the
 * micro-batches, sums the tied gradient, hands the gradients to the optimizer and steps.
 * Collective over the grid. @p info may be NULL.
 */
TSR_API tsr_status_t tsr_gpt_train_step(tsr_gpt_t gpt, const int32_t *inputs, const int32_t *targets,
                                        tsr_gpt_step_info_t *info);

/**
 * The mean cross-entropy of a batch, forward only (validation): @p inputs and @p targets as
 * for tsr_gpt_train_step() (this replica's sequences of the options' batch), the parameters
 * untouched. Runs the pipeline's stages in turn, micro-batch by micro-batch, on the model's
 * device and layout, with the same kernels as training (it equals the loss that
 * tsr_gpt_train_step() reports for the same batch before it steps, up to rounding). @p loss
 * is the same on every rank: tsr_gpt_eval_sequences()'s sums added in sequence order.
 * Collective over the grid.
 */
TSR_API tsr_status_t tsr_gpt_eval(tsr_gpt_t gpt, const int32_t *inputs, const int32_t *targets, double *loss);

/**
 * The summed cross-entropy of each sequence of the global batch, forward only, as for
 * tsr_gpt_eval(): @p seq_loss[i] (the options' batch of them, on every rank) is the sum, in
 * double and in token order, of sequence i's token losses. Each sum is formed on one rank and
 * exchanged exactly, so a caller that adds them in sequence order gets a value whose only
 * dependence on the layout is in the token losses themselves (tsr_gpt_eval() does so).
 * Collective over the grid.
 */
TSR_API tsr_status_t tsr_gpt_eval_sequences(tsr_gpt_t gpt, const int32_t *inputs, const int32_t *targets,
                                            double *seq_loss);

/**
 * An inference context (generation): for @p batch sequences in all, split over the dp
 * replicas as a training batch is (tsr_gpt_infer_slice()), a key and a value cache per block
 * of this rank, each (sequences × seq) × dim and sharded like the attention (2D: sequences
 * over tp rows and heads over tp columns; 1D: heads over the tp columns), and the buffers of
 * one forward of up to seq tokens a sequence.
 */
typedef struct tsr_gpt_infer *tsr_gpt_infer_t;

/**
 * Make an inference context on @p gpt (which must outlive it) for @p batch sequences, a
 * multiple of dp. Collective over the grid. @return TSR_ERR_INVALID_ARG naming the numbers.
 */
TSR_API tsr_status_t tsr_gpt_infer_create(tsr_gpt_t gpt, int batch, tsr_gpt_infer_t *out);

/** Free a context; sets *ctx to NULL and accepts NULL. */
TSR_API void tsr_gpt_infer_destroy(tsr_gpt_infer_t *ctx);

/** This replica's sequences of the batch: [*first, *first + *count). */
TSR_API void tsr_gpt_infer_slice(tsr_gpt_infer_t ctx, int *first, int *count);

/** Tokens each sequence holds in the cache (the position of the next one). */
TSR_API int tsr_gpt_infer_position(tsr_gpt_infer_t ctx);

/** Empty the caches (position 0), for new prompts. */
TSR_API void tsr_gpt_infer_reset(tsr_gpt_infer_t ctx);

/**
 * Feed @p n tokens to each of this replica's sequences (@p tokens: count × n ids, sequence
 * by sequence, the same on every rank of the replica) at positions pos .. pos + n - 1,
 * pos = tsr_gpt_infer_position(); their keys and values join the caches and the position
 * advances by n. @p logits (host memory; NULL: none wanted) receives, on every rank of the
 * replica, the fp32 logits that follow: count × vocab (the last token of each sequence), or
 * count × n × vocab with @p all_positions. At position 0 (a prompt) the attention is the
 * training's flash kernel and the bf16 compute copies are refreshed from the parameters;
 * later steps attend to the cache. Collective over the grid (every replica steps at once).
 * @return TSR_ERR_INVALID_ARG for n < 1, pos + n past the model's seq ("the prompt of 80
 * tokens is longer than the context of 64"), or a token id outside the vocabulary.
 */
TSR_API tsr_status_t tsr_gpt_infer_step(tsr_gpt_infer_t ctx, int n, const int32_t *tokens, int all_positions,
                                        float *logits);

/** How tsr_gpt_sample() picks a token. Start from #TSR_GPT_SAMPLER_INIT. */
typedef struct tsr_gpt_sampler {
    size_t struct_size; /**< sizeof(tsr_gpt_sampler_t) */
    float temperature;  /**< 0: greedy (the lowest id of the largest logits); else logits / temperature */
    int top_k;          /**< keep the k most likely tokens (0: all) */
    float top_p;        /**< then the fewest most likely whose probabilities reach top_p, in (0, 1] */
    uint64_t seed;      /**< seed of the draws */
} tsr_gpt_sampler_t;

/** Temperature 1, no top-k, top-p 1, seed 1234. */
#define TSR_GPT_SAMPLER_INIT {sizeof(tsr_gpt_sampler_t), 1.0f, 0, 1.0f, 1234u}

/** A temperature finite and >= 0, top_k >= 0, top_p in (0, 1]; TSR_ERR_INVALID_ARG naming the value. */
TSR_API tsr_status_t tsr_gpt_sampler_check(const tsr_gpt_sampler_t *s);

/**
 * The token to follow @p logits (@p vocab fp32 values) of sequence @p seq at position @p pos:
 * greedy at temperature 0; otherwise the softmax of logits / temperature restricted by top_k
 * and top_p, drawn with the uniform number (seed, seq, pos) of tessera/rng.h, so that a draw
 * depends on nothing else (not on the layout or the run). Ties go to the lower id.
 */
TSR_API tsr_status_t tsr_gpt_sample(const tsr_gpt_sampler_t *s, const float *logits, int vocab, uint64_t seq,
                                    uint64_t pos, int32_t *token);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_MODEL_H */
