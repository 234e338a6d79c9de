# doc/local.mk: man pages and the example drivers.
dist_man_MANS += doc/tessera.3 doc/tsr-ckpt.1 doc/tsr-bench.1 doc/tsr-tokenize.1 doc/tsr-generate.1

# The grid/comm demo: the README's first command runs it; installcheck builds it again
# against the installed library with pkg-config, as a user's program would be, and runs the
# installed demo.sh away from the build tree, with the installed tools on PATH and configure's
# launcher from the installed tessera.pc (unless MPIEXEC is set).
noinst_PROGRAMS += doc/examples/grid_demo

# The documents tessera(3) names go to $(docdir) (each module's local.mk distributes its own),
# with the examples; demo.sh runs installed as well as from a build tree.
doc_DATA = doc/model.md doc/tp.md doc/pipeline.md doc/zero.md doc/ps.md doc/checkpoint.md doc/performance.md \
	doc/pipe-gpipe.svg doc/pipe-1f1b.svg doc/pipe-interleaved.svg doc/pipe-zb-h1.svg
docexamplesdir = $(docdir)/examples
dist_docexamples_DATA = doc/examples/grid_demo.c
dist_docexamples_SCRIPTS = doc/examples/demo.sh

installcheck-local:
	$(MKDIR_P) installcheck-tmp
	PKG_CONFIG_PATH='$(DESTDIR)$(libdir)/pkgconfig' ; export PKG_CONFIG_PATH ; \
	  $(CC) -o installcheck-tmp/grid_demo $(top_srcdir)/doc/examples/grid_demo.c \
	    `$(PKG_CONFIG) --define-variable=prefix='$(DESTDIR)$(prefix)' --cflags --libs tessera` \
	    -Wl,-rpath,'$(DESTDIR)$(libdir)'
	if test -n "$${MPIEXEC}"; then launch="$$MPIEXEC $${MPIEXEC_FLAGS-}"; \
	  else launch='$(TSR_MPIEXEC) $(TSR_MPIEXEC_FLAGS)'; fi; \
	  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 \
	  $$launch -n 4 installcheck-tmp/grid_demo
	cd installcheck-tmp && PATH='$(DESTDIR)$(bindir)':$$PATH \
	  LD_LIBRARY_PATH='$(DESTDIR)$(libdir)'$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH} \
	  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 \
	  OMP_WAIT_POLICY=$${OMP_WAIT_POLICY-passive} \
	  $(SHELL) '$(DESTDIR)$(docexamplesdir)/demo.sh' demo >demo.out
	grep '^demo: loss .* at step 120' installcheck-tmp/demo.out
	test -s installcheck-tmp/demo/ckpt/latest
	rm -rf installcheck-tmp
EXTRA_DIST += doc/performance.md
