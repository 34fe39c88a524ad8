"""The live demo: a simulated pump fleet streamed through the real service."""
