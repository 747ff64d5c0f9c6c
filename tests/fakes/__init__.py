"""Test doubles: local fake servers and realistic fake data the tests start and write."""
