# apps/local.mk: the command-line drivers (tsr-train, tsr-ckpt, tsr-bench, tsr-tokenize).
# They arrive with the issues that build them; installed programs must not use -no-install,
# so each sets its own _LDFLAGS.
