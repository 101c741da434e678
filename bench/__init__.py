"""edgeprune benchmarks: `make bench` (all) or `make bench BENCH=profile` (a named subset)."""
