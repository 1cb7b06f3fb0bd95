"""`python -m keras_matta`: the `keras-matta` command."""

import sys

from keras_matta.cli import main

sys.exit(main())
