"""Fake LLM servers on 127.0.0.1 for tests and benchmarks: real HTTP, scripted answers, faults."""
