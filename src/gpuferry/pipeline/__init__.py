"""Decode -> engine -> encode streaming, output publishing, and one-file upscaling."""
