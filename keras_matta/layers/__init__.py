from keras_matta.layers.mat_dense import MatDense
from keras_matta.layers.mat_layer import MatLayer
