"""Turn the garbage collector off in a process measured by bench/hot_path.py.

Python imports ``sitecustomize`` at start-up from ``sys.path``: hot_path.py puts this
folder first on ``PYTHONPATH``. A full collection costs about 20 million instructions
in a process with Django loaded; whether one lands among a row's N operations depends
on how many objects the process made before them, which any change to the code moves,
so it moved one row of one hash seed by 1,000 instructions per operation.
"""

import gc

gc.disable()
