"""The small Django project the benchmarks run in (both venvs: instant_signals and the peer)."""
