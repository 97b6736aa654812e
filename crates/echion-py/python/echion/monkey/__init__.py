"""Hooks on the standard library that tell the sampler what only Python
knows: thread names, their native ids, renames and exits."""
