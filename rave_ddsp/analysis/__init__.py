"""Looking at trained models: perceptual metrics (loudness, F0, spectral distances), the
evaluation report, latent-space exploration and its figures.

The top layer: may import from every other subpackage; nothing imports from it.
"""
