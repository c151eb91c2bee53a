//! `pprof_go_memstats_*` families from a parsed MemStats block.
