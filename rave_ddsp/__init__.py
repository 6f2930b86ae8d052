"""rave_ddsp: a RAVE-style multiband VAE with a DDSP filtered-noise synthesizer.

Shape glossary (used in every docstring and shape comment):

=====  ===============================================
``B``  batch (in nn~: the number of mc.nn~ voices)
``C``  audio channels
``T``  audio samples
``M``  PQMF bands
``L``  latent (or noise) frames
``Z``  latent size
``K``  noise filter bands (frequencies from 0 to Nyquist)
``F``  STFT bins
``H``  hidden channels
=====  ===============================================
"""

__version__ = "0.1.0"

from rave_ddsp import _moved

_moved.install()  # runs and configs saved before the split into subpackages keep loading
