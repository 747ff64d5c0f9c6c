"""Test doubles on 127.0.0.1: fake LLM servers and a fake Hub (real HTTP, scripted answers,
faults), and realistic fake data the tests write."""
