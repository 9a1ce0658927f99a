"""Brain-tumour MRI toolkit: one package per pipeline phase, imported in phase order.

common -> acquire -> preprocess -> regions -> synth -> classify -> segment -> deploy:
a package imports only those to its left. Importing `lib` orders the deep-learning
frameworks once for the whole process (lib.common.frameworks).
"""

from lib.common import frameworks as _frameworks

_frameworks.install()
