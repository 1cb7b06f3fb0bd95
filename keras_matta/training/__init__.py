"""Training: the MatTA model, its compiled objective and Student-width sampling."""

from keras_matta.training.matta import MatTA
from keras_matta.training.sampled_widths import WidthDraws
from keras_matta.training.shared_weights import shared_variables
from keras_matta.training.strategies import WidthSampler
