"""Tests of chunked, verified, resumable transfers on every backend."""
